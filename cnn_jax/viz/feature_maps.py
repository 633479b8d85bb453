"""Activation maps of one image: every channel of a layer as a small image, on one grid."""

from __future__ import annotations

import numpy as np

from cnn_jax.viz import grids


def activation_grid(activation, columns: int = 16, gap: int = 1, scale: int = 1) -> np.ndarray:
  """The channels of one image's activation as tiles, on the layer's common scale.

  All channels share one min-max scale, `(a - min a) / (max a - min a)` over the whole layer, so
  that a weak channel looks weak (per-channel scaling would make every map look equally busy).

  Args:
    activation: `[H, W, C]`, one image's activation of a conv or pooling layer.
    columns: tiles per row.
    gap: pixels between tiles.
    scale: integer enlargement of every tile.

  Returns:
    `[R H s + (R - 1) gap, M W s + (M - 1) gap, 1]` with `M = min(columns, C)` columns and
    `R = ceil(C / M)` rows; gaps are NaN, which `grids.save_png` shows white under any colormap.
  """
  activation = np.asarray(activation, np.float32)
  if activation.ndim != 3:
    raise ValueError(f"activation must be one image's [H, W, C], got shape {activation.shape}")
  scaled = grids.rescale_to_unit(activation)
  tiles = np.stack([grids.upscale(scaled[..., c:c + 1], scale) for c in range(scaled.shape[-1])])
  return grids.image_grid(tiles, min(columns, len(tiles)), gap, fill=np.nan)
