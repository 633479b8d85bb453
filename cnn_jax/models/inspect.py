"""Looking inside a model: parameter counts per layer, FLOPs of a forward pass, receptive field.

Parameter counts and FLOPs work without allocating the model's parameters: shapes come from
`jax.eval_shape` on `init`, FLOPs from XLA's cost analysis of the compiled (never run) forward.

Receptive field, read off the traced computation of any model: `ops.arithmetic.receptive_field`
needs the stack of conv and pooling geometries between the input and a layer, and
`traced_receptive_field` finds it by tracing `images -> activation` to a jaxpr and walking it
from the input: every `conv_general_dilated` and `reduce_window` (max, sum, average pooling) on
the path contributes one `LayerGeometry` per spatial axis, a spatial `pad` its low padding (and
so does a periodic or reflecting `jnp.pad`, which traces to a concatenation of slices), a
strided slice `x[:, ::S]` a window of one pixel and stride S, elementwise ops pass the geometry
through, and where two paths meet (residual additions) the one with the larger field is kept, as
Araujo et al. (2019) prescribe. An operation that mixes spatial positions in any other way (a
dense layer after flattening, a global pooling) makes the unit see the whole image. The padding
is the one the layers really apply, so `start` is right for strided 'same' layers too (whose low
padding depends on the input size). Activations are channels-last, `[N, *spatial, C]`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core

from cnn_jax.ops import onednn
from cnn_jax.ops.arithmetic import LayerGeometry, ReceptiveField, receptive_field

def param_shapes(model: nn.Module, input_shape: Sequence[int]):
  """The 'params' pytree of `model.init` as `jax.ShapeDtypeStruct`s (nothing allocated).

  Args:
    model: a model taking `(x, train)`.
    input_shape: `[N, H, W, C]` of the example input.
  """
  variables = jax.eval_shape(
      lambda key: model.init(key, jnp.zeros(tuple(input_shape), jnp.float32), train=False),
      jax.random.key(0))
  return variables["params"]


def count_params(params) -> int:
  """Total number of scalars in a pytree of arrays or shape structs."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def param_table(params) -> str:
  """A Markdown table of parameters per layer (the module owning each leaf), in tree order.

  Rows `| layer | shapes | params |`, e.g. `| Block1_1/Conv1 | kernel [3, 3, 64, 64] | 36,864 |`,
  then a total row.
  """
  rows: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    keys = [str(getattr(entry, "key", entry)) for entry in path]
    rows.setdefault("/".join(keys[:-1]) or "(top)", []).append((keys[-1], tuple(leaf.shape)))
  lines = ["| layer | shapes | params |", "|---|---|---|"]
  for layer, leaves in rows.items():
    shapes = ", ".join(f"{name} {list(shape)}" for name, shape in leaves)
    lines.append(f"| {layer} | {shapes} | {sum(math.prod(s) for _, s in leaves):,} |")
  lines.append(f"| **total** | | **{count_params(params):,}** |")
  return "\n".join(lines)


def forward_flops(model: nn.Module, input_shape: Sequence[int], *, train: bool = False) -> float:
  """FLOPs of one forward pass as counted by XLA:CPU's cost analysis of the compiled function.

  XLA counts a multiply-add as 2 FLOPs, so multiply-adds (the unit of He et al.'s Table 1)
  are about half of this. Parameters are abstract: the forward is compiled, never run. A model
  with a `lowering` field is counted with lowering='xla': XLA does not see inside the oneDNN
  custom calls of the default lowering.

  Args:
    model: a model taking `(x, train)`.
    input_shape: `[N, H, W, C]`.
    train: count the training-mode forward (batch statistics, dropout) instead of inference.

  Returns:
    The FLOP count for the whole batch.
  """
  input_shape = tuple(input_shape)
  if "lowering" in getattr(model, "__dataclass_fields__", {}):
    model = model.clone(lowering="xla")
  variables = jax.eval_shape(
      lambda key: model.init(key, jnp.zeros(input_shape, jnp.float32), train=False),
      jax.random.key(0))

  def forward(variables, x):
    return model.apply(variables, x, train=train, rngs={"dropout": jax.random.key(0)},
                       mutable=["batch_stats"] if train else False)

  # Counted by the CPU compiler on every backend: XLA:GPU's cost analysis leaves out the FLOPs
  # of the cuDNN convolutions it calls (a ResNet's count drops by orders of magnitude).
  with jax.default_device(jax.local_devices(backend="cpu")[0]):
    compiled = jax.jit(forward).lower(variables, jax.ShapeDtypeStruct(input_shape,
                                                                      jnp.float32)).compile()
  analysis = compiled.cost_analysis()
  # Older jaxlibs return one dict per device program.
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return float(analysis["flops"])


