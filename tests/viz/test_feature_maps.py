"""Activation maps of one image on a grid."""

import numpy as np
import pytest

from cnn_jax.viz.feature_maps import activation_grid


def test_activation_grid_keeps_the_channels_relative_strength():
  activation = np.zeros((4, 4, 3), np.float32)
  activation[..., 0] = 1.0
  activation[..., 1] = 0.25
  grid = activation_grid(activation, columns=3, gap=1, scale=2)
  assert grid.shape == (8, 3 * 8 + 2, 1)
  np.testing.assert_allclose(grid[:, :8], 1.0)
  np.testing.assert_allclose(grid[:, 9:17], 0.25)
  np.testing.assert_allclose(grid[:, 18:], 0.0)
  assert np.isnan(grid[:, 8]).all() and np.isnan(grid[:, 17]).all()


def test_activation_grid_rejects_a_batch():
  with pytest.raises(ValueError, match="one image's"):
    activation_grid(np.zeros((2, 4, 4, 3)))
