"""Pooling: aggregate each window of an activation map into one value, channel by channel.

Layout `x: [N, *spatial, C]`; window F, stride S (default S = F: non-overlapping windows, the
seed notes' pooling) and padding as in `cnn_jax.ops.conv`, so the output size follows the same
formula, `floor((N + P_lo + P_hi - F) / S) + 1`.

Padded windows: max pooling pads with -inf, so padding never wins a max; average pooling divides
by the number of real (unpadded) pixels in each window unless `count_include_pad=True`, which
divides by the full window size F (zeros counted).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from cnn_jax.ops.conv import Padding, _per_axis, resolve_padding


def _window_geometry(x: jax.Array, window, stride, padding: Padding):
  x = jnp.asarray(x)
  ndim = x.ndim - 2
  if ndim < 1:
    raise ValueError(f"x must be [N, *spatial, C] with at least one spatial axis, got shape "
                     f"{x.shape}")
  windows = _per_axis("window", window, ndim, minimum=1)
  strides = windows if stride is None else _per_axis("stride", stride, ndim, minimum=1)
  if isinstance(padding, str) and padding.lower() == "circular":
    raise ValueError("pooling padding must be 'valid', 'same', 'full', an int or (lo, hi) pairs; "
                     "'circular' is not supported (pad with jnp.pad(mode='wrap') first)")
  pads = resolve_padding(padding, x.shape[1:-1], windows, strides, (1,) * ndim)
  for axis, (n, f, (lo, hi)) in enumerate(zip(x.shape[1:-1], windows, pads)):
    if n + lo + hi < f:
      raise ValueError(f"window {f} is larger than the padded input on spatial axis {axis}: "
                       f"input {n}, padding ({lo}, {hi}); x shape {x.shape}")
  full = lambda values, fill: (fill,) + tuple(values) + (fill,)
  return x, full(windows, 1), full(strides, 1), ((0, 0),) + pads + ((0, 0),)


def max_pool(x: jax.Array, window, stride=None, padding: Padding = "valid") -> jax.Array:
  """`y[n] = max_{k < F} x[n S + k - P_lo]`, per channel: `[N, *spatial, C] -> [N, *spatial', C]`."""
  x, windows, strides, pads = _window_geometry(x, window, stride, padding)
  return lax.reduce_window(x, -jnp.inf, lax.max, windows, strides, pads)


def avg_pool(x: jax.Array, window, stride=None, padding: Padding = "valid",
             count_include_pad: bool = False) -> jax.Array:
  """`y[n] = mean_{k < F} x[n S + k - P_lo]` over the window's real pixels (see module docstring)."""
  x, windows, strides, pads = _window_geometry(x, window, stride, padding)
  sums = lax.reduce_window(x, 0.0, lax.add, windows, strides, pads)
  if count_include_pad or all(p == (0, 0) for p in pads):
    return sums / jnp.prod(jnp.array(windows))
  counts = lax.reduce_window(jnp.ones((1,) + x.shape[1:-1] + (1,), x.dtype), 0.0, lax.add,
                             windows, strides, pads)
  return sums / counts


def global_avg_pool(x: jax.Array) -> jax.Array:
  """Mean over all spatial axes: `[N, *spatial, C] -> [N, C]`."""
  x = jnp.asarray(x)
  if x.ndim < 3:
    raise ValueError(f"x must be [N, *spatial, C], got shape {x.shape}")
  return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))
