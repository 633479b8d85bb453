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


def test_empty_shifts_are_rejected(images, conv_net):
  features_fn, _ = conv_net(jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="shifts must be a non-empty sequence"):
    layer_equivariance_errors(features_fn, images, [])
