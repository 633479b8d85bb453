"""The input normalization shared by training, evaluation and inference.

`x = (u - mean) / std` per channel, where `u` is the image on the [0, 1] scale (uint8 images are
divided by 255) and `mean`, `std` are the training set's per-channel statistics from
`cnn_jax.data.get_dataset_info`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def to_unit_interval(images) -> jax.Array:
  """uint8 `[..., C]` in 0..255 -> float32 in [0, 1]; float images are taken as in [0, 1]."""
  images = jnp.asarray(images)
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def normalize(images_unit, mean, std) -> jax.Array:
  """`(u - mean) / std` per channel: `[..., C]` float in [0, 1] -> `[..., C]` float32."""
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (images_unit - mean) / std


def preprocess(images, dataset_info) -> jax.Array:
  """Model input from raw images: `[N, H, W, C]` uint8 (or float in [0, 1]) -> normalized float32.

  Args:
    images: `[N, H, W, C]`, uint8 in 0..255 or float in [0, 1].
    dataset_info: a `cnn_jax.data.DatasetInfo`; its `mean` and `std` (length C) are used.

  Returns:
    `[N, H, W, C]` float32, `(images / 255 - mean) / std` for uint8 input.
  """
  images = jnp.asarray(images)
  channels = len(dataset_info.mean)
  if images.ndim != 4 or images.shape[-1] != channels:
    raise ValueError(f"images must be [N, H, W, {channels}] for dataset {dataset_info.name!r}, "
                     f"got shape {images.shape}")
  return normalize(to_unit_interval(images), dataset_info.mean, dataset_info.std)