# A value's geometry: per spatial axis, the layers between the input and it; or WHOLE_IMAGE.
Path = tuple[tuple[LayerGeometry, ...], ...]
WHOLE_IMAGE = "whole image"

ONEDNN_FORWARD = onednn.forward_p.name  # lowering='onednn' (and 'auto' where it picks it)
_POOLING_PRIMITIVES = ("reduce_window_max", "reduce_window_min", "reduce_window_sum",
                       "reduce_window")
# Parameters through which a primitive names the axes it works along (reductions, reversal,
# cumulative sums, concatenation, transposition).
_AXIS_PARAMETERS = ("axes", "axis", "dimensions", "dimension")


def _leading(shape: Sequence[int], spatial_ndim: int) -> tuple[int, ...] | None:
  """The batch and spatial sizes `[N, *spatial]` of a value, None if it has lost them."""
  return tuple(shape[:spatial_ndim + 1]) if len(shape) > spatial_ndim else None


def _field_size(path_of_axis: tuple[LayerGeometry, ...]) -> int:
  return receptive_field(path_of_axis).size


def _merge(paths: list[Path]) -> Path:
  """Where paths meet elementwise: per axis the path with the larger field (Araujo et al.)."""
  return tuple(max(candidates, key=_field_size) for candidates in zip(*paths))


def _windowed(path: Path, kernel, stride, dilation, padding) -> Path:
  return tuple(axis_path + (LayerGeometry(k, s, d, lo),) for axis_path, k, s, d, (lo, _) in zip(
      path, kernel, stride, dilation, padding))


def _conv_path(eqn, path: Path):
  params = eqn.params
  lhs_spec, rhs_spec, out_spec = params["dimension_numbers"]
  ndim = len(path)
  channels_last = (0, ndim + 1) + tuple(range(1, ndim + 1))
  if (tuple(lhs_spec) != channels_last or tuple(out_spec) != channels_last
      or any(d != 1 for d in params["lhs_dilation"])
      or any(lo < 0 for lo, _ in params["padding"])):
    return WHOLE_IMAGE  # transposed or non-NHWC convolutions: not a plain sliding window
  kernel_shape = eqn.invars[1].aval.shape
  kernel = tuple(kernel_shape[axis] for axis in rhs_spec[2:])
  return _windowed(path, kernel, params["window_strides"], params["rhs_dilation"],
                   params["padding"])


def _onednn_conv_path(eqn, path: Path):
  """`cnn_jax.ops.onednn`'s forward correlation: channels-last, its geometry in the params."""
  params = eqn.params
  if any(lo < 0 for lo, _ in params["pads"]):
    return WHOLE_IMAGE
  return _windowed(path, params["kernel_spatial"], params["strides"], params["dilations"],
                   params["pads"])


def _pool_path(eqn, path: Path):
  params = eqn.params
  spatial_axes = slice(1, len(path) + 1)
  if (any(d != 1 for d in params["base_dilation"])
      or any(lo < 0 for lo, _ in params["padding"][spatial_axes])):
    return WHOLE_IMAGE
  return _windowed(path, params["window_dimensions"][spatial_axes],
                   params["window_strides"][spatial_axes],
                   params["window_dilation"][spatial_axes], params["padding"][spatial_axes])


def _pad_path(eqn, path: Path):
  config = eqn.params["padding_config"][1:len(path) + 1]
  if any(lo < 0 or interior != 0 for lo, _, interior in config):
    return WHOLE_IMAGE
  return tuple(axis_path + ((LayerGeometry(1, 1, 1, lo),) if lo else ())
               for axis_path, (lo, _, _) in zip(path, config))


def _concatenate_path(eqn, operand_paths: list, spatial_ndim: int):
  """Concatenation along a spatial axis, as `jnp.pad` builds periodic and reflecting padding
  from slices of the map: the pieces before the largest traced operand count as its padding.

  The unit's window is then exact in padded coordinates, which is what a crop needs; the pixels
  beyond the border are copies of pixels inside rather than zeros.
  """
  axis = eqn.params["dimension"]
  if not 1 <= axis <= spatial_ndim:
    return None
  sizes = [atom.aval.shape[axis] for atom in eqn.invars]
  main = max((index for index, path in enumerate(operand_paths) if path is not None),
             key=lambda index: sizes[index])
  path = operand_paths[main]
  if path == WHOLE_IMAGE:
    return WHOLE_IMAGE
  low = sum(sizes[:main])
  return tuple(axis_path + (LayerGeometry(1, 1, 1, low),) if index == axis - 1 and low
               else axis_path for index, axis_path in enumerate(path))


