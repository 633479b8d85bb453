import math

import jax
import numpy as np
import pytest

from cnn_jax.analysis.equivariance_error import layer_equivariance_errors

SHIFTS = [(1, 0), (0, 2), (2, 2), (-3, 1)]


def test_stride1_circular_stack_is_equivariant_to_machine_precision(images, conv_net):
  features_fn, _ = conv_net(jax.random.PRNGKey(0))
  errors = layer_equivariance_errors(features_fn, images, SHIFTS)
  assert [layer.name for layer in errors] == ["conv0", "conv1", "pooled", "logits"]
  for layer in errors:
    assert layer.on_grid_error < 1e-5, layer
    assert math.isnan(layer.off_grid_error)
  assert [layer.stride for layer in errors] == [1, 1, None, None]


def test_striding_keeps_equivariance_only_on_the_subsampled_grid(images, conv_net):
  features_fn, _ = conv_net(jax.random.PRNGKey(0), stride=2)
  conv0, conv1, pooled, _ = layer_equivariance_errors(features_fn, images, SHIFTS)
  assert (conv0.stride, conv1.stride) == (2, 4)
  assert conv0.on_grid_error < 1e-5  # (0, 2) and (2, 2) are on conv0's grid
  assert conv0.off_grid_error > 0.1
  assert math.isnan(conv1.on_grid_error)  # no shift is a multiple of 4
  assert conv1.off_grid_error > 0.1
  assert pooled.on_grid_error > 1e-3  # global pooling no longer makes it invariant


def test_zero_padding_breaks_equivariance_even_on_the_grid(images, conv_net):
  features_fn, _ = conv_net(jax.random.PRNGKey(0), padding="same")
  errors = layer_equivariance_errors(features_fn, images, SHIFTS)
  assert all(layer.on_grid_error > 1e-2 for layer in errors), errors


def test_grid_shift_of_a_strided_layer_is_the_scaled_shift(conv_net):
  # A one-hot image on an 8x8 torus: conv with stride 2 moves its response by shift / 2.
  images = np.zeros((1, 8, 8, 1), np.float32)
  images[0, 2, 4, 0] = 1.0
  features_fn, _ = conv_net(jax.random.PRNGKey(3), stride=2, channels=(3,), activation=lambda x: x,
                            image_shape=(8, 8, 1))
  (conv0, _, _) = layer_equivariance_errors(features_fn, images, [(2, -4), (4, 6)])
  assert conv0.on_grid_error == pytest.approx(0.0, abs=1e-6)


def subsampled_and_summed(images):
  """A stride-2 layer (every other pixel of each axis) and a global sum: known errors by hand."""
  return [("subsampled", images[:, ::2, ::2, :]), ("summed", images.sum(axis=(1, 2)))]


def test_off_grid_error_is_that_of_the_best_neighbouring_grid_shift():
  # Columns 0 and 2 hold a = (1, 2, 3, 4) down the rows, the others 0, so the stride-2 layer sees
  # f = [1, 3] (in both of its columns) and ||f|| = sqrt(20). A shift by 1 row down gives
  # [4, 2]: the grid shift 0 ([1, 3]) is off by (3, -1), error sqrt(2 * 10 / 20) = 1; the grid
  # shift 1 ([3, 1]) by (1, 1), error sqrt(2 * 2 / 20) = 1 / sqrt(5). Up by one row gives [2, 4]:
  # 0 is off by (1, 1) (1 / sqrt(5)), -1 ([3, 1]) by (-1, 3) (1). The best is 1 / sqrt(5) both
  # times; a shift by 2 rows is on the grid, exact.
  images = np.zeros((1, 4, 4, 1), np.float32)
  images[0, :, 0, 0] = images[0, :, 2, 0] = [1.0, 2.0, 3.0, 4.0]
  subsampled, summed = layer_equivariance_errors(subsampled_and_summed, images,
                                                 [(1, 0), (-1, 0), (2, 0)])
  assert (subsampled.stride, summed.stride) == (2, None)
  # rtol: float32 norms of a handful of small integers.
  assert subsampled.off_grid_error == pytest.approx(1 / math.sqrt(5), rel=1e-6)
  assert subsampled.on_grid_error == pytest.approx(0.0, abs=1e-7)
  assert summed.on_grid_error == pytest.approx(0.0, abs=1e-7)  # a circular shift keeps the sum
  assert math.isnan(summed.off_grid_error)


def test_empty_shifts_are_rejected(images, conv_net):
  features_fn, _ = conv_net(jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="shifts must be a non-empty sequence"):
    layer_equivariance_errors(features_fn, images, [])
