"""The receptive field of a layer's units, read off the traced computation of any model.

`cnn_jax.ops.arithmetic.receptive_field` needs the stack of conv and pooling geometries between
the input and a layer. The models' `geometry()` lists it for their last conv stage; to get it for
any layer of any model, this module traces the map `images -> activation` to a jaxpr and walks it
from the input: every `conv_general_dilated` and `reduce_window` (max, sum, average pooling) on
the path contributes one `LayerGeometry` per spatial axis, a spatial `pad` its low padding (and
so does a periodic or reflecting `jnp.pad`, which traces to a concatenation of slices), a
strided slice `x[:, ::S]` a window of one pixel and stride S,
elementwise ops pass the geometry through, and where two paths meet (residual additions) the one
with the larger field is kept, as Araujo et al. (2019) prescribe. An operation that mixes
spatial positions in any other way (a dense layer after flattening, a global pooling) makes the
unit see the whole image.

Layout: activations are channels-last, `[N, *spatial, C]`, as everywhere in cnn-jax.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.extend import core

from cnn_jax.ops.arithmetic import LayerGeometry, ReceptiveField, receptive_field

# A value's geometry: per spatial axis, the layers between the input and it; or WHOLE_IMAGE.
Path = tuple[tuple[LayerGeometry, ...], ...]
WHOLE_IMAGE = "whole image"

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