def _slice_path(eqn, path: Path):
  """A strided slice from the first pixel (`x[:, ::S]`, the subsampling of option-A shortcuts)
  is a 1-pixel window of stride S; slices that start further in make a field with negative
  padding, which `LayerGeometry` cannot state."""
  params = eqn.params
  spatial_axes = slice(1, len(path) + 1)
  starts = params["start_indices"][spatial_axes]
  strides = (params["strides"] or (1,) * len(params["start_indices"]))[spatial_axes]
  if any(start != 0 for start in starts):
    return WHOLE_IMAGE
  return tuple(axis_path + ((LayerGeometry(1, stride, 1, 0),) if stride > 1 else ())
               for axis_path, stride in zip(path, strides))


def _keeps_positions(eqn, operand_paths: list, spatial_ndim: int) -> bool:
  """Whether output position p depends on input position p only (elementwise in N, *spatial).

  True when every traced operand and every output have the same batch and spatial sizes and the
  primitive neither works along those axes nor permutes them.
  """
  leading = {_leading(atom.aval.shape, spatial_ndim)
             for atom, path in zip(eqn.invars, operand_paths) if path is not None}
  leading |= {_leading(var.aval.shape, spatial_ndim) for var in eqn.outvars}
  if len(leading) != 1 or None in leading:
    return False
  for name in _AXIS_PARAMETERS:
    axes = eqn.params.get(name)
    axes = (axes,) if isinstance(axes, int) else axes
    if isinstance(axes, Sequence) and any(
        isinstance(a, int) and a <= spatial_ndim for a in axes):
      return False
  permutation = eqn.params.get("permutation")
  return permutation is None or tuple(permutation[:spatial_ndim + 1]) == tuple(
      range(spatial_ndim + 1))


def _subjaxpr(eqn):
  """The jaxpr an eqn calls with its own operands (jit, custom_vjp, remat), or None."""
  for value in eqn.params.values():
    if isinstance(value, core.ClosedJaxpr) and len(value.jaxpr.invars) == len(eqn.invars):
      return value.jaxpr
    if isinstance(value, core.Jaxpr) and len(value.invars) == len(eqn.invars):
      return value
  return None


def _walk(jaxpr, input_paths: list, spatial_ndim: int) -> list:
  """Propagate paths through a jaxpr; `input_paths[i]` is the path of invar i or None."""
  paths: dict = {var: path for var, path in zip(jaxpr.invars, input_paths) if path is not None}

  def path_of(atom):
    return None if isinstance(atom, core.Literal) else paths.get(atom)

  for eqn in jaxpr.eqns:
    operand_paths = [path_of(atom) for atom in eqn.invars]
    present = [path for path in operand_paths if path is not None]
    if not present:
      continue
    name, inner = eqn.primitive.name, _subjaxpr(eqn)
    concatenated = (_concatenate_path(eqn, operand_paths, spatial_ndim)
                    if name == "concatenate" else None)
    if concatenated is not None:
      outputs = [concatenated]
    elif WHOLE_IMAGE in present:
      outputs = [WHOLE_IMAGE] * len(eqn.outvars)
    elif name == "conv_general_dilated" and operand_paths[1] is None:
      outputs = [_conv_path(eqn, operand_paths[0])]
    elif name == ONEDNN_FORWARD and operand_paths[1] is None:
      outputs = [_onednn_conv_path(eqn, operand_paths[0])]
    elif name in _POOLING_PRIMITIVES and len(eqn.outvars) == 1:
      outputs = [_pool_path(eqn, present[0])]
    elif name == "pad":
      outputs = [_pad_path(eqn, present[0])]
    elif name == "slice":
      outputs = [_slice_path(eqn, present[0])]
    elif inner is not None:
      outputs = _walk(inner, operand_paths, spatial_ndim)
    elif _keeps_positions(eqn, operand_paths, spatial_ndim):
      outputs = [_merge(present)] * len(eqn.outvars)
    else:
      outputs = [WHOLE_IMAGE] * len(eqn.outvars)
    for var, path in zip(eqn.outvars, outputs):
      if path is not None:
        # A value without spatial axes (flattened, globally pooled) depends on every position.
        has_positions = _leading(var.aval.shape, spatial_ndim) is not None
        paths[var] = path if has_positions else WHOLE_IMAGE
  return [path_of(atom) for atom in jaxpr.outvars]


