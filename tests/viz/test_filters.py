"""First-layer filter images and the colourfulness of AlexNet's towers."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnn_jax.viz.filters import (colourfulness, filter_grid, filter_tiles, tower_colourfulness,
                                 tower_filter_grid)


def grey_filters(rng, count, size=5):
  """Filters with the same weights in R, G and B: `[size, size, 3, count]`."""
  return np.repeat(rng.normal(size=(size, size, 1, count)), 3, axis=2)


def coloured_filters(rng, count, size=5):
  """Filters whose channels differ: a random colour-opponent part dominates a grey part."""
  opponent = rng.normal(size=(size, size, 3, count))
  opponent -= opponent.mean(axis=2, keepdims=True)
  return 3 * opponent + grey_filters(rng, count, size)


def test_grey_filters_have_colourfulness_zero_and_opponent_filters_one():
  rng = np.random.default_rng(0)
  np.testing.assert_allclose(colourfulness(grey_filters(rng, 6)), 0, atol=1e-6)
  opponent = rng.normal(size=(5, 5, 3, 6))
  opponent -= opponent.mean(axis=2, keepdims=True)
  np.testing.assert_allclose(colourfulness(opponent), 1, atol=1e-6)


@given(seed=st.integers(0, 2**16), factor=st.floats(1e-3, 1e3))
def test_colourfulness_lies_in_unit_interval_and_ignores_scale(seed, factor):
  kernel = np.random.default_rng(seed).normal(size=(3, 3, 3, 4))
  score = colourfulness(kernel)
  assert np.all((score >= 0) & (score <= 1))
  np.testing.assert_allclose(colourfulness(factor * kernel), score, rtol=1e-4)


def test_colourfulness_is_the_rms_colour_deviation_over_the_rms_weight():
  kernel = np.zeros((1, 2, 3, 1))
  kernel[0, 0, :, 0] = (1.0, 2.0, 3.0)  # mean 2, deviations (-1, 0, 1)
  kernel[0, 1, :, 0] = (1.0, 1.0, 1.0)
  expected = np.sqrt(2.0 / (1 + 4 + 9 + 3))
  np.testing.assert_allclose(colourfulness(kernel), [expected], rtol=1e-6)


def test_untrained_gaussian_filters_score_about_the_square_root_of_two_thirds():
  kernel = np.random.default_rng(4).normal(size=(11, 11, 3, 400))
  assert colourfulness(kernel).mean() == pytest.approx(np.sqrt(2 / 3), abs=0.01)


def test_tower_colourfulness_separates_a_grey_tower_from_a_coloured_one():
  # The seed notes' claim on synthetic AlexNet conv1 filters (11x11x3, 48 per tower): tower 0
  # grey, tower 1 coloured.
  rng = np.random.default_rng(1)
  kernel = np.concatenate([grey_filters(rng, 48, 11), coloured_filters(rng, 48, 11)], axis=-1)
  grey_tower, coloured_tower = tower_colourfulness(kernel, towers=2)
  assert grey_tower < 1e-6
  assert coloured_tower > 0.9
  swapped = np.concatenate([kernel[..., 48:], kernel[..., :48]], axis=-1)
  np.testing.assert_allclose(tower_colourfulness(swapped), [coloured_tower, grey_tower])


def test_filter_tiles_are_each_filter_rescaled_to_the_unit_interval():
  rng = np.random.default_rng(2)
  kernel = rng.normal(size=(4, 3, 3, 5))
  tiles = filter_tiles(kernel)
  assert tiles.shape == (5, 4, 3, 3)
  np.testing.assert_allclose(tiles.min(axis=(1, 2, 3)), 0, atol=1e-6)
  np.testing.assert_allclose(tiles.max(axis=(1, 2, 3)), 1, atol=1e-6)
  # Colour is kept: the channel order of a tile follows the kernel's input channels.
  np.testing.assert_array_equal(np.argsort(tiles[1].ravel()), np.argsort(kernel[..., 1].ravel()))


def test_filter_grid_and_tower_grid_have_the_documented_sizes():
  kernel = np.random.default_rng(3).normal(size=(11, 11, 3, 96))
  grid = filter_grid(kernel, columns=16, gap=1, scale=2)
  assert grid.shape == (6 * 22 + 5, 16 * 22 + 15, 3)
  towers = tower_filter_grid(kernel, towers=2, columns=16, gap=1, tower_gap=6, scale=2)
  assert towers.shape == (2 * (3 * 22 + 2) + 6, 16 * 22 + 15, 3)


@pytest.mark.parametrize("call, message", [
    (lambda: colourfulness(np.zeros((3, 3, 1, 4))), "kernel must be"),
    (lambda: filter_tiles(np.zeros((3, 3, 4, 4))), "C_in 1 or 3"),
    (lambda: tower_colourfulness(np.ones((3, 3, 3, 5)), towers=2), "towers must be"),
])
def test_bad_kernels_and_tower_counts_are_rejected(call, message):
  with pytest.raises(ValueError, match=message):
    call()
