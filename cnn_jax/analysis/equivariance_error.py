"""Per-layer translation-equivariance error under circular shifts.

For layer l with activation `f_l(x): [N, h, w, C]` of an input `x: [N, H, W, C_in]`, the
cumulative stride is `s = H / h` (and `W / w`); a circular shift T by `(dy, dx)` of the input
should move the activation by `T' = (dy / s, dx / s)`:

  error_l(T) = ||f_l(T x) - T' f_l(x)|| / ||f_l(x)||      (Frobenius norms over the batch).

A stride-1 circular-padding convolution stack has error 0; striding and pooling keep it 0 only for
shifts on the subsampled grid (multiples of s). Shifts off that grid have no exact T'; for them
the error is reported separately (`off_grid_error`) with the best of the two neighbouring grid
shifts, `T' = (floor or ceil of dy / s, floor or ceil of dx / s)`, the smallest error that any
whole-pixel feature shift could give. Layers without spatial axes (`[N, D]`: after global pooling
or flattening, and the logits) are compared with `T' = identity`: their error is an invariance
error. Layers whose spatial size does not divide the input's ('valid' padding) have no consistent
T' and get NaN.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from cnn_jax.analysis.integer_shifts import shift_images
from cnn_jax.analysis.intermediates import FeaturesFn


class LayerEquivariance(NamedTuple):
  """The equivariance error of one layer (NaN where no shift of the kind was measured)."""
  name: str
  shape: tuple[int, ...]  # activation shape, batch axis included
  stride: int | None  # cumulative stride s; None for non-spatial layers (invariance error)
  on_grid_error: float  # mean over shifts that are multiples of s
  off_grid_error: float  # mean over the other shifts, best neighbouring grid shift


def _relative_error(shifted_features: jax.Array, candidates: Sequence[jax.Array]) -> float:
  norm = jnp.linalg.norm(candidates[0].ravel())
  return min(float(jnp.linalg.norm((shifted_features - candidate).ravel()) / norm)
             for candidate in candidates)


def _cumulative_stride(input_shape: tuple[int, ...], shape: tuple[int, ...]) -> int | None:
  strides = {height // size if size and height % size == 0 else None
             for height, size in zip(input_shape[1:3], shape[1:3])}
  return strides.pop() if len(strides) == 1 else None


def layer_equivariance_errors(features_fn: FeaturesFn, images: jax.Array,
                              shifts: Sequence[tuple[int, int]]) -> list[LayerEquivariance]:
  """The equivariance error of every layer under each circular shift in `shifts`.

  Args:
    features_fn: `images -> [(name, activation), ...]` in forward order (see
      `cnn_jax.analysis.intermediates.model_features_fn`); activations `[N, h, w, C]` or `[N, D]`.
    images: `[N, H, W, C]`.
    shifts: `(dy, dx)` whole-pixel circular shifts of the input, at least one.

  Returns:
    One `LayerEquivariance` per layer, in forward order.
  """
  shifts = [tuple(int(v) for v in shift) for shift in shifts]
  if not shifts or any(len(shift) != 2 for shift in shifts):
    raise ValueError(f"shifts must be a non-empty sequence of (dy, dx) pairs, got {shifts!r}")
  images = jnp.asarray(images)
  reference = features_fn(images)
  shifted_runs = [features_fn(shift_images(images, jnp.array(shift), "circular"))
                  for shift in shifts]
  results = []
  for index, (name, features) in enumerate(reference):
    spatial = features.ndim == 4
    stride = _cumulative_stride(images.shape, features.shape) if spatial else None
    on_grid, off_grid = [], []
    for shift, shifted in zip(shifts, shifted_runs):
      shifted_features = shifted[index][1]
      if not spatial:
        on_grid.append(_relative_error(shifted_features, [features]))
      elif stride is not None:
        neighbours = itertools.product(*[{math.floor(v / stride), math.ceil(v / stride)}
                                         for v in shift])
        candidates = [shift_images(features, jnp.array(grid_shift), "circular")
                      for grid_shift in neighbours]
        on_grid_shift = all(v % stride == 0 for v in shift)
        (on_grid if on_grid_shift else off_grid).append(
            _relative_error(shifted_features, candidates))
    mean = lambda errors: sum(errors) / len(errors) if errors else math.nan
    results.append(LayerEquivariance(name, tuple(features.shape), stride, mean(on_grid),
                                     mean(off_grid)))
  return results
