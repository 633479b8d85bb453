"""Per-op timings: every convolution and max-pool shape of the benchmarked models.

The shapes are read from the models themselves (the `conv_general_dilated` and
`reduce_window_max` equations of their traced eval pass with the reference lowering), so the
table follows the models. For each conv shape: forward, input gradient (dX) and kernel gradient
(dW) of `ops.correlate` with each lowering that can run here: 'jax-xla' (the reference, XLA's
convolution), 'jax-tiled' (every part as tiled im2col products), 'jax-auto' (the default: per
shape, the parts that measured faster) and 'jax-onednn' (oneDNN's kernels, where the extension
is built), and in torch (channels-last, oneDNN); for each max-pool shape: forward and backward
of `ops.max_pool` with XLA's reduce_window and select_and_scatter ('jax-xla') and through
switches ('jax-tiled', which 'auto' uses on CPU); for each blur-pool shape of the sweep's
blurred CNN (`BLUR_SHAPES`): forward and backward of `ops.blur_pool` as XLA's depthwise
convolution ('jax-xla') and as separable strided slices ('jax-tiled', which 'auto' uses on CPU),
and torch's anti-aliased-CNN form (reflection pad, depthwise `conv2d` at the stride).
"""

from __future__ import annotations

import functools
import json
import statistics
from typing import NamedTuple

import jax
import jax.numpy as jnp

from benchmarks import environment, steps
from cnn_jax import ops
from cnn_jax.ops import lowering


class ConvShape(NamedTuple):
  """One `correlate` call: `x: [N, H, W, C_in]`, `kernel: [KH, KW, C_in // groups, C_out]`."""
  x: tuple[int, ...]
  kernel: tuple[int, ...]
  stride: tuple[int, ...]
  padding: tuple[tuple[int, int], ...]
  dilation: tuple[int, ...]
  groups: int

  def signature(self) -> str:
    """`lowering.conv_signature`: the key of 'auto's table."""
    correlation = lowering.Correlation(self.stride, self.padding, self.dilation,
                                       (1,) * len(self.stride), self.groups, False)
    return lowering.conv_signature(self.x, self.kernel, correlation)

  def label(self) -> str:
    n, h, w, c_in = self.x
    kh, kw, _, c_out = self.kernel
    stride = f"/{self.stride[0]}" if self.stride[0] > 1 else ""
    return f"{kh}x{kw}{stride} {c_in}->{c_out} {h}x{w} n{n}"


class PoolShape(NamedTuple):
  """One `max_pool` call on `x: [N, H, W, C]`."""
  x: tuple[int, ...]
  window: tuple[int, ...]
  stride: tuple[int, ...]
  padding: tuple[tuple[int, int], ...]

  def label(self) -> str:
    n, h, w, c = self.x
    return f"max {self.window[0]}/{self.stride[0]} {c}ch {h}x{w} n{n}"


class BlurShape(NamedTuple):
  """One `blur_pool` call on `x: [N, H, W, C]` (reflect padding)."""
  x: tuple[int, ...]
  stride: int
  filter_size: int

  def label(self) -> str:
    n, h, w, c = self.x
    return f"blur {self.filter_size}/{self.stride} {c}ch {h}x{w} n{n}"


# The blur pools of the sweep's 'cnn_blur' (experiments.model_zoo: the small CNN's 16 and 32
# channels after each dense max pool) at its batch of 64.
BLUR_SHAPES = (BlurShape((64, 28, 28, 16), 2, 3), BlurShape((64, 14, 14, 32), 2, 3))


def _equations(jaxpr):
  for equation in jaxpr.eqns:
    yield equation
    for value in equation.params.values():
      inner = getattr(value, "jaxpr", value)
      if hasattr(inner, "eqns"):
        yield from _equations(inner)


def model_shapes(spec: steps.ModelSpec) -> tuple[list[ConvShape], list[PoolShape]]:
  """The distinct conv and max-pool shapes of one eval pass of `spec`'s model, in order."""
  model = steps.build_model(spec, "xla")
  images, _ = steps.synthetic_batch(spec)
  variables = jax.eval_shape(functools.partial(model.init, train=False),
                             {"params": jax.random.key(0)}, images[:1])
  jaxpr = jax.make_jaxpr(functools.partial(model.apply, train=False))(variables, images)
  convs, pools = [], []
  for equation in _equations(jaxpr.jaxpr):
    params = equation.params
    if equation.primitive.name == "conv_general_dilated":
      shape = ConvShape(tuple(equation.invars[0].aval.shape), tuple(equation.invars[1].aval.shape),
                        tuple(params["window_strides"]), tuple(map(tuple, params["padding"])),
                        tuple(params["rhs_dilation"]), params["feature_group_count"])
      if shape not in convs:
        convs.append(shape)
    elif equation.primitive.name == "reduce_window_max":
      shape = PoolShape(tuple(equation.invars[0].aval.shape),
                        tuple(params["window_dimensions"][1:-1]),
                        tuple(params["window_strides"][1:-1]),
                        tuple(map(tuple, params["padding"][1:-1])))
      if shape not in pools:
        pools.append(shape)
  return convs, pools


