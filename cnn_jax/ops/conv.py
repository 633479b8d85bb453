"""Convolution and cross-correlation as pure functions, lowered as `cnn_jax.ops.lowering` says.

Two meanings of the word, both exact:

* `correlate` is what deep-learning libraries call convolution:
  `y[n] = sum_k x[n*S + k*D - P_lo] w[k]` (the kernel slides, not flipped).
* `convolve` is the mathematical convolution of the seed notes,
  `(f * g)[n] = sum_k f[k] g[n - k]`: cross-correlation with the kernel flipped in every spatial
  axis. With `padding='full'` it is the whole discrete convolution, of length `N + F - 1`.

Layout is channels-last: `x: [N, *spatial, C_in]`, `kernel: [*K, C_in // groups, C_out]`
(Flax's HWIO), result `[N, *spatial', C_out]` with, per spatial axis,
`N' = floor((N_eff + P_lo + P_hi - D (F - 1) - 1) / S) + 1` and `N_eff = (N - 1) * D_in + 1`
(see `cnn_jax.ops.arithmetic.output_size`).

Padding, per spatial axis:
  'valid'     no padding (the seed's "no padding").
  'same'      output size `ceil(N_eff / S)`; the extra pixel of an odd total goes to the high side.
  'full'      `D (F - 1)` on both sides: every partial overlap (the seed's "full zero-padding").
  'circular'  the amounts of 'same', filled by periodic extension instead of zeros, so that a
              stride-1 layer is exactly equivariant to circular shifts.
  int p       `p` zeros on both sides of every spatial axis.
  [p_1, ...]  one int per spatial axis.
  [(lo, hi), ...]  explicit amounts per side and per axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import jax
import jax.numpy as jnp
from cnn_jax.ops import lowering as lowerings

Padding = Union[str, int, Sequence[int], Sequence[tuple[int, int]]]
PADDING_NAMES = ("valid", "same", "full", "circular")

def _per_axis(name: str, value, ndim: int, *, minimum: int) -> tuple[int, ...]:
  """An int or a sequence of `ndim` ints, each >= minimum, as a tuple of `ndim` ints."""
  values = (value,) * ndim if isinstance(value, int) else tuple(value)
  if len(values) != ndim or not all(isinstance(v, int) for v in values):
    raise ValueError(
        f"{name} must be an int or a sequence of {ndim} ints (one per spatial axis), "
        f"got {value!r}")
  if any(v < minimum for v in values):
    raise ValueError(f"{name} must be >= {minimum} on every axis, got {value!r}")
  return values


def resolve_padding(padding: Padding, input_size: Sequence[int], kernel_size: Sequence[int],
                    stride: Sequence[int], kernel_dilation: Sequence[int],
                    input_dilation: Sequence[int] | None = None) -> tuple[tuple[int, int], ...]:
  """The explicit `(lo, hi)` padding of every spatial axis for a padding spec.

  Args:
    padding: a name in `PADDING_NAMES`, an int, one int per axis, or `(lo, hi)` pairs per axis.
    input_size, kernel_size, stride, kernel_dilation, input_dilation: one int per spatial axis.

  Returns:
    One `(lo, hi)` pair per spatial axis. For 'circular' these are the amounts of 'same'.
  """
  ndim = len(input_size)
  input_dilation = input_dilation or (1,) * ndim
  if isinstance(padding, str):
    mode = padding.lower()
    if mode not in PADDING_NAMES:
      raise ValueError(f"padding must be one of {PADDING_NAMES}, an int or (lo, hi) pairs, "
                       f"got {padding!r}")
    pairs = []
    for n, f, s, d, d_in in zip(input_size, kernel_size, stride, kernel_dilation, input_dilation):
      effective_input = (n - 1) * d_in + 1
      effective_kernel = d * (f - 1) + 1
      if mode == "valid":
        pairs.append((0, 0))
      elif mode == "full":
        pairs.append((effective_kernel - 1, effective_kernel - 1))
      else:  # 'same' and 'circular'
        total = max(
            (math.ceil(effective_input / s) - 1) * s + effective_kernel - effective_input, 0)
        pairs.append((total // 2, total - total // 2))
    return tuple(pairs)
  if isinstance(padding, int):
    if padding < 0:
      raise ValueError(f"padding must be >= 0, got {padding!r}")
    return ((padding, padding),) * ndim
  items = tuple(padding)
  if len(items) != ndim:
    raise ValueError(f"padding must give one entry per spatial axis ({ndim}), got {padding!r}")
  pairs = []
  for item in items:
    pair = (item, item) if isinstance(item, int) else tuple(item)
    if len(pair) != 2 or not all(isinstance(p, int) and p >= 0 for p in pair):
      raise ValueError(f"padding entries must be ints >= 0 or (lo, hi) pairs of them, "
                       f"got {padding!r}")
    pairs.append(pair)
  return tuple(pairs)


def resolve_correlation(x_shape, kernel_shape, *, stride=1, padding: Padding = "valid",
                        kernel_dilation=1, input_dilation=1, groups: int = 1, bias_shape=None,
                        precision=None) -> lowerings.Correlation:
  """Validates the arguments of `correlate` and resolves them per spatial axis.

  Every lowering computes from the result, so every lowering accepts and rejects the same
  arguments, with the same messages.

  Args:
    x_shape: `[N, *spatial, C_in]`, 1 to 3 spatial axes.
    kernel_shape: `[*K, C_in // groups, C_out]`.
    stride, padding, kernel_dilation, input_dilation, groups, precision: as in `correlate`.
    bias_shape: the shape of the bias, or None.

  Returns:
    A `lowering.Correlation`: strides, explicit `(lo, hi)` pads (for 'circular' the amounts of
    'same'), dilations, groups, whether the padding is circular, precision.
  """
  x_shape, kernel_shape = tuple(x_shape), tuple(kernel_shape)
  ndim = len(x_shape) - 2
  if ndim < 1 or ndim > 3:
    raise ValueError(f"x must be [N, *spatial, C] with 1 to 3 spatial axes, got shape {x_shape}")
  if len(kernel_shape) != len(x_shape):
    raise ValueError(f"kernel must be [*K, C_in // groups, C_out] with {ndim} spatial axes to "
                     f"match x of shape {x_shape}, got kernel shape {kernel_shape}")
  if not isinstance(groups, int) or groups < 1:
    raise ValueError(f"groups must be an int >= 1, got {groups!r}")
  channels_in, channels_out = x_shape[-1], kernel_shape[-1]
  if channels_in % groups or channels_out % groups:
    raise ValueError(f"groups={groups} must divide the input channels ({channels_in}) and the "
                     f"output channels ({channels_out})")
  if kernel_shape[-2] * groups != channels_in:
    raise ValueError(f"kernel has {kernel_shape[-2]} input channels per group; with "
                     f"groups={groups} x needs {kernel_shape[-2] * groups} channels, got "
                     f"{channels_in} (x shape {x_shape}, kernel shape {kernel_shape})")
  if bias_shape is not None and tuple(bias_shape) != (channels_out,):
    raise ValueError(f"bias must have shape ({channels_out},), got {tuple(bias_shape)}")
  strides = _per_axis("stride", stride, ndim, minimum=1)
  kernel_dilations = _per_axis("kernel_dilation", kernel_dilation, ndim, minimum=1)
  input_dilations = _per_axis("input_dilation", input_dilation, ndim, minimum=1)
  spatial, kernel_spatial = x_shape[1:-1], kernel_shape[:-2]
  pads = resolve_padding(padding, spatial, kernel_spatial, strides, kernel_dilations,
                         input_dilations)
  for axis, (n, f, d, d_in, (lo, hi)) in enumerate(
      zip(spatial, kernel_spatial, kernel_dilations, input_dilations, pads)):
    if (n - 1) * d_in + 1 + lo + hi < d * (f - 1) + 1:
      raise ValueError(
          f"kernel of size {f} (dilation {d}) is larger than the padded input on spatial axis "
          f"{axis}: input {n}, padding ({lo}, {hi}); x shape {x_shape}, kernel shape "
          f"{kernel_shape}")
  circular = isinstance(padding, str) and padding.lower() == "circular"
  if circular and any(d_in != 1 for d_in in input_dilations):
    raise ValueError(f"padding='circular' needs input_dilation=1, got {input_dilation!r}")
  return lowerings.Correlation(strides, pads, kernel_dilations, input_dilations, groups, circular,
                               precision)


def correlate(x: jax.Array, kernel: jax.Array, *, stride=1, padding: Padding = "valid",
              kernel_dilation=1, input_dilation=1, groups: int = 1,
              bias: jax.Array | None = None, precision=None,
              lowering: str = lowerings.DEFAULT_LOWERING) -> jax.Array:
  """Cross-correlation (deep learning's "convolution") of a batch of images with a kernel.

  `y[b, n, o] = bias[o] + sum_{k, c} x_pad[b, n*S + k*D, g(o)*C_g + c] kernel[k, c, o]`, with
  `C_g = C_in / groups` and `g(o)` the group of output channel `o` (N-d: `n`, `k` multi-indices).

  Args:
    x: `[N, *spatial, C_in]`, 1 to 3 spatial axes.
    kernel: `[*K, C_in // groups, C_out]`, `C_out` divisible by `groups`.
    stride: S, an int or one per spatial axis, >= 1.
    padding: see the module docstring.
    kernel_dilation: D (atrous convolution), >= 1.
    input_dilation: inserts `D_in - 1` zeros between input pixels (fractional stride), >= 1.
    groups: feature groups; group g sees input channels `[g C_g, (g+1) C_g)` only.
    bias: `[C_out]` or None.
    precision: passed to `lax.conv_general_dilated` and the matrix products.
    lowering: how it is computed, same values and gradients up to float rounding (see
      `cnn_jax.ops.lowering`): 'xla' (the reference, `lax.conv_general_dilated`), 'tiled' (tiled
      im2col matrix products for the forward pass and both gradients), 'onednn' (oneDNN's
      kernels through XLA FFI custom calls, CPU only, float32 and, on CPUs with bfloat16
      instructions, bfloat16: `cnn_jax.ops.onednn`; shapes it is not given run as 'xla';
      raises `onednn.OnednnUnavailable` where the extension is not built, not loadable or
      disabled) or 'auto' (per backend, shape and part: on CPU what
      the per-op benchmark measured fastest for this CPU's ISA class among 'xla', 'tiled'
      and 'onednn', for unmeasured shapes the tiled kernel gradient of 1x1 and
      single-channel kernels; elsewhere 'xla').
      Geometries whose gradient XLA:CPU cannot compute (`docs/conv_gradients.md`) are guarded:
      a padding past the kernel's extent is padded explicitly under every lowering; a shape
      whose gradient would abort the process runs tiled under 'auto' and raises a ValueError
      under 'xla'.

  Returns:
    `[N, *spatial', C_out]`.
  """
  x, kernel = jnp.asarray(x), jnp.asarray(kernel)
  lowerings.check_lowering(lowering)
  correlation = resolve_correlation(
      x.shape, kernel.shape, stride=stride, padding=padding, kernel_dilation=kernel_dilation,
      input_dilation=input_dilation, groups=groups,
      bias_shape=None if bias is None else jnp.shape(bias), precision=precision)
  if lowering == "xla":
    lowerings.check_xla_can_differentiate(x.shape, kernel.shape, correlation)
  platform = jax.default_backend()
  tiled = lowerings.tiled_parts(lowering, x.shape, kernel.shape, correlation, platform,
                                (x.dtype, kernel.dtype))
  materialize = lowerings.materializes_kernel_gradient_input(lowering, platform)
  onednn = lowerings.onednn_parts(lowering, x.shape, kernel.shape, correlation,
                                  (x.dtype, kernel.dtype), platform)
  y = lowerings.correlate(x, kernel, correlation, tiled=tiled, materialize_input=materialize,
                          onednn=onednn)
  if bias is not None:
    y = y + bias
  return y


def convolve(x: jax.Array, kernel: jax.Array, **options) -> jax.Array:
  """Mathematical convolution: `correlate` with the kernel flipped in every spatial axis.

  `(f * g)[n] = sum_k f[k] g[n - k]`; with `padding='full'`, `n = 0 .. N + F - 2` covers every
  overlap. Same arguments and shapes as `correlate`.
  """
  kernel = jnp.asarray(kernel)
  spatial_axes = tuple(range(kernel.ndim - 2))
  return correlate(x, jnp.flip(kernel, axis=spatial_axes), **options)


def _as_signal_batch(name: str, array, ndim: int) -> jax.Array:
  array = jnp.asarray(array)
  if array.ndim != ndim:
    raise ValueError(f"{name} must have {ndim} axes, got shape {array.shape}")
  return array


def convolve1d(f, g, padding: Padding = "full") -> jax.Array:
  """`(f * g)[n] = sum_k f[k] g[n - k]` of two 1-D signals `f: [N]`, `g: [F]` -> `[N']`."""
  f, g = _as_signal_batch("f", f, 1), _as_signal_batch("g", g, 1)
  return convolve(f[None, :, None], g[:, None, None], padding=padding)[0, :, 0]


def correlate1d(f, g, padding: Padding = "valid") -> jax.Array:
  """`y[n] = sum_k f[n + k] g[k]` of two 1-D signals `f: [N]`, `g: [F]` -> `[N']`."""
  f, g = _as_signal_batch("f", f, 1), _as_signal_batch("g", g, 1)
  return correlate(f[None, :, None], g[:, None, None], padding=padding)[0, :, 0]


def convolve2d(f, g, padding: Padding = "full") -> jax.Array:
  """`(f * g)[m, n] = sum_{k,l} f[k, l] g[m - k, n - l]` of `f: [M, N]`, `g: [K, L]`."""
  f, g = _as_signal_batch("f", f, 2), _as_signal_batch("g", g, 2)
  return convolve(f[None, :, :, None], g[:, :, None, None], padding=padding)[0, :, :, 0]


def correlate2d(f, g, padding: Padding = "valid") -> jax.Array:
  """`y[m, n] = sum_{k,l} f[m + k, n + l] g[k, l]` of `f: [M, N]`, `g: [K, L]`."""
  f, g = _as_signal_batch("f", f, 2), _as_signal_batch("g", g, 2)
  return correlate(f[None, :, :, None], g[:, :, None, None], padding=padding)[0, :, :, 0]


def periodic_convolve(f, g) -> jax.Array:
  """Circular convolution of two periodic signals of the same shape, `[*N]` (1 to 3 axes).

  `(f * g)[n] = sum_k f[k] g[(n - k) mod N]`, the discrete analogue of
  `int_{-pi}^{pi} f(t) g(x - t) dt` (times the grid spacing); equals `ifft(fft(f) fft(g))`.
  """
  f, g = jnp.asarray(f), jnp.asarray(g)
  if f.shape != g.shape or not 1 <= f.ndim <= 3:
    raise ValueError(f"f and g must have the same shape with 1 to 3 axes, got {f.shape} and "
                     f"{g.shape}")
  # Wrap-pad N - 1 on the low side: y[n] = sum_j g[j] f[(n - j) mod N].
  f_wrapped = jnp.pad(f, tuple((n - 1, 0) for n in f.shape), mode="wrap")
  return convolve(f_wrapped[None, ..., None], g[..., None, None], padding="valid")[0, ..., 0]


def conv_transpose(y: jax.Array, kernel: jax.Array, *, input_shape: Sequence[int] | None = None,
                   stride=1, padding: Padding = "valid", kernel_dilation=1, groups: int = 1,
                   output_padding=0, precision=None,
                   lowering: str = lowerings.DEFAULT_LOWERING) -> jax.Array:
  """Transposed convolution: the adjoint of `correlate(., kernel, ...)` with the same options.

  `<correlate(x, w), y> = <conv_transpose(y, w), x>` for all x, y: it maps an output-shaped
  `y: [N, *spatial', C_out]` back to the input shape `[N, *spatial, C_in]`, spreading each value
  over the kernel's footprint (the "deconvolution" of Zeiler & Fergus and of decoders). It is
  computed as the exact linear transpose, which XLA lowers to a convolution with input dilation
  `S` and the flipped kernel.

  Args:
    y: `[N, *spatial', C_out]`.
    kernel: `[*K, C_in // groups, C_out]`, as given to `correlate`.
    input_shape: the shape of x. Strided convolutions map several input sizes to one output size;
      when None: for 'valid', 'full' and explicit padding the smallest input that produces
      `spatial'`, `(n' - 1) S + D (F - 1) + 1 - P_lo - P_hi`; for 'same'/'circular' `S * n'`.
    output_padding: an int or one per spatial axis, added to that default size (PyTorch's
      `ConvTranspose2d(output_padding=...)` with symmetric `padding=P`); needs input_shape None
      and must be below S (or D), or no input of that size maps to `spatial'`.
    lowering: the lowering of the correlation it transposes, as in `correlate` ('xla': XLA's
      transposed convolution; 'auto' differs from it only where XLA would abort).
  """
  lowerings.check_lowering(lowering)
  y, kernel = jnp.asarray(y), jnp.asarray(kernel)
  ndim = y.ndim - 2
  if kernel.ndim != y.ndim:
    raise ValueError(f"kernel must have {y.ndim} axes to match y of shape {y.shape}, got "
                     f"{kernel.shape}")
  if y.shape[-1] != kernel.shape[-1]:
    raise ValueError(f"y has {y.shape[-1]} channels but the kernel produces {kernel.shape[-1]}")
  output_pads = _per_axis("output_padding", output_padding, ndim, minimum=0)
  if input_shape is not None and any(output_pads):
    raise ValueError(f"output_padding={output_padding!r} needs input_shape=None (input_shape "
                     f"already fixes the size), got input_shape={tuple(input_shape)}")
  if input_shape is None:
    strides = _per_axis("stride", stride, ndim, minimum=1)
    dilations = _per_axis("kernel_dilation", kernel_dilation, ndim, minimum=1)
    if isinstance(padding, str) and padding.lower() in ("same", "circular"):
      spatial = tuple(s * n for s, n in zip(strides, y.shape[1:-1]))
    else:
      # The pads of 'valid', 'full' and explicit specs do not depend on the input size.
      pads = resolve_padding(padding, y.shape[1:-1], kernel.shape[:-2], strides, dilations)
      spatial = tuple((n - 1) * s + d * (f - 1) + 1 - lo - hi for n, f, s, d, (lo, hi) in zip(
          y.shape[1:-1], kernel.shape[:-2], strides, dilations, pads))
    spatial = tuple(n + p for n, p in zip(spatial, output_pads))
    input_shape = (y.shape[0],) + spatial + (kernel.shape[-2] * groups,)

  def forward(x):
    return correlate(x, kernel, stride=stride, padding=padding, kernel_dilation=kernel_dilation,
                     groups=groups, precision=precision, lowering=lowering)

  expected = jax.eval_shape(forward, jax.ShapeDtypeStruct(tuple(input_shape), y.dtype)).shape
  if expected != y.shape:
    raise ValueError(f"y has shape {y.shape}, but correlate maps input_shape {tuple(input_shape)} "
                     f"to {expected}")
  (x,) = jax.linear_transpose(forward, jax.ShapeDtypeStruct(tuple(input_shape), y.dtype))(y)
  return x
