"""Self-similarity of an image: how close each patch's nearest non-overlapping neighbour is.

The seed notes' prior "data tends to be self-similar across the domain": a patch of a natural
image usually has a near copy elsewhere in the same image, which is why one shared filter (a
convolution) serves everywhere. For patches `p_i` (size P x P, on a grid of stride S) and the set
`J(i)` of patches that do not overlap `p_i`:

  nearest_i = min_{j in J(i)} ||p_i - p_j||,     typical = mean_{i, j in J(i)} ||p_i - p_j||,
  self_similarity_ratio = mean_i nearest_i / typical.

The ratio is scale-free (multiplying the image by a constant does not change it), near 0 when
every patch repeats (a periodic texture) and near 1 when no patch is closer to one than to any
other (i.i.d. noise).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def image_patches(image: np.ndarray, patch_size: int, stride: int) -> tuple[jnp.ndarray,
                                                                            jnp.ndarray]:
  """The patches of a grey image on a grid: `image: [H, W]` -> `([P, patch_size^2], [P, 2])`.

  The second array holds each patch's top-left corner `(row, column)`.
  """
  image = jnp.asarray(image, jnp.float32)
  if image.ndim != 2:
    raise ValueError(f"image must be a grey image [H, W], got shape {image.shape}")
  if not isinstance(patch_size, int) or not 1 <= patch_size <= min(image.shape):
    raise ValueError(f"patch_size must be an int in [1, {min(image.shape)}] for an image of shape "
                     f"{image.shape}, got {patch_size!r}")
  if not isinstance(stride, int) or stride < 1:
    raise ValueError(f"stride must be an int >= 1, got {stride!r}")
  rows = np.arange(0, image.shape[0] - patch_size + 1, stride)
  columns = np.arange(0, image.shape[1] - patch_size + 1, stride)
  corners = np.stack(np.meshgrid(rows, columns, indexing="ij"), -1).reshape(-1, 2)
  offsets = np.arange(patch_size)
  patch_rows = corners[:, 0, None, None] + offsets[None, :, None]
  patch_columns = corners[:, 1, None, None] + offsets[None, None, :]
  return image[patch_rows, patch_columns].reshape(len(corners), -1), jnp.asarray(corners)


def self_similarity_ratio(image: np.ndarray, patch_size: int = 8, stride: int = 4) -> float:
  """`mean_i min_{j non-overlapping} ||p_i - p_j|| / mean_{i, j non-overlapping} ||p_i - p_j||`.

  Args:
    image: grey `[H, W]`.
    patch_size: P, the side of the square patches.
    stride: S, the spacing of the patch grid.

  Returns:
    The ratio in [0, 1]; NaN for a constant image.
  """
  patches, corners = image_patches(image, patch_size, stride)
  squared = jnp.sum(patches ** 2, -1)
  distances = jnp.sqrt(jnp.maximum(squared[:, None] + squared[None, :]
                                   - 2 * patches @ patches.T, 0.0))
  gaps = jnp.abs(corners[:, None, :] - corners[None, :, :])
  apart = jnp.any(gaps >= patch_size, axis=-1)
  if not bool(jnp.any(apart)):
    raise ValueError(f"image of shape {jnp.shape(image)} has no two non-overlapping patches of "
                     f"size {patch_size}")
  nearest = jnp.min(jnp.where(apart, distances, jnp.inf), axis=1)
  has_neighbour = jnp.isfinite(nearest)
  typical = jnp.sum(jnp.where(apart, distances, 0.0)) / jnp.sum(apart)
  return float(jnp.mean(nearest[has_neighbour]) / typical)
