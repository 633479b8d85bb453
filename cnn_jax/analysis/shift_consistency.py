"""Shift consistency (Zhang 2019, "Making Convolutional Networks Shift-Invariant Again").

`consistency = E_{x, s1, s2} [argmax f(T_{s1} x) == argmax f(T_{s2} x)]`: the fraction of image
pairs whose top-1 class agrees under two independent random shifts `s1, s2` of the same image,
each drawn uniformly from `{-R, ..., R}^2`, averaged over several passes (fresh shifts each pass).

With mode='crop' the two shifted images are two crops of the zero-padded image at uniform
offsets (Zhang's protocol); with mode='circular' they are circular rolls (Chaman & Dokmanic 2021),
under which a stride-1 circular-padding network with global pooling is consistent by
construction (consistency 1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cnn_jax.analysis.integer_shifts import check_shift_mode, random_shifts, shift_images
from cnn_jax.analysis.predictions import ApplyFn, top1


def shift_consistency(apply_fn: ApplyFn, images: jax.Array, key: jax.Array, *,
                      max_shift: int = 3, mode: str = "crop", num_passes: int = 5,
                      batch_size: int = 500) -> float:
  """The fraction of (image, pass) pairs whose top-1 class is the same under two random shifts.

  Args:
    apply_fn: `images: [N, H, W, C] -> logits [N, K]`.
    images: `[N, H, W, C]`.
    key: PRNG key for the shifts.
    max_shift: R; each shift is uniform in `{-R, ..., R}` per axis.
    mode: 'crop' (zeros enter) or 'circular'.
    num_passes: passes over `images`, each with fresh shifts.
    batch_size: images per call of `apply_fn`.

  Returns:
    consistency in [0, 1].
  """
  check_shift_mode(mode)
  if not isinstance(max_shift, int) or max_shift < 0:
    raise ValueError(f"max_shift must be an int >= 0, got {max_shift!r}")
  if not isinstance(num_passes, int) or num_passes < 1:
    raise ValueError(f"num_passes must be an int >= 1, got {num_passes!r}")
  images = jnp.asarray(images)
  agreements = []
  for pass_key in jax.random.split(key, num_passes):
    first_key, second_key = jax.random.split(pass_key)
    first = shift_images(images, random_shifts(first_key, images.shape[0], max_shift), mode)
    second = shift_images(images, random_shifts(second_key, images.shape[0], max_shift), mode)
    agreements.append(jnp.mean(top1(apply_fn, first, batch_size)
                               == top1(apply_fn, second, batch_size)))
  return float(jnp.mean(jnp.stack(agreements)))
