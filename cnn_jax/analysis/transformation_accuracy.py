"""Test accuracy as a function of a transformation's parameter (translation, rotation angle).

`accuracy(theta) = E_{(x, y)} [argmax f(T_theta x) == y]` for each theta of a grid. With
`T_0 = identity` the curve passes through the clean accuracy. The transformation is a function
`transform(images, theta) -> images`; `accuracy_vs_translation` supplies whole-pixel shifts, and
rotations come from `cnn_jax.data.augment.rotate` (bilinear, degrees).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from cnn_jax.analysis.integer_shifts import check_shift_mode, shift_images
from cnn_jax.analysis.predictions import ApplyFn, top1

TRANSLATION_AXES = ("vertical", "horizontal")


def accuracy_vs_transformation(apply_fn: ApplyFn, images: jax.Array, labels: jax.Array,
                               transform: Callable[[jax.Array, float], jax.Array],
                               parameters: Sequence[float], *,
                               batch_size: int = 500) -> jax.Array:
  """Accuracy of `apply_fn` on `transform(images, theta)` for every theta in `parameters`.

  Args:
    apply_fn: `images: [N, H, W, C] -> logits [N, K]`.
    images: `[N, H, W, C]`; labels: `[N]` int.
    transform: `(images [N, H, W, C], theta) -> [N, H, W, C]`.
    parameters: the thetas, `[P]`.
    batch_size: images per call of `apply_fn`.

  Returns:
    `[P]` accuracies in [0, 1].
  """
  images, labels = jnp.asarray(images), jnp.asarray(labels)
  if labels.shape != images.shape[:1]:
    raise ValueError(f"labels must have shape ({images.shape[0]},) to match images of shape "
                     f"{images.shape}, got {labels.shape}")
  if len(parameters) == 0:
    raise ValueError("parameters must hold at least one transformation parameter, got none")
  return jnp.stack([jnp.mean(top1(apply_fn, transform(images, theta), batch_size) == labels)
                    for theta in parameters])


def accuracy_vs_translation(apply_fn: ApplyFn, images: jax.Array, labels: jax.Array,
                            shifts: Sequence[int], *, axis: str = "horizontal",
                            mode: str = "crop", batch_size: int = 500) -> jax.Array:
  """Accuracy under a whole-pixel translation by each of `shifts` along one axis -> `[P]`.

  Args:
    shifts: signed pixel counts (positive: down for 'vertical', right for 'horizontal').
    axis: 'vertical' or 'horizontal'.
    mode: 'crop' (zeros enter) or 'circular'.
  """
  if axis not in TRANSLATION_AXES:
    raise ValueError(f"axis must be one of {TRANSLATION_AXES}, got {axis!r}")
  check_shift_mode(mode)
  unit = jnp.array([1, 0] if axis == "vertical" else [0, 1])
  return accuracy_vs_transformation(
      apply_fn, images, labels, lambda batch, shift: shift_images(batch, unit * shift, mode),
      [int(shift) for shift in shifts], batch_size=batch_size)
