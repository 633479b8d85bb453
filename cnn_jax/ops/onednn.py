"""oneDNN's convolution kernels as three JAX primitives (XLA FFI custom calls, CPU; float32, and
bfloat16 where this CPU runs oneDNN's bfloat16 convolutions).

The compiled extension `cnn_jax.ops._onednn_conv` (`csrc/onednn_conv.cc`, built on install on
Linux x86_64 when it can be) holds three XLA FFI handlers, one per pass of a correlation
`y[n, o] = sum_{k, c} x_pad[n S + k D, c] w[k, c, o]` (channels-last x, HWIO w):

  forward_p(x, w) -> y        backward_data_p(dy, w) -> dx        backward_weights_p(x, dy) -> dw

Each is bilinear, and the transposes of each in either argument are the others (`<dx, bd(dy, w)>
= <fwd(dx, w), dy> = <w, bw(dx, dy)>`), so every derivative of any order, forward or reverse,
is one of the three. `cnn_jax.ops.lowering` calls `forward_p` inside its `custom_jvp`: reverse
mode transposes the tangent maps `forward_p(dx, w)` and `forward_p(x, dw)` into
`backward_data_p` and `backward_weights_p`.

Availability (`check_available`, `available`): the extension must import, libdnnl.so.3 (the
onednn-cpu-gomp wheel) must load, JAX's default backend must be the CPU, and
`CNN_JAX_ONEDNN=0` must not be set. bfloat16 operands also need `bfloat16_supported()`: a CPU
with bfloat16 instructions (AVX512-BF16 or AMX). Elsewhere bfloat16 convolutions run in XLA:
oneDNN emulates bfloat16 on plain AVX-512, slower than XLA, and has no optimized bfloat16 kernel
on AVX2. Nothing is loaded or registered until first asked.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import importlib.metadata
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from cnn_jax.ops.arithmetic import output_size

# The environment switch: "0" makes oneDNN unavailable (lowering='auto' then never uses it).
ENVIRONMENT_SWITCH = "CNN_JAX_ONEDNN"
PASSES = ("forward", "backward_data", "backward_weights")
# The handlers of the extension (`<pass>`: float32, `<pass>_bf16`: bfloat16) and their targets.
_HANDLERS = {(name, dtype): name + suffix for name in PASSES
             for dtype, suffix in ((jnp.dtype(jnp.float32), ""),
                                   (jnp.dtype(jnp.bfloat16), "_bf16"))}
_TARGETS = {key: f"cnn_jax_onednn_{handler}" for key, handler in _HANDLERS.items()}


class OnednnUnavailable(RuntimeError):
  """lowering='onednn' was asked for where oneDNN cannot run."""


@functools.cache
def _load() -> str | None:
  """Loads libdnnl and the extension and registers the FFI targets, once; None, or the reason
  oneDNN is unavailable."""
  if os.environ.get(ENVIRONMENT_SWITCH, "1") == "0":
    return f"disabled by {ENVIRONMENT_SWITCH}=0"
  try:
    _preload_libdnnl()
    extension = importlib.import_module("cnn_jax.ops._onednn_conv")
  except (ImportError, OSError) as error:
    return (f"the oneDNN extension did not load ({type(error).__name__}: {error}); it is "
            "built on `pip install` on Linux x86_64 with the onednn-cpu-gomp wheel")
  try:
    for key, target in _TARGETS.items():
      jax.ffi.register_ffi_target(target, extension.targets[_HANDLERS[key]], platform="cpu")
  except Exception as error:  # e.g. an XLA FFI API version this jaxlib does not accept
    return f"XLA did not accept the oneDNN handlers ({type(error).__name__}: {error})"
  return None


def _preload_libdnnl() -> None:
  """Loads the onednn-cpu-gomp wheel's libdnnl.so.3 by path, so the extension finds it whatever
  its own location (an in-place build, an editable install); else the extension's rpath."""
  try:
    dist = importlib.metadata.distribution("onednn-cpu-gomp")
  except importlib.metadata.PackageNotFoundError:
    return
  for file in dist.files or ():
    if str(file).endswith("libdnnl.so.3"):
      ctypes.CDLL(str(dist.locate_file(file).resolve()), mode=ctypes.RTLD_GLOBAL)
      return


def unavailable_reason() -> str | None:
  """None where oneDNN can run now, else why not (one line)."""
  reason = _load()
  if reason is None and jax.default_backend() != "cpu":
    return f"oneDNN runs on the CPU only; JAX's default backend is {jax.default_backend()!r}"
  return reason


def available() -> bool:
  return unavailable_reason() is None


