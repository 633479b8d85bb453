"""Pooling: aggregate each window of an activation map into one value, channel by channel.

Layout `x: [N, *spatial, C]`; window F, stride S (default S = F: non-overlapping windows, the
seed notes' pooling) and padding as in `cnn_jax.ops.conv`, so the output size follows the same
formula, `floor((N + P_lo + P_hi - F) / S) + 1`.

Padded windows: max pooling pads with -inf, so padding never wins a max; average pooling divides
by the number of real (unpadded) pixels in each window unless `count_include_pad=True`, which
divides by the full window size F (zeros counted).

`ceil_mode=True` (PyTorch's): `ceil((N + P_lo + P_hi - F) / S) + 1` outputs, less one where the
last window would start past `N + P_lo` (in the high padding); the windows that overhang the
padded input are clipped: padded with -inf for max pooling, and for average pooling not counted,
even with `count_include_pad=True` (torch's divisor `min(n S - P_lo + F, N + P_hi) - (n S -
P_lo)` per axis).

For the Deconvnet (Zeiler & Fergus 2014), `max_pool_with_switches` records where each maximum came
from and `max_unpool` puts values back there. `blur_pool` is Zhang 2019's anti-aliased
downsampling (binomial low-pass filter, then subsampling).
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnn_jax.ops import lowering as lowerings
from cnn_jax.ops.conv import Padding, _per_axis, correlate, resolve_padding


def _ceil_mode_extension(n: int, f: int, s: int, lo: int, hi: int) -> int:
  """Rows to add past the high padding so that floor mode gives torch's ceil-mode output count."""
  outputs = -(-(n + lo + hi - f) // s) + 1
  if (outputs - 1) * s >= n + lo:  # torch: the last window must start inside input or low pad
    outputs -= 1
  return max(0, (outputs - 1) * s + f - (n + lo + hi))


def _window_geometry(x: jax.Array, window, stride, padding: Padding, ceil_mode: bool = False):
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
  if ceil_mode:
    pads = tuple((lo, hi + _ceil_mode_extension(n, f, s, lo, hi))
                 for n, f, s, (lo, hi) in zip(x.shape[1:-1], windows, strides, pads))
  full = lambda values, fill: (fill,) + tuple(values) + (fill,)
  return x, full(windows, 1), full(strides, 1), ((0, 0),) + pads + ((0, 0),)


def max_pool(x: jax.Array, window, stride=None, padding: Padding = "valid",
             lowering: str = lowerings.DEFAULT_LOWERING, ceil_mode: bool = False) -> jax.Array:
  """`y[n] = max_{k < F} x[n S + k - P_lo]` per channel: `[N, *spatial, C] -> [N, *spatial', C]`.

  The gradient of `y[n]` goes to the first maximum of window n in row-major order. `lowering`
  (see `cnn_jax.ops.lowering`): 'xla' (the reference: `reduce_window` and XLA's
  `select_and_scatter`), 'tiled' (the backward through recorded switches, elementwise selects and
  strided pads) or 'auto' (the switches on CPU, where they measured 3-8x faster; else 'xla').
  `ceil_mode`: PyTorch's output count (module docstring).
  """
  lowerings.check_lowering(lowering)
  x, windows, strides, pads = _window_geometry(x, window, stride, padding, ceil_mode)
  return lowerings.max_pool(x, windows, strides, pads, switches=lowerings.max_pool_uses_switches(
      lowering, jax.default_backend()))


def avg_pool(x: jax.Array, window, stride=None, padding: Padding = "valid",
             count_include_pad: bool = False, ceil_mode: bool = False) -> jax.Array:
  """`y[n] = mean_{k < F} x[n S + k - P_lo]` over the window's real pixels, or with
  `count_include_pad` over its pixels inside the padded input; `ceil_mode` as PyTorch's (module
  docstring). Both rules are torch's `avg_pool2d`'s."""
  x, windows, strides, pads = _window_geometry(x, window, stride, padding)
  if ceil_mode:
    _, _, _, extended = _window_geometry(x, window, stride, padding, ceil_mode=True)
  else:
    extended = pads
  sums = lax.reduce_window(x, 0.0, lax.add, windows, strides, extended)
  if extended == pads and (count_include_pad or all(p == (0, 0) for p in pads)):
    return sums / jnp.prod(jnp.array(windows))
  ones = jnp.ones((1,) + x.shape[1:-1] + (1,), x.dtype)
  if count_include_pad:  # the explicit padding counts, the ceil-mode overhang does not
    ones = jnp.pad(ones, pads, constant_values=1)
    extended = tuple((0, e_hi - hi) for (_, hi), (_, e_hi) in zip(pads, extended))
  counts = lax.reduce_window(ones, 0.0, lax.add, windows, strides, extended)
  return sums / counts


def global_avg_pool(x: jax.Array) -> jax.Array:
  """Mean over all spatial axes: `[N, *spatial, C] -> [N, C]`."""
  x = jnp.asarray(x)
  if x.ndim < 3:
    raise ValueError(f"x must be [N, *spatial, C], got shape {x.shape}")
  return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


def _window_index_table(spatial, windows, strides, pads):
  """Static tables of every window's input positions, computed in NumPy from the shapes alone.

  Returns `(flat_index, inside)`, both `[*spatial', prod(F)]`: the row-major flat index, into the
  unpadded spatial axes, of window element `k` of output position `n` (coordinate
  `n S + k - P_lo` per axis, clipped into the input), and whether that element is a real pixel
  rather than padding. Window elements `k` are listed in row-major order.
  """
  coordinates, inside = [], []
  for axis, (n, f, s, (lo, hi)) in enumerate(zip(spatial, windows, strides, pads)):
    n_out = (n + lo + hi - f) // s + 1
    coordinate = np.arange(n_out)[:, None] * s + np.arange(f)[None, :] - lo  # [n_out, f]
    # Broadcast axis `axis` to the layout [*spatial', *F].
    shape = [1] * (2 * len(spatial))
    shape[axis], shape[len(spatial) + axis] = n_out, f
    coordinates.append(np.clip(coordinate, 0, n - 1).reshape(shape))
    inside.append(((coordinate >= 0) & (coordinate < n)).reshape(shape))
  flat_index = np.ravel_multi_index(np.broadcast_arrays(*coordinates), tuple(spatial))
  is_inside = np.logical_and.reduce(np.broadcast_arrays(*inside))
  out_shape = flat_index.shape[:len(spatial)]
  return flat_index.reshape(out_shape + (-1,)), is_inside.reshape(out_shape + (-1,))


def max_pool_with_switches(x: jax.Array, window, stride=None,
                           padding: Padding = "valid") -> tuple[jax.Array, jax.Array]:
  """Max pooling that also returns where each maximum came from (Zeiler & Fergus's switches).

  `y[b, n, c] = max_{k < F} x[b, n S + k - P_lo, c]` exactly as `max_pool`, and
  `switches[b, n, c]` is the row-major flat index, into the unpadded spatial axes of x, of the
  argmax of that window; of tied maxima the first in row-major order wins. `max_unpool` puts
  values back at these positions. The gradient of `y` flows to the switch positions only.

  Args:
    x: `[N, *spatial, C]`, floating point.
    window: F, an int or one per spatial axis.
    stride: S, default F (non-overlapping windows).
    padding: as in `max_pool`; padding never wins a max. Every window must hold at least one real
      pixel.

  Returns:
    `(y, switches)`: `y: [N, *spatial', C]` and `switches: int32 [N, *spatial', C]` with values in
    `[0, prod(spatial))`.
  """
  x, windows, strides, pads = _window_geometry(x, window, stride, padding)
  windows, strides, pads = windows[1:-1], strides[1:-1], pads[1:-1]
  _, inside = _window_index_table(x.shape[1:-1], windows, strides, pads)
  if not inside.any(axis=-1).all():
    raise ValueError(f"padding={padding!r} leaves windows with no input pixel (window "
                     f"{windows}, stride {strides}, x shape {x.shape}): their max and switch "
                     "are undefined")
  return _max_pool_with_switches(x, windows, strides, pads)


# Jitted as a whole: eagerly, each slice and select would compile on its own.
@functools.partial(jax.jit, static_argnames=("windows", "strides", "pads"))
def _max_pool_with_switches(x, windows, strides, pads):
  flat_index, _ = _window_index_table(x.shape[1:-1], windows, strides, pads)
  out_shape = flat_index.shape[:-1]
  x_padded = jnp.pad(x, ((0, 0),) + pads + ((0, 0),), constant_values=-jnp.inf)
  # A running maximum over the window offsets, in row-major order: one strided view of the input
  # per offset, so memory stays that of the output. A strict `>` keeps the first of tied maxima.
  offsets = itertools.product(*(range(f) for f in windows))
  for k, offset in enumerate(offsets):
    view = x_padded[(slice(None),) + tuple(
        slice(o, o + (n - 1) * s + 1, s) for o, n, s in zip(offset, out_shape, strides))]
    index = jnp.asarray(flat_index[..., k], jnp.int32)[None, ..., None]
    if k == 0:
      y, switches = view, jnp.broadcast_to(index, view.shape)
    else:
      larger = view > y
      y, switches = jnp.where(larger, view, y), jnp.where(larger, index, switches)
  return y, switches


UNPOOL_OVERLAPS = ("sum", "set")


def max_unpool(y: jax.Array, switches: jax.Array, input_spatial_shape,
               overlap: str = "sum") -> jax.Array:
  """Unpooling through switches: each pooled value goes back to its argmax, zeros elsewhere.

  With overlap 'sum': `x[b, p, c] = sum_{n : switches[b, n, c] = p} y[b, n, c]` for every flat
  spatial position `p`, so where overlapping windows (stride < window) share an argmax their
  values add. This is the adjoint of gathering at the switches, so for untied inputs it equals
  the gradient of `max_pool` (`jax.vjp`); the Deconvnet of Zeiler & Fergus uses it to project
  activations back to pixel space. With overlap 'set' (`torch.nn.functional.max_unpool2d`'s
  rule) a shared argmax keeps one of its windows' values: which one is unspecified, as in
  torch, and immaterial when `y` is the pooled maximum itself (windows sharing an argmax share
  its value). The two agree when windows do not overlap.

  Args:
    y: `[N, *spatial', C]`.
    switches: integer, same shape as y, from `max_pool_with_switches`.
    input_spatial_shape: the spatial shape of the pooled input, `spatial`.
    overlap: 'sum' (the adjoint) or 'set' (PyTorch's).

  Returns:
    `[N, *input_spatial_shape, C]`.
  """
  y, switches = jnp.asarray(y), jnp.asarray(switches)
  input_spatial_shape = tuple(input_spatial_shape)
  if y.ndim < 3 or switches.shape != y.shape:
    raise ValueError(f"y must be [N, *spatial', C] and switches the same shape, got y shape "
                     f"{y.shape} and switches shape {switches.shape}")
  if not jnp.issubdtype(switches.dtype, jnp.integer):
    raise ValueError(f"switches must be integer flat indices, got dtype {switches.dtype}")
  if len(input_spatial_shape) != y.ndim - 2 or not all(
      isinstance(n, int) and n >= 1 for n in input_spatial_shape):
    raise ValueError(f"input_spatial_shape must be {y.ndim - 2} positive ints (one per spatial "
                     f"axis of y, shape {y.shape}), got {input_spatial_shape!r}")
  if overlap not in UNPOOL_OVERLAPS:
    raise ValueError(f"overlap must be one of {UNPOOL_OVERLAPS}, got {overlap!r}")
  return _max_unpool(y, switches, input_spatial_shape, overlap)


@functools.partial(jax.jit, static_argnames=("input_spatial_shape", "overlap"))
def _max_unpool(y, switches, input_spatial_shape, overlap):
  batch, channels = y.shape[0], y.shape[-1]
  flat_y = y.reshape(batch, -1, channels)
  flat_switches = switches.reshape(batch, -1, channels)
  x = jnp.zeros((batch, math.prod(input_spatial_shape), channels), y.dtype)
  at = x.at[jnp.arange(batch)[:, None, None], flat_switches, jnp.arange(channels)[None, None, :]]
  x = at.add(flat_y) if overlap == "sum" else at.set(flat_y)
  return x.reshape((batch,) + input_spatial_shape + (channels,))


BLUR_PADDING_NAMES = ("reflect", "circular", "zeros")
_JNP_PAD_MODES = {"reflect": "reflect", "circular": "wrap", "zeros": "constant"}


def binomial_filter(filter_size: int, ndim: int = 2) -> np.ndarray:
  """The normalized binomial low-pass filter of Zhang 2019: `[F] * ndim`, entries sum to 1.

  1-D taps are row `F - 1` of Pascal's triangle (`[1, 2, 1]` for F = 3, `[1, 4, 6, 4, 1]` for
  F = 5); in several axes the outer product of the 1-D taps.
  """
  if not isinstance(filter_size, int) or not 1 <= filter_size <= 7:
    raise ValueError(f"filter_size must be an int in 1..7, got {filter_size!r}")
  taps = np.array([math.comb(filter_size - 1, i) for i in range(filter_size)], np.float64)
  filter_nd = functools.reduce(np.multiply.outer, [taps] * ndim)
  return filter_nd / filter_nd.sum()


def blur_pool(x: jax.Array, stride=2, filter_size: int = 3, padding: str = "reflect",
              lowering: str = lowerings.DEFAULT_LOWERING) -> jax.Array:
  """Anti-aliased downsampling (Zhang 2019): binomial low-pass filter, then subsample by S.

  `y[b, n, c] = sum_k B[k] x_pad[b, n S + k, c]`, channel by channel, where
  `B = binomial_filter(F)` and `x_pad` is x padded by `(floor((F-1)/2), ceil((F-1)/2))` per axis,
  so the filtered map keeps the input size and the output has `ceil(N / S)` pixels per axis.
  "BlurPool" is `blur_pool(max_pool(x, F_max, 1))`; "BlurConv" is
  `blur_pool(relu(correlate(x, w, stride=1)))`.

  B is separable, `B[k] = b[k_1] ... b[k_d]` with 1-D taps `b`, so the sum runs one axis at a
  time, each pass a weighted sum of F strided slices that computes only the kept positions:
  `z[n] = sum_k b[k] x_pad[n S + k]`. The taps are dyadic (`binom(F-1, k) / 2^(F-1)`), so this
  equals the depthwise correlation up to float rounding.

  Args:
    x: `[N, *spatial, C]`, 1 to 3 spatial axes.
    stride: S >= 1, an int or one per spatial axis.
    filter_size: F in 1..7 (F = 1 is plain subsampling).
    padding: 'reflect' (mirror without repeating the edge, as torch's ReflectionPad), 'circular'
      (periodic: exactly equivariant to circular shifts by multiples of S) or 'zeros'.
    lowering: 'xla': a depthwise `correlate` (`groups=C`) with B, lowered by XLA's own
      convolution; 'tiled': the separable strided slices (same values up to rounding;
      `models.inspect` does not trace a field through them, and counts with 'xla'); 'auto':
      'tiled' on CPU, where XLA's depthwise convolution and its gradient are several times
      slower than the slices, else 'xla'.
  Returns:
    `[N, *ceil(spatial / S), C]`.
  """
  x = jnp.asarray(x)
  ndim = x.ndim - 2
  if not 1 <= ndim <= 3:
    raise ValueError(f"x must be [N, *spatial, C] with 1 to 3 spatial axes, got shape {x.shape}")
  if padding not in BLUR_PADDING_NAMES:
    raise ValueError(f"padding must be one of {BLUR_PADDING_NAMES}, got {padding!r}")
  lowerings.check_lowering(lowering)
  strides = _per_axis("stride", stride, ndim, minimum=1)
  blur = binomial_filter(filter_size, ndim)  # validates filter_size
  lo, hi = (filter_size - 1) // 2, filter_size // 2
  x_padded = jnp.pad(x, ((0, 0),) + ((lo, hi),) * ndim + ((0, 0),),
                     mode=_JNP_PAD_MODES[padding])
  if lowering == "tiled" or (lowering == "auto" and jax.default_backend() == "cpu"):
    return _separable_blur(x_padded, strides, filter_size)
  channels = x.shape[-1]
  kernel = jnp.broadcast_to(jnp.asarray(blur, x.dtype)[..., None, None],
                            blur.shape + (1, channels))
  return correlate(x_padded, kernel, stride=strides, padding="valid", groups=channels,
                   lowering="xla")


def _separable_blur(x_padded: jax.Array, strides, filter_size: int) -> jax.Array:
  """`z[n] = sum_k b[k] x_padded[n S + k]` along each spatial axis in turn, b the 1-D taps."""
  taps = binomial_filter(filter_size, 1)
  y = x_padded
  for axis, stride in enumerate(strides, start=1):
    n_out = (y.shape[axis] - filter_size) // stride + 1
    total = None
    for k, tap in enumerate(taps):
      view = lax.slice_in_dim(y, k, k + (n_out - 1) * stride + 1, stride, axis)
      term = view * jnp.asarray(tap, y.dtype)
      total = term if total is None else total + term
    y = total
  return y
