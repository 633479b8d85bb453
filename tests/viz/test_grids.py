"""Pixel montages and PNG files."""

import matplotlib.image
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnn_jax.viz.grids import (image_grid, rescale_to_unit, save_png, signed_to_unit,
                               stack_vertically, upscale)


@given(count=st.integers(1, 10), columns=st.integers(1, 5), gap=st.integers(0, 3))
def test_image_grid_places_every_tile_at_its_row_and_column(count, columns, gap):
  height, width = 3, 2
  tiles = (np.arange(count)[:, None, None, None] * np.ones((1, height, width, 1)) / count).astype(
      np.float32)
  grid = image_grid(tiles, columns, gap, fill=-1.0)
  rows = -(-count // columns)
  assert grid.shape == (rows * height + (rows - 1) * gap, columns * width + (columns - 1) * gap, 1)
  for index in range(count):
    row, column = divmod(index, columns)
    top, left = row * (height + gap), column * (width + gap)
    np.testing.assert_array_equal(grid[top:top + height, left:left + width], tiles[index])
  assert (grid == -1.0).sum() == grid.size - count * height * width


@given(st.lists(st.integers(-1000, 1000).map(float), min_size=2, max_size=20))
def test_rescalings_map_onto_the_unit_interval(values):
  values = np.array(values, np.float32)
  unit = rescale_to_unit(values)
  assert unit.min() >= 0 and unit.max() <= 1
  signed = signed_to_unit(values)
  assert signed.min() >= 0 and signed.max() <= 1 + 1e-6
  # Zero stays mid-grey, and the sign is kept.
  np.testing.assert_array_equal(signed > 0.5, values > 0)
  np.testing.assert_array_equal(signed < 0.5, values < 0)


def test_upscale_repeats_each_pixel():
  image = np.arange(6.0).reshape(2, 3, 1)
  big = upscale(image, 2)
  assert big.shape == (4, 6, 1)
  np.testing.assert_array_equal(big[::2, ::2], image)
  np.testing.assert_array_equal(big[1::2, 1::2], image)


def test_stack_vertically_rejects_blocks_of_different_widths():
  with pytest.raises(ValueError, match="share width"):
    stack_vertically([np.zeros((2, 3, 1)), np.zeros((2, 4, 1))], gap=1)


@pytest.mark.parametrize("shape, read_back", [((7, 5), (7, 5, 4)), ((7, 5, 1), (7, 5, 4)),
                                              ((9, 4, 3), (9, 4, 4))])
def test_saved_png_is_valid_with_the_arrays_size(tmp_path, shape, read_back):
  image = np.random.default_rng(0).uniform(size=shape)
  path = tmp_path / "nested" / "image.png"
  save_png(str(path), image)
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  pixels = matplotlib.image.imread(str(path))
  assert pixels.shape == read_back
  if len(shape) == 3 and shape[-1] == 3:
    np.testing.assert_allclose(pixels[..., :3], image, atol=1 / 255 + 1e-6)


def test_nan_is_saved_white_under_a_colormap(tmp_path):
  image = np.array([[0.0, np.nan], [1.0, 0.5]])
  path = str(tmp_path / "map.png")
  save_png(path, image, colormap="viridis")
  pixels = matplotlib.image.imread(path)
  np.testing.assert_array_equal(pixels[0, 1], [1, 1, 1, 1])
  assert not np.allclose(pixels[0, 0, :3], 1)


def test_save_png_rejects_two_channel_images(tmp_path):
  with pytest.raises(ValueError, match="image must be"):
    save_png(str(tmp_path / "x.png"), np.zeros((4, 4, 2)))