@functools.cache
def bfloat16_supported() -> bool:
  """Whether oneDNN runs here with bfloat16 convolution kernels that use this CPU's bfloat16
  instructions (all three passes of a probe convolution)."""
  return available() and importlib.import_module("cnn_jax.ops._onednn_conv").bfloat16_supported()


def check_available() -> None:
  """Raises `OnednnUnavailable` with the reason where oneDNN cannot run."""
  reason = unavailable_reason()
  if reason is not None:
    raise OnednnUnavailable(f"lowering='onednn' is unavailable: {reason}; use lowering='auto' "
                            "or 'xla'")


def shape_supported(x_shape, kernel_shape, strides, input_dilations, groups: int, dtypes, *,
                    pads, kernel_dilations) -> bool:
  """Whether oneDNN is given this correlation, as oneDNN would see it (circular padding already
  applied to `x_shape`, `pads` explicit `(lo, hi)` per spatial axis).

  Not given: operands (`dtypes`) other than all float32 or all bfloat16 (bfloat16 only where
  `bfloat16_supported()`), input dilation, empty arrays, and the strided 1x1 kernels with fewer
  than 16 input channels per group, for which oneDNN computes intermittently wrong kernel
  gradients (and can hang) with channels-last input (uxlfoundation/oneDNN#6035: < 8 channels on
  AVX2, < 16 on AVX-512). In bfloat16 also not given, for the same intermittent garbage in
  oneDNN 3.2's bfloat16 kernel gradient on the AVX512-BF16 EPYC (float32 right):
  - a stride larger than the kernel along an axis (input pixels no tap reads; e.g. a 1-D kernel
    of 2 at stride 3: 25 of 30 calls wrong, whatever the channel count);
  - a stride above 1 along an axis where some tap reads only padding (`tap_reads_only_padding`;
    e.g. a 1-D input of size 1, 16 channels, kernel 2, stride 2, padding 1: 29 of 30 calls
    wrong; a 1x1 input, 3x3 kernel, stride 2, padding 1: 23 of 30; an input of 2, kernel 3,
    stride 3, 'same'). Such taps need an input smaller than the kernel's reach, so no model's
    usual layer is affected.
  """
  del groups  # any group count: the channels below are per group
  dtypes = {jnp.dtype(d) for d in dtypes}
  if dtypes == {jnp.dtype(jnp.bfloat16)}:
    axes = list(zip(x_shape[1:-1], kernel_shape[:-2], kernel_dilations, strides, pads))
    if (not bfloat16_supported() or any(s > k for _, k, _, s, _ in axes)
        or any(s > 1 and tap_reads_only_padding(n, k, d, s, pad)
               for n, k, d, s, pad in axes)):
      return False
  elif dtypes != {jnp.dtype(jnp.float32)}:
    return False
  if any(d != 1 for d in input_dilations):
    return False
  if 0 in tuple(x_shape) + tuple(kernel_shape):
    return False
  one_by_one = all(k == 1 for k in kernel_shape[:-2])
  if one_by_one and any(s > 1 for s in strides) and kernel_shape[-2] < 16:
    return False
  return True


def tap_reads_only_padding(size: int, kernel: int, dilation: int, stride: int,
                           pad: tuple[int, int]) -> bool:
  """Whether some tap `j` of a kernel along one axis reads padding at every output position:
  `i S + j D - P_lo` outside `[0, size)` for every output `i`."""
  outputs = output_size(size, kernel, stride, pad, dilation)
  return any(not any(0 <= i * stride + j * dilation - pad[0] < size for i in range(outputs))
             for j in range(kernel))


def _output_shape(x_shape, kernel_spatial, channels_out, strides, pads, dilations):
  return (x_shape[0],) + tuple(
      output_size(n + lo + hi, k, s, 0, d) for n, k, s, (lo, hi), d in zip(
          x_shape[1:-1], kernel_spatial, strides, pads, dilations)) + (channels_out,)


# Every primitive takes the whole geometry as parameters: input_spatial and kernel_spatial are
# what the transposes need to know of the operand they produce.
def _forward_abstract(x, w, *, input_spatial, kernel_spatial, strides, pads, dilations, groups):
  shape = _output_shape(x.shape, kernel_spatial, w.shape[-1], strides, pads, dilations)
  return jax.core.ShapedArray(shape, x.dtype)


def _backward_data_abstract(dy, w, *, input_spatial, kernel_spatial, strides, pads, dilations,
                            groups):
  return jax.core.ShapedArray((dy.shape[0],) + tuple(input_spatial) + (w.shape[-2] * groups,),
                              dy.dtype)


