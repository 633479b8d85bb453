"""Pixel montages: images on a common [0, 1] scale tiled into one array, written as PNG.

Every figure of `cnn_jax.viz` is an exact pixel array (no plotting layout), so its size is known
in advance: a grid of `rows x columns` tiles of `h x w` pixels separated by `gap` pixels is
`rows h + (rows - 1) gap` by `columns w + (columns - 1) gap`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib.image
import numpy as np


def rescale_to_unit(image) -> np.ndarray:
  """Min-max rescaling of one image to [0, 1]: `(x - min x) / (max x - min x)` (0 if constant)."""
  image = np.asarray(image, np.float32)
  low, high = float(image.min()), float(image.max())
  return (image - low) / (high - low) if high > low else np.zeros_like(image)


def signed_to_unit(signal) -> np.ndarray:
  """A signed signal (a projection) on [0, 1] with 0 at mid-grey: `0.5 + x / (2 max |x|)`."""
  signal = np.asarray(signal, np.float32)
  peak = float(np.abs(signal).max())
  return 0.5 + signal / (2 * peak) if peak > 0 else np.full_like(signal, 0.5)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
  """Nearest-neighbour enlargement by an integer factor: `[h, w, ...] -> [h f, w f, ...]`."""
  if not isinstance(factor, int) or factor < 1:
    raise ValueError(f"factor must be an int >= 1, got {factor!r}")
  return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def image_grid(tiles, columns: int, gap: int = 1, fill: float = 1.0) -> np.ndarray:
  """Tiles in row-major order on a grid: `[T, h, w, C]` -> `[R h + (R-1) gap, W', C]`.

  Args:
    tiles: `[T, h, w, C]` with values in [0, 1] (C = 1 or 3), or a sequence of such tiles.
    columns: tiles per row; `R = ceil(T / columns)` rows, the last one padded with `fill`.
    gap: pixels between tiles.
    fill: value of the gaps and of missing tiles.

  Returns:
    `[R h + (R - 1) gap, columns w + (columns - 1) gap, C]` float32.
  """
  tiles = np.asarray(tiles, np.float32)
  if tiles.ndim != 4 or tiles.shape[0] == 0:
    raise ValueError(f"tiles must be [T, h, w, C] with T >= 1, got shape {tiles.shape}")
  if not isinstance(columns, int) or columns < 1:
    raise ValueError(f"columns must be an int >= 1, got {columns!r}")
  if not isinstance(gap, int) or gap < 0:
    raise ValueError(f"gap must be an int >= 0, got {gap!r}")
  count, height, width, channels = tiles.shape
  rows = -(-count // columns)
  grid = np.full((rows * height + (rows - 1) * gap, columns * width + (columns - 1) * gap,
                  channels), fill, np.float32)
  for index, tile in enumerate(tiles):
    row, column = divmod(index, columns)
    top, left = row * (height + gap), column * (width + gap)
    grid[top:top + height, left:left + width] = tile
  return grid


def stack_vertically(blocks: Sequence[np.ndarray], gap: int, fill: float = 1.0) -> np.ndarray:
  """Grids of the same width and channels one above the other, `gap` pixels apart."""
  widths = {block.shape[1:] for block in blocks}
  if len(widths) != 1:
    raise ValueError(f"blocks must share width and channels, got shapes "
                     f"{[block.shape for block in blocks]}")
  spacer = np.full((gap,) + blocks[0].shape[1:], fill, np.float32)
  pieces = [piece for block in blocks for piece in (block, spacer)][:-1]
  return np.concatenate(pieces, axis=0)


def save_png(path: str, image, colormap: str = "gray") -> None:
  """Writes `image: [H, W], [H, W, 1] or [H, W, 3]` with values in [0, 1] as an H x W PNG.

  Single-channel images go through `colormap`, where NaN (e.g. a grid's `fill`) is white;
  values outside [0, 1] are clipped.
  """
  image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
    raise ValueError(f"image must be [H, W], [H, W, 1] or [H, W, 3], got shape {image.shape}")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if image.ndim == 2:
    palette = matplotlib.colormaps[colormap].with_extremes(bad="white")
    matplotlib.image.imsave(path, image, cmap=palette, vmin=0.0, vmax=1.0)
  else:
    matplotlib.image.imsave(path, image)