# On CPU 'auto' pools through the switches, as 'tiled' does.
POOL_LOWERINGS = {name: functools.partial(ops.max_pool, lowering=name) for name in ("xla", "tiled")}


def _jax_conv_ops(shape: ConvShape, correlate) -> dict:
  """Jitted forward, dX and dW of one conv shape with one lowering."""
  conv = functools.partial(correlate, stride=shape.stride, padding=shape.padding,
                           kernel_dilation=shape.dilation, groups=shape.groups)
  return {
      "forward": jax.jit(conv),
      "dx": jax.jit(lambda x, w, dy: jax.vjp(lambda x: conv(x, w), x)[1](dy)[0]),
      "dw": jax.jit(lambda x, w, dy: jax.vjp(lambda w: conv(x, w), w)[1](dy)[0]),
  }


def _torch_conv_ops(shape: ConvShape) -> dict | None:
  """torch forward, dX and dW (autograd of one output) in channels-last.

  torch pads symmetrically; the larger of the two amounts gives the same output size and cost.
  None when it does not give the same output size.
  """
  import torch
  from torch.nn import functional as F
  n, h, w, c_in = shape.x
  kh, kw, c_group, c_out = shape.kernel
  padding = tuple(max(pair) for pair in shape.padding)
  x = torch.randn(n, c_in, h, w).contiguous(memory_format=torch.channels_last)
  kernel = torch.randn(c_out, c_group, kh, kw).contiguous(memory_format=torch.channels_last)
  conv = functools.partial(F.conv2d, stride=shape.stride, padding=padding,
                           dilation=shape.dilation, groups=shape.groups)
  x.requires_grad_(True)
  kernel.requires_grad_(True)
  y = conv(x, kernel)
  expected = [(size + lo + hi - d * (k - 1) - 1) // s + 1 for size, (lo, hi), k, s, d in zip(
      (h, w), shape.padding, (kh, kw), shape.stride, shape.dilation)]
  if list(y.shape[2:]) != expected:
    return None
  dy = torch.randn_like(y)

  def forward():
    with torch.no_grad():
      conv(x, kernel)

  return {
      "forward": forward,
      "dx": lambda: torch.autograd.grad(y, x, dy, retain_graph=True),
      "dw": lambda: torch.autograd.grad(y, kernel, dy, retain_graph=True),
  }


def conv_record(shape: ConvShape, repeats: int) -> dict:
  """Milliseconds of forward, dX and dW per implementation, measured round-robin."""
  x = jax.random.normal(jax.random.key(0), shape.x, jnp.float32)
  kernel = jax.random.normal(jax.random.key(1), shape.kernel, jnp.float32)
  dy = None
  runs = {}
  for name in ops.lowering.available_lowerings():
    functions = _jax_conv_ops(shape, functools.partial(ops.correlate, lowering=name))
    dy = jax.random.normal(jax.random.key(2), functions["forward"](x, kernel).shape)
    runs[f"jax-{name}"] = {
        "forward": functools.partial(lambda f: f(x, kernel).block_until_ready(),
                                     functions["forward"]),
        "dx": functools.partial(lambda f: f(x, kernel, dy).block_until_ready(), functions["dx"]),
        "dw": functools.partial(lambda f: f(x, kernel, dy).block_until_ready(), functions["dw"]),
    }
  torch_ops = _torch_conv_ops(shape)
  if torch_ops is not None:
    runs["torch"] = torch_ops
  return _round_robin(runs, repeats) | {"op": "conv", "shape": shape.label(),
                                        "signature": shape.signature(),
                                        "flops": _conv_flops(shape)}


# The per-op table's parts, as 'auto's table names them.
_TABLE_PARTS = {"forward": "forward", "dx": "input_gradient", "dw": "kernel_gradient"}
# How much faster than oneDNN another lowering must measure for the table to choose it: the
# per-op medians on 2 shared cores move by several percent between runs, and a whole train step
# with a mixed table measured slower than with oneDNN everywhere.
ONEDNN_MARGIN = 0.15


def table_choice(record: dict, key: str) -> str:
  """The fastest of 'xla', 'tiled' and 'onednn' for one part of a `conv_record` (medians),
  oneDNN unless another is at least `ONEDNN_MARGIN` faster."""
  times = {name: record[f"jax-{name} {key} ms"] for name in ("xla", "tiled", "onednn")
           if f"jax-{name} {key} ms" in record}
  fastest = min(times, key=times.get)
  if "onednn" in times and times[fastest] > (1 - ONEDNN_MARGIN) * times["onednn"]:
    return "onednn"
  return fastest


def write_auto_table(records, path: str = lowering.AUTO_TABLE) -> dict:
  """Adds to 'auto's table (`lowering.auto_choices`) this CPU's choice per conv shape and part
  (`table_choice`); returns the table."""
  try:
    with open(path) as file:
      table = json.load(file)
  except FileNotFoundError:
    table = {}
  choices = table.setdefault(lowering.cpu_isa(), {})
  for record in records:
    if record.get("op") != "conv":
      continue
    choices[record["signature"]] = {part: table_choice(record, key)
                                    for key, part in _TABLE_PARTS.items()}
  with open(path, "w") as file:
    json.dump({isa: dict(sorted(shapes.items())) for isa, shapes in sorted(table.items())},
              file, indent=1)
    file.write("\n")
  return table


