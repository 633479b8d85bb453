"""The input normalization shared by training, evaluation and inference.

`x = (u - mean) / std` per channel, where `u` is the image on the [0, 1] scale (uint8 images are
divided by 255) and `mean`, `std` are the training set's per-channel statistics from
`cnn_jax.data.get_dataset_info`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


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


# A convex combination (resampling, blending) of values in [0, 1] may round a few float32 ulps
# outside it; this much is accepted.
UNIT_INTERVAL_SLACK = 1e-6


def check_unit_interval(images: np.ndarray) -> None:
  """Raises ValueError if float `images` hold NaN, infinity or values outside [0, 1].

  On the host only: under `jit` values cannot raise, and the models do not propagate NaN
  reliably on CPU (see `cnn_jax.runtime.YNN_FUSION_TYPES`), so non-finite inputs are stopped here.
  """
  finite = np.isfinite(images)
  if not finite.all():
    raise ValueError(f"images hold {int(np.size(finite) - finite.sum())} NaN or infinite values "
                     f"(of {np.size(finite)}); the models need finite pixels")
  if images.size == 0:
    return
  low, high = float(images.min()), float(images.max())
  if low < -UNIT_INTERVAL_SLACK or high > 1.0 + UNIT_INTERVAL_SLACK:
    raise ValueError(f"float images must be in [0, 1], got values in [{low:g}, {high:g}]"
                     + (": on the 0..255 scale? divide by 255 or pass uint8" if high > 1.5
                        else ""))


def preprocess(images, dataset_info) -> jax.Array:
  """Model input from raw images: `[N, H, W, C]` uint8 (or float in [0, 1]) -> normalized float32.

  Args:
    images: `[N, H, W, C]`, uint8 in 0..255 or float in [0, 1].
    dataset_info: a `cnn_jax.data.DatasetInfo`; its `mean` and `std` (length C) are used.

  Returns:
    `[N, H, W, C]` float32, `(images / 255 - mean) / std` for uint8 input.

  Raises:
    ValueError: the shape is not `[N, H, W, C]`; float images (outside `jit`) hold NaN,
      infinity or values outside [0, 1] (`check_unit_interval`).
  """
  images = jnp.asarray(images)
  channels = len(dataset_info.mean)
  if images.ndim != 4 or images.shape[-1] != channels:
    raise ValueError(f"images must be [N, H, W, {channels}] for dataset {dataset_info.name!r}, "
                     f"got shape {images.shape}")
  if images.dtype != jnp.uint8 and not isinstance(images, jax.core.Tracer):
    check_unit_interval(np.asarray(images))
  return normalize(to_unit_interval(images), dataset_info.mean, dataset_info.std)
