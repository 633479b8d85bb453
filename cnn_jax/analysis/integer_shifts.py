"""Whole-pixel translations of image batches, one shift per image, as the metrics' protocols need.

Two boundary conditions:
  'circular'  `y[i, j] = x[(i - dy) mod H, (j - dx) mod W]`: content leaving one side re-enters
              on the other (Chaman & Dokmanic 2021), so stride-1 circular convolutions commute
              with it exactly.
  'crop'      `y[i, j] = x[i - dy, j - dx]` with zeros outside the image
              (`cnn_jax.data.augment.translate`): the same as cropping a window at offset
              `(P - dy, P - dx)` out of the image zero-padded by P (Zhang 2019's two crops; on
              MNIST's black background, also Azulay & Weiss's black canvas). Pass images whose
              background is 0 (the [0, 1] scale) and normalize inside the classifier.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cnn_jax.data.augment import translate

SHIFT_MODES = ("circular", "crop")


def check_shift_mode(mode: str) -> str:
  """Returns `mode` if it is a name in `SHIFT_MODES`, else raises a ValueError naming it."""
  if mode not in SHIFT_MODES:
    raise ValueError(f"mode must be one of {SHIFT_MODES}, got {mode!r}")
  return mode


def shift_images(images: jax.Array, shifts: jax.Array, mode: str = "circular") -> jax.Array:
  """Translates each image by its own whole-pixel shift (positive: down and to the right).

  Args:
    images: `[N, H, W, C]`.
    shifts: `[N, 2]` integer `(dy, dx)` per image, or `[2]` for one shift shared by all.
    mode: 'circular' or 'crop' (zeros enter; see the module docstring).

  Returns:
    `[N, H, W, C]`.
  """
  check_shift_mode(mode)
  images = jnp.asarray(images)
  shifts = jnp.broadcast_to(jnp.asarray(shifts, jnp.int32), (images.shape[0], 2))
  if mode == "circular":
    return jax.vmap(lambda image, shift: jnp.roll(image, shift, axis=(0, 1)))(images, shifts)
  return translate(images, shifts)


def random_shifts(key: jax.Array, num_images: int, max_shift: int) -> jax.Array:
  """`[num_images, 2]` integer shifts drawn uniformly from `{-max_shift, ..., max_shift}`."""
  return jax.random.randint(key, (num_images, 2), -max_shift, max_shift + 1)