def _conv_flops(shape: ConvShape) -> float:
  """Multiply-adds x 2 of the forward pass (dX and dW cost the same)."""
  n, h, w, _ = shape.x
  out = [(size + lo + hi - d * (k - 1) - 1) // s + 1 for size, (lo, hi), k, s, d in zip(
      (h, w), shape.padding, shape.kernel[:2], shape.stride, shape.dilation)]
  kh, kw, c_group, c_out = shape.kernel
  return 2.0 * n * out[0] * out[1] * c_out * kh * kw * c_group


def _jax_forward_backward(function, x: jax.Array) -> dict:
  """The jitted forward and backward (the VJP of a random cotangent) of `function` at `x`, as
  timed runs."""
  forward = jax.jit(function)
  dy = jax.random.normal(jax.random.key(2), forward(x).shape)
  backward = jax.jit(lambda x, dy: jax.vjp(function, x)[1](dy)[0])
  return {"forward": lambda: forward(x).block_until_ready(),
          "backward": lambda: backward(x, dy).block_until_ready()}


def _torch_forward_backward(function, x_shape: tuple[int, ...]) -> tuple[dict, tuple]:
  """torch's forward (no grad) and backward of `function` on a random channels-last input of
  NHWC shape `x_shape`, as timed runs, and the output's spatial shape."""
  import torch
  n, h, w, c = x_shape
  tx = torch.randn(n, c, h, w).contiguous(memory_format=torch.channels_last)
  tx.requires_grad_(True)
  ty = function(tx)
  tdy = torch.randn_like(ty)

  def forward():
    with torch.no_grad():
      function(tx)

  return ({"forward": forward,
           "backward": lambda: torch.autograd.grad(ty, tx, tdy, retain_graph=True)},
          tuple(ty.shape[2:]))


def pool_record(shape: PoolShape, repeats: int) -> dict:
  """Milliseconds of max-pool forward and backward per implementation."""
  from torch.nn import functional as F
  x = jax.random.normal(jax.random.key(0), shape.x, jnp.float32)
  runs = {}
  for name, pool in POOL_LOWERINGS.items():
    pool = functools.partial(pool, window=shape.window, stride=shape.stride, padding=shape.padding)
    runs[f"jax-{name}"] = _jax_forward_backward(pool, x)
  # torch pads symmetrically: the larger amount gives the same output size and the same cost.
  padding = tuple(max(pair) for pair in shape.padding)
  torch_runs, torch_size = _torch_forward_backward(
      functools.partial(F.max_pool2d, kernel_size=shape.window, stride=shape.stride,
                        padding=padding), shape.x)
  if torch_size == tuple(jax.eval_shape(pool, x).shape[1:3]):
    runs["torch"] = torch_runs
  return _round_robin(runs, repeats) | {"op": "max_pool", "shape": shape.label()}


def torch_blur_pool(shape: BlurShape):
  """torch's blur pool of `shape` on `[N, C, H, W]` (antialiased-cnns' form): reflection pad,
  then a depthwise `conv2d` with the binomial filter at the stride."""
  import torch
  from torch.nn import functional as F
  channels = shape.x[-1]
  taps = torch.tensor(ops.binomial_filter(shape.filter_size, 2).tolist(), dtype=torch.float32)
  kernel = taps[None, None].repeat(channels, 1, 1, 1)
  lo, hi = (shape.filter_size - 1) // 2, shape.filter_size // 2
  return lambda tx: F.conv2d(F.pad(tx, (lo, hi, lo, hi), mode="reflect"), kernel,
                             stride=shape.stride, groups=channels)


def blur_record(shape: BlurShape, repeats: int) -> dict:
  """Milliseconds of blur-pool forward and backward per implementation."""
  x = jax.random.normal(jax.random.key(0), shape.x, jnp.float32)
  runs = {f"jax-{name}": _jax_forward_backward(
      functools.partial(ops.blur_pool, stride=shape.stride, filter_size=shape.filter_size,
                        lowering=name), x) for name in ("xla", "tiled")}
  runs["torch"], _ = _torch_forward_backward(torch_blur_pool(shape), shape.x)
  return _round_robin(runs, repeats) | {"op": "blur_pool", "shape": shape.label()}


def _round_robin(runs: dict, repeats: int) -> dict:
  """`{impl: {part: run}}` -> `{'impl part ms': median}`, one warm-up, then rounds that visit
  every implementation in turn so that a load change hits all of them alike."""
  for parts in runs.values():
    for run in parts.values():
      run()
  times = {(impl, part): [] for impl, parts in runs.items() for part in parts}
  for _ in range(repeats):
    for impl, parts in runs.items():
      for part, run in parts.items():
        times[(impl, part)].append(environment.median_seconds(run, 1))
  return {f"{impl} {part} ms": 1e3 * statistics.median(values)
          for (impl, part), values in times.items()}
