"""First-layer filters as images, and how colourful they are, per AlexNet tower.

Krizhevsky et al. (2012, Fig. 3) and the seed notes observe that the two towers of AlexNet
specialize: the 48 first-layer kernels of one GPU are largely colour-agnostic, those of the
other largely colour-specific. `colourfulness` turns the claim into a number.

**Colourfulness of a filter** `w: [KH, KW, 3]`: the fraction of its norm that is not grey,

  `colourfulness(w) = || w - grey(w) || / || w ||`,  `grey(w)[p, c] = mean_c' w[p, c']`,

i.e. the root mean square over pixels of the standard deviation across the colour channels,
relative to the root mean square of the filter. It lies in [0, 1]: 0 for a filter with the same
weights in every channel (it sees luminance only), 1 for a filter whose channels sum to zero at
every pixel (a pure colour-opponent filter); it does not change when the filter is scaled. The
colourfulness of a tower is the mean over its filters.

Reference point: a filter of i.i.d. weights keeps (C - 1) / C of its energy off the grey axis, so
untrained filters score about `sqrt(2/3) = 0.82`. A tower that learned colour-agnostic features
scores well below that, a colour tower near or above it.
"""

from __future__ import annotations

import numpy as np

from cnn_jax.viz import grids


def filter_tiles(kernel) -> np.ndarray:
  """Each filter of a first layer as an image on [0, 1] (min-max per filter).

  Args:
    kernel: `[KH, KW, C_in, C_out]` with C_in = 1 (grey) or 3 (RGB).

  Returns:
    `[C_out, KH, KW, C_in]` float32.
  """
  kernel = np.asarray(kernel, np.float32)
  if kernel.ndim != 4 or kernel.shape[2] not in (1, 3):
    raise ValueError(f"kernel must be [KH, KW, C_in, C_out] with C_in 1 or 3 (a first layer), "
                     f"got shape {kernel.shape}")
  return np.stack([grids.rescale_to_unit(kernel[..., out]) for out in range(kernel.shape[-1])])


def filter_grid(kernel, columns: int = 16, gap: int = 1, scale: int = 4) -> np.ndarray:
  """A first layer's filters on a grid, each enlarged `scale` times (see `filter_tiles`).

  Returns:
    `[R KH s + (R - 1) gap, M KW s + (M - 1) gap, C_in]` with `M = min(columns, C_out)`
    columns, `R = ceil(C_out / M)` rows and `s = scale`.
  """
  tiles = np.stack([grids.upscale(tile, scale) for tile in filter_tiles(kernel)])
  return grids.image_grid(tiles, min(columns, len(tiles)), gap)


def _split_towers(kernel: np.ndarray, towers: int) -> list[np.ndarray]:
  if not isinstance(towers, int) or towers < 1 or kernel.shape[-1] % towers:
    raise ValueError(f"towers must be an int >= 1 dividing the {kernel.shape[-1]} filters, got "
                     f"{towers!r}")
  return np.split(kernel, towers, axis=-1)


def colourfulness(kernel) -> np.ndarray:
  """Per filter, `||w - grey(w)|| / ||w||` (see module docstring).

  Args:
    kernel: `[KH, KW, 3, C_out]`.

  Returns:
    `[C_out]` float32 in [0, 1]; 0 for an all-zero filter.
  """
  kernel = np.asarray(kernel, np.float32)
  if kernel.ndim != 4 or kernel.shape[2] != 3:
    raise ValueError(f"kernel must be [KH, KW, 3, C_out] (a first layer on colour images), got "
                     f"shape {kernel.shape}")
  grey = kernel.mean(axis=2, keepdims=True)
  colour_norm = np.sqrt(((kernel - grey) ** 2).sum(axis=(0, 1, 2)))
  norm = np.sqrt((kernel ** 2).sum(axis=(0, 1, 2)))
  return np.where(norm > 0, colour_norm / np.where(norm > 0, norm, 1.0), 0.0).astype(np.float32)


def tower_colourfulness(kernel, towers: int = 2) -> np.ndarray:
  """Mean colourfulness of each tower's filters: `[towers]`.

  Tower t owns output channels `[t C_out / towers, (t + 1) C_out / towers)`, the order of the
  grouped form of `cnn_jax.models.AlexNet` (tower 0 first).

  Args:
    kernel: `[KH, KW, 3, C_out]`, C_out divisible by `towers`.
    towers: number of towers.
  """
  kernel = np.asarray(kernel, np.float32)
  return np.array([colourfulness(part).mean() for part in _split_towers(kernel, towers)],
                  np.float32)


def tower_filter_grid(kernel, towers: int = 2, columns: int = 16, gap: int = 1,
                      tower_gap: int = 6, scale: int = 4) -> np.ndarray:
  """The filter grid of each tower (`filter_grid`), one above the other, `tower_gap` apart."""
  kernel = np.asarray(kernel, np.float32)
  return grids.stack_vertically(
      [filter_grid(part, columns, gap, scale) for part in _split_towers(kernel, towers)],
      tower_gap)