def traced_receptive_field(function: Callable[[jax.Array], jax.Array],
                           input_shape: Sequence[int]) -> tuple[ReceptiveField, ...] | None:
  """The receptive field, per spatial axis, of the units of `function(images)`.

  Args:
    function: `images: [N, *spatial, C] -> activation: [N, *spatial', C']`, built from lax
      convolutions, window reductions and elementwise operations (any cnn-jax model's
      `projection.layer_function`).
    input_shape: the shape of `images`.

  Returns:
    One `ReceptiveField(size, jump, start)` per spatial axis (unit `n` sees input pixels
    `start + n jump +- (size - 1) / 2`), or None when a unit depends on the whole image (also
    the conservative answer for an operation the walk does not model, such as a transposed
    convolution).
  """
  input_shape = tuple(input_shape)
  closed = jax.make_jaxpr(function)(jax.ShapeDtypeStruct(input_shape, np.float32))
  spatial_ndim = len(input_shape) - 2
  (path,) = _walk(closed.jaxpr, [((),) * spatial_ndim], spatial_ndim)
  if path is None:
    raise ValueError("the function's output does not depend on its input")
  if path == WHOLE_IMAGE:
    return None
  return tuple(receptive_field(axis_path) for axis_path in path)


def field_bounds(field: ReceptiveField, unit: int) -> tuple[int, int]:
  """The input pixels `[first, last]` (inclusive, possibly in the padding) that unit `unit` sees.

  For an even-sized field the centre is a half-integer and the bounds are exact integers.
  """
  first = field.start + unit * field.jump - (field.size - 1) / 2
  return int(round(first)), int(round(first)) + field.size - 1


def _abstract_intermediates(model: nn.Module, input_shape: tuple[int, ...]):
  """`images -> {layer: activation}` of `model` with all-zero variables made inside the trace
  (nothing allocated), and the sown layers' shapes in forward order."""
  abstract = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                            jax.ShapeDtypeStruct(input_shape, jnp.float32))

  def layers(images):
    variables = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), abstract)
    _, state = model.apply(variables, images, train=False, mutable="intermediates")
    return {name: values[0] for name, values in state.get("intermediates", {}).items()}

  shapes = []  # read inside the trace, where the dict keeps the forward order
  jax.eval_shape(lambda x: shapes.extend((name, value.shape) for name, value in layers(x).items()),
                 jax.ShapeDtypeStruct(input_shape, jnp.float32))
  return layers, shapes


def model_receptive_field(model: nn.Module, input_shape: Sequence[int],
                          layer: str | None = None) -> ReceptiveField:
  """The receptive field (first spatial axis) of a layer of `model`, traced.

  Args:
    model: a model that sows its layers into 'intermediates' and takes `(x, train)`.
    input_shape: `[N, H, W, C]`: strided 'same' layers pad by amounts that depend on the size,
      which moves `start`.
    layer: a sown layer name; None for the last sown layer with spatial axes whose units do not
      see the whole image (the last conv or pooling stage).

  Returns:
    `ReceptiveField(size, jump, start)`: unit `n` sees pixels `start + n jump +- (size - 1) / 2`.
  """
  input_shape = tuple(input_shape)
  if "lowering" in getattr(model, "__dataclass_fields__", {}):
    # The same windows in the forms the trace follows: 'auto' blurs by separable strided slices
    # on CPU, whose sum of shifted pieces the trace does not merge into one window.
    model = model.clone(lowering="xla")
  layers, shapes = _abstract_intermediates(model, input_shape)
  spatial = [name for name, shape in shapes if len(shape) == len(input_shape)]
  if layer is not None and layer not in dict(shapes):
    raise ValueError(f"layer must be one of {type(model).__name__}'s sown layers "
                     f"{[name for name, _ in shapes]}, got {layer!r}")
  for name in [layer] if layer is not None else reversed(spatial):
    fields = traced_receptive_field(lambda images, name=name: layers(images)[name], input_shape)
    if fields is not None:
      return fields[0]
  raise ValueError(f"{type(model).__name__} has no spatial layer whose units see part of the "
                   f"image" + (f" (layer {layer!r} sees all of it)" if layer else ""))