def _backward_weights_abstract(x, dy, *, input_spatial, kernel_spatial, strides, pads,
                               dilations, groups):
  return jax.core.ShapedArray(tuple(kernel_spatial) + (x.shape[-1] // groups, dy.shape[-1]),
                              x.dtype)


forward_p = Primitive("onednn_conv_forward")
backward_data_p = Primitive("onednn_conv_backward_data")
backward_weights_p = Primitive("onednn_conv_backward_weights")
for _primitive, _abstract in ((forward_p, _forward_abstract),
                              (backward_data_p, _backward_data_abstract),
                              (backward_weights_p, _backward_weights_abstract)):
  _primitive.def_abstract_eval(_abstract)
  _primitive.def_impl(functools.partial(
      lambda primitive, *args, **params: jax.jit(primitive.bind, static_argnames=tuple(params))(
          *args, **params), _primitive))

# The transposes: forward in x -> backward_data, in w -> backward_weights, and so on.
ad.defbilinear(forward_p,
               lambda ct, x, w, **p: backward_data_p.bind(ct, w, **p),
               lambda ct, x, w, **p: backward_weights_p.bind(x, ct, **p))
ad.defbilinear(backward_data_p,
               lambda ct, dy, w, **p: forward_p.bind(ct, w, **p),
               lambda ct, dy, w, **p: backward_weights_p.bind(ct, dy, **p))
ad.defbilinear(backward_weights_p,
               lambda ct, x, dy, **p: backward_data_p.bind(dy, ct, **p),
               lambda ct, x, dy, **p: forward_p.bind(x, ct, **p))


def _lowering(name: str):
  """The pass's custom call, to the float32 or the bfloat16 handler by the operands' dtype."""
  lowerings = {dtype: jax.ffi.ffi_lowering(target)
               for (pass_name, dtype), target in _TARGETS.items() if pass_name == name}

  def rule(ctx, a, b, *, input_spatial, kernel_spatial, strides, pads, dilations, groups):
    as_array = lambda values: np.asarray(values, np.int64)
    lower = lowerings[jnp.dtype(ctx.avals_in[0].dtype)]
    return lower(ctx, a, b, strides=as_array(strides), dilations=as_array(dilations),
                 pads_lo=as_array([lo for lo, _ in pads]),
                 pads_hi=as_array([hi for _, hi in pads]), groups=np.int64(groups))
  return rule


for _primitive, _name in zip((forward_p, backward_data_p, backward_weights_p), PASSES):
  mlir.register_lowering(_primitive, _lowering(_name), platform="cpu")


def _batch(primitive: Primitive, folds: int | None):
  """vmap: the batch axis folded into the images axis N where only operand `folds` is batched
  (an activation whose images give the output's), else one call per batch element."""
  def rule(args, dims, **params):
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    batched = [d is not None for d in dims]
    if folds is not None and batched == [i == folds for i in range(2)]:
      operand = jnp.moveaxis(args[folds], dims[folds], 0)
      args = list(args)
      args[folds] = operand.reshape((-1,) + operand.shape[2:])
      out = primitive.bind(*args, **params)
      return out.reshape((size, -1) + out.shape[1:]), 0
    moved = [jnp.moveaxis(a, d, 0) if b else a for a, d, b in zip(args, dims, batched)]

    def one(operands):
      operands = iter(operands)
      return primitive.bind(*[next(operands) if b else a for a, b in zip(moved, batched)],
                            **params)
    return lax.map(one, [a for a, b in zip(moved, batched) if b]), 0
  return rule


batching.primitive_batchers[forward_p] = _batch(forward_p, folds=0)
batching.primitive_batchers[backward_data_p] = _batch(backward_data_p, folds=0)
batching.primitive_batchers[backward_weights_p] = _batch(backward_weights_p, folds=None)


def geometry_params(x_shape, kernel_shape, strides, pads, dilations, groups) -> dict:
  """The primitives' parameters for `x: [N, *spatial, C_in]`, `kernel: [*K, C_in/G, C_out]`."""
  return dict(input_spatial=tuple(x_shape[1:-1]), kernel_spatial=tuple(kernel_shape[:-2]),
              strides=tuple(strides), pads=tuple(map(tuple, pads)), dilations=tuple(dilations),
              groups=groups)


def correlate(x: jax.Array, kernel: jax.Array, params: dict) -> jax.Array:
  """`y[b, n, o] = sum_{k, c} x_pad[b, n S + k D, g(o) C_g + c] kernel[k, c, o]` in oneDNN:
  `[N, *spatial, C_in] x [*K, C_in // G, C_out] -> [N, *spatial', C_out]` (`geometry_params`).

  Raises `OnednnUnavailable` where oneDNN cannot run (`check_available`).
  """
  check_available()
  return forward_p.bind(x, kernel, **params)
