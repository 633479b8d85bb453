"""How a validated correlation or max pooling is computed: XLA's reference or faster CPU forms.

`cnn_jax.ops.correlate` and `cnn_jax.ops.max_pool` validate their arguments and pick a lowering
by name (`LOWERINGS`); the functions here trust their inputs.

* 'xla', the reference: `lax.conv_general_dilated` and `lax.reduce_window`, differentiated by
  XLA's own rules. Tests compare every lowering with the float64 NumPy sums of
  `tools/conv_gradient_map.py`.
* 'tiled': every part of a correlation's training step as tiled matrix products, a tile being a
  few images (or a band of output rows of one image) whose patch matrix fits in about
  `TILE_BYTES`, and max pooling differentiated through its switches:
  - forward (im2col): `y_tile = patches(x_tile) @ W`, `W` the kernel as a `[prod(K) C_in, C_out]`
    matrix and `patches[n, k C_in + c] = x_padded[n S + k D, c]`;
  - kernel gradient: `dW = sum_tiles patches(x_tile)^T @ dy_tile`;
  - input gradient (col2im): `dpatches = dy_tile @ W^T`, each tap added back in place by a pad
    with interior padding S - 1;
  - max pooling: the gradient of each window goes to its first maximum (as XLA's
    `select_and_scatter`) through elementwise selects and strided pads that XLA fuses.
* The guard, under every name: geometries whose gradient XLA:CPU gets wrong are padded
  explicitly before a 'VALID' convolution (`explicitly_padded_correlate`), those where it aborts
  run tiled ('xla' rejects them); `xla_convolution_failure` is the map
  (`docs/conv_gradients.md`).
* 'onednn': every part through oneDNN's convolution kernels, XLA FFI custom calls of a compiled
  extension (`cnn_jax.ops.onednn`; CPU, float32, and bfloat16 on CPUs with bfloat16
  instructions), part by part where oneDNN is given the shape (`onednn.shape_supported`), else
  'xla' for that part; max pooling as under 'auto'.
* 'auto': per backend, per shape and per part, what measured fastest (`auto_choices`): on CPU,
  'onednn' wherever oneDNN runs and is given the shape, except the parts for which the per-op
  benchmark's float32 table for this CPU's ISA class (`auto_lowerings.json`, written by
  `python -m benchmarks.run --sections ops --write-auto-table`) measured 'xla' or 'tiled'
  clearly faster; without oneDNN, the table's 'xla' and 'tiled' choices, else the tiled kernel
  gradient of 1x1 and single-channel kernels (`auto_tiled_parts`) and the rest 'xla'; the
  switch max-pool backward, and an XLA kernel gradient that reads its input from a buffer of
  its own (`_materialized`); elsewhere (GPU, TPU) the reference, except the convolutions
  that XLA:GPU may not compile, tiled (`xla_gpu_rejects`).

Both gradients are derived, not hand-written: the correlation and the pooling are `custom_jvp`
functions whose tangent maps are the im2col products and switch selects above, so reverse mode
transposes them into `patches^T @ dy`, col2im and strided pads, and forward mode (`jax.jvp`, as
the Lie derivative uses) works too. The kernel tangent recomputes each tile's patches in the
backward pass (`jax.checkpoint`) instead of storing `prod(K)` copies of the input.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from cnn_jax.ops import onednn as onednn_kernels
from cnn_jax.ops.arithmetic import output_size

# The names `ops.correlate` and `ops.max_pool` accept for their `lowering` argument.
LOWERINGS = ("xla", "tiled", "auto", "onednn")
DEFAULT_LOWERING = "auto"
# Bytes of one tile's patch matrix: a few MB stays in the L2/L3 caches while the matrix product
# runs (on the project's 2-core machine 1-4 MB measured alike, 0.5 MB and whole batches slower).
TILE_BYTES = 2 ** 21
# The three parts of a correlation's training step that can run as tiled matrix products.
TILED_PARTS = ("forward", "input_gradient", "kernel_gradient")
# 'auto's measured choices: {ISA class: {conv_signature: {part: 'xla' | 'tiled' | 'onednn'}}}.
AUTO_TABLE = os.path.join(os.path.dirname(__file__), "auto_lowerings.json")


def available_lowerings() -> tuple[str, ...]:
  """The names of `LOWERINGS` that can run in this process ('onednn' where
  `cnn_jax.ops.onednn.available()`)."""
  return tuple(name for name in LOWERINGS if name != "onednn" or onednn_kernels.available())


def check_lowering(lowering: str) -> None:
  """Raises a ValueError unless `lowering` is one of `LOWERINGS`."""
  if lowering not in LOWERINGS:
    raise ValueError(f"lowering must be one of {LOWERINGS}, got {lowering!r}")


class Correlation(NamedTuple):
  """A validated correlation's static options, one entry per spatial axis (`ops.correlate`).

  `pads` are explicit `(lo, hi)` amounts; with `circular` they are filled by periodic extension.
  """
  strides: tuple[int, ...]
  pads: tuple[tuple[int, int], ...]
  kernel_dilations: tuple[int, ...]
  input_dilations: tuple[int, ...]
  groups: int
  circular: bool
  precision: Any = None


def channels_last_dimension_numbers(ndim: int) -> lax.ConvDimensionNumbers:
  """`x: [N, *spatial, C]`, `kernel: [*K, C_in, C_out]`, `y: [N, *spatial', C_out]`."""
  return lax.ConvDimensionNumbers(
      lhs_spec=(0, ndim + 1) + tuple(range(1, ndim + 1)),
      rhs_spec=(ndim + 1, ndim) + tuple(range(ndim)),
      out_spec=(0, ndim + 1) + tuple(range(1, ndim + 1)))


def auto_tiled_parts(x_shape, kernel_shape, correlation: Correlation) -> frozenset[str]:
  """The parts that measured faster tiled than XLA's convolution on CPU, for one shape.

  Only the kernel gradient, of ungrouped kernels that are 1x1 (a plain matrix product, where
  XLA's kernel-gradient convolution is the slower one) or read a single input channel (MNIST's
  first layer). Everything else, forward and input gradient included, is faster in XLA's own
  convolution under `cnn_jax.runtime`'s XLA:CPU flags; the per-op tables of
  `benchmarks/results/` hold the measurements (`python -m benchmarks.run --sections ops`).
  """
  one_by_one = math.prod(kernel_shape[:-2]) == 1
  if correlation.groups == 1 and (one_by_one or x_shape[-1] == 1):
    return frozenset({"kernel_gradient"})
  return frozenset()


@functools.cache
def cpu_isa() -> str:
  """This CPU's vector ISA class, the key of 'auto's table: 'avx512', 'avx2' or 'other'."""
  try:
    with open("/proc/cpuinfo") as file:
      flags = next((line.split(":", 1)[1].split() for line in file
                    if line.startswith("flags")), [])
  except OSError:
    return "other"
  return "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "other"


def explicit_geometry(x_shape, correlation: Correlation
                      ) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
  """`(spatial size, pads)` of x as a convolution kernel receives it: circular padding as the
  'valid' correlation of the periodically padded input that it is."""
  spatial, pads = tuple(x_shape[1:-1]), correlation.pads
  if correlation.circular:
    spatial = tuple(n + lo + hi for n, (lo, hi) in zip(spatial, pads))
    pads = ((0, 0),) * len(spatial)
  return spatial, pads


def conv_signature(x_shape, kernel_shape, correlation: Correlation) -> str:
  """A correlation's shape without its batch size, e.g. `'32x32x16 k3x3x16x32 s2x2 p0-1,0-1
  d1x1 i1x1 g1'` (input H x W x C, kernel, strides, pads, dilations, input dilations, groups);
  circular padding as the 'valid' correlation of the padded input that it is."""
  spatial, pads = explicit_geometry(x_shape, correlation)
  join = lambda values: "x".join(map(str, values))
  return (f"{join(spatial + (x_shape[-1],))} k{join(kernel_shape)} s{join(correlation.strides)} "
          f"p{','.join(f'{lo}-{hi}' for lo, hi in pads)} d{join(correlation.kernel_dilations)} "
          f"i{join(correlation.input_dilations)} g{correlation.groups}")


@functools.cache
def measured_auto_choices() -> dict:
  """The per-op benchmark's table (`AUTO_TABLE`); empty where there is none."""
  try:
    with open(AUTO_TABLE) as file:
      return json.load(file)
  except FileNotFoundError:
    return {}


def auto_choices(x_shape, kernel_shape, correlation: Correlation, dtypes,
                 platform: str) -> dict[str, str]:
  """What 'auto' runs each of `TILED_PARTS` with: 'xla', 'tiled' or 'onednn'.

  Elsewhere than on the CPU the reference (on a GPU tiled where `xla_gpu_rejects`). On the CPU,
  where oneDNN runs and is given the shape, every part in oneDNN, except, in float32, the parts
  for which the table of this CPU's ISA class measured another lowering clearly faster
  (`benchmarks/per_op.py`'s `write_auto_table`). Without oneDNN, the table's choices among 'xla'
  and 'tiled' (float32), else the kernel gradients of 1x1 and single-channel kernels tiled
  (`auto_tiled_parts`) and the rest 'xla'.
  """
  if platform != "cpu":
    rejected = platform == "gpu" and xla_gpu_rejects(correlation)
    return dict.fromkeys(TILED_PARTS, "tiled" if rejected else "xla")
  # The table was measured in float32; in bfloat16 XLA:CPU's convolutions are slower still.
  measured = {}
  if all(jnp.dtype(d) == jnp.float32 for d in dtypes):
    measured = measured_auto_choices().get(cpu_isa(), {}).get(
        conv_signature(x_shape, kernel_shape, correlation), {})
  if _onednn_given(x_shape, kernel_shape, correlation, dtypes) and onednn_kernels.available():
    return dict.fromkeys(TILED_PARTS, "onednn") | measured
  tiled = auto_tiled_parts(x_shape, kernel_shape, correlation)
  choices = {part: "tiled" if part in tiled else "xla" for part in TILED_PARTS}
  return choices | {part: choice for part, choice in measured.items() if choice != "onednn"}


def xla_gpu_rejects(correlation: Correlation) -> bool:
  """Whether XLA:GPU may find no cuDNN algorithm for this correlation's training step.

  Seen with jaxlib 0.11.2 on CUDA 13 (one H200): grouped convolutions with input dilation, whose
  gradients failed to compile ("All backends failed to find supported configs:
  CUDNN_STATUS_BAD_PARAM"). At the default matmul precision 6 of 256 small geometries tried
  failed (1-D and 2-D; 1 or 2 groups; input dilation 1-3; stride 1-2; size 1, 2 or 4; kernel 1
  or 3; unpadded or padded by 1), all grouped and input-dilated with one output position per
  axis; at precision 'highest' a 1-D one with three output positions failed too. So the whole
  family counts, whatever its size: the tiled lowering computed every one of them.
  """
  return correlation.groups > 1 and any(d > 1 for d in correlation.input_dilations)


def tiled_parts(lowering: str, x_shape, kernel_shape, correlation: Correlation,
                platform: str, dtypes=("float32", "float32")) -> frozenset[str]:
  """Which of `TILED_PARTS` run tiled under `lowering` on `platform` ('cpu', 'gpu', 'tpu')."""
  if lowering == "tiled":
    return frozenset(TILED_PARTS)
  if lowering == "auto":
    choices = auto_choices(x_shape, kernel_shape, correlation, dtypes, platform)
    return frozenset(part for part, choice in choices.items() if choice == "tiled")
  return frozenset()


def onednn_parts(lowering: str, x_shape, kernel_shape, correlation: Correlation, dtypes,
                 platform: str) -> frozenset[str]:
  """Which of `TILED_PARTS` run in oneDNN under `lowering` (the rest as `tiled_parts` says).

  Under 'auto' those that `auto_choices` gives oneDNN. Under 'onednn' every part where oneDNN
  is given the shape (`onednn.shape_supported`), after checking that oneDNN can run at all: an
  `onednn.OnednnUnavailable` error says why not.
  """
  if lowering == "auto":
    choices = auto_choices(x_shape, kernel_shape, correlation, dtypes, platform)
    return frozenset(part for part, choice in choices.items() if choice == "onednn")
  if lowering != "onednn":
    return frozenset()
  onednn_kernels.check_available()
  if not _onednn_given(x_shape, kernel_shape, correlation, dtypes):
    return frozenset()
  return frozenset(TILED_PARTS)


def _onednn_given(x_shape, kernel_shape, correlation: Correlation, dtypes) -> bool:
  """`onednn.shape_supported` for a resolved correlation, as oneDNN sees it (circular padding
  applied to x beforehand)."""
  spatial, pads = explicit_geometry(x_shape, correlation)
  x_shape = (x_shape[0],) + spatial + (x_shape[-1],)
  return onednn_kernels.shape_supported(x_shape, kernel_shape, correlation.strides,
                                        correlation.input_dilations, correlation.groups, dtypes,
                                        pads=pads, kernel_dilations=correlation.kernel_dilations)


def materializes_kernel_gradient_input(lowering: str, platform: str) -> bool:
  """Whether the kernel gradient reads x from a buffer of its own (`_materialized`).

  CPU only, under 'auto', 'tiled' and 'onednn' (where XLA computes it), where it makes the
  ResNet train steps faster (`docs/speed.md`). A GPU would fetch the conditional's predicate to
  the host. A oneDNN kernel gradient reads its own operand buffer anyway.
  """
  return platform == "cpu" and lowering in ("tiled", "auto", "onednn")


def check_xla_can_differentiate(x_shape, kernel_shape, correlation: Correlation) -> None:
  """Raises a ValueError where XLA's convolution would abort the process (lowering 'xla')."""
  spatial, pads = explicit_geometry(x_shape, correlation)
  if xla_convolution_failure(spatial, tuple(kernel_shape[:-2]), correlation.strides, pads,
                             correlation.input_dilations, correlation.kernel_dilations,
                             correlation.groups) == "abort":
    raise ValueError(
        f"lowering='xla' cannot compute this convolution: XLA aborts the process compiling its "
        f"gradient (x shape {tuple(x_shape)}, kernel shape {tuple(kernel_shape)}, stride "
        f"{correlation.strides}, padding {correlation.pads}, input dilation "
        f"{correlation.input_dilations}, kernel dilation {correlation.kernel_dilations}); "
        "use lowering='auto' or 'tiled' (docs/conv_gradients.md)")


def max_pool_uses_switches(lowering: str, platform: str) -> bool:
  """Whether max pooling differentiates through switches (3-8x faster backward on CPU)."""
  return lowering == "tiled" or (lowering in ("auto", "onednn") and platform == "cpu")


def correlate(x: jax.Array, kernel: jax.Array, correlation: Correlation, *,
              tiled: frozenset[str] = frozenset(), materialize_input: bool = False,
              tile_bytes: int = TILE_BYTES, onednn: frozenset[str] = frozenset()) -> jax.Array:
  """`y[b, n, o] = sum_{k, c} x_pad[b, n S + k D, g(o) C_g + c] kernel[k, c, o]` (no bias).

  Args:
    x: `[N, *spatial, C_in]`.
    kernel: `[*K, C_in // groups, C_out]`.
    correlation: the validated options (`ops.conv.resolve_correlation`).
    tiled: which of `TILED_PARTS` run as tiled matrix products; empty: the reference
      `lax.conv_general_dilated` and its autodiff rules, exactly.
    onednn: which of `TILED_PARTS` run in oneDNN (`onednn_parts`; float32, no input dilation);
      they take precedence over `tiled`.
    materialize_input: the kernel gradient reads x from a copy computed once
      (`_materialized`) instead of x's elementwise producers, which XLA would fuse again into
      the kernel gradient's transposes or patches.
    tile_bytes: the size of one tile's patch matrix in bytes; a tuning knob only.

  Returns:
    `[N, *spatial', C_out]`.
  """
  ndim = x.ndim - 2
  pads = correlation.pads
  if correlation.circular:
    x = jnp.pad(x, ((0, 0),) + pads + ((0, 0),), mode="wrap")
    pads = ((0, 0),) * ndim
  geometry = _Geometry(tuple(kernel.shape[:-2]), correlation.strides,
                       correlation.kernel_dilations, pads, correlation.input_dilations,
                       correlation.groups, tile_bytes, correlation.precision,
                       frozenset(tiled) - frozenset(onednn),
                       materialize_input and "kernel_gradient" not in onednn, frozenset(onednn))
  if _xla_failure(x.shape, kernel.shape, geometry) == "abort":
    # No convolution of XLA's: it would abort the process (`xla_convolution_failure`).
    geometry = geometry._replace(tiled=frozenset(TILED_PARTS) - geometry.onednn)
  if not geometry.tiled and not geometry.materialize_input and not geometry.onednn:
    return _xla_correlate(x, kernel, geometry)
  return _correlate(x, kernel, geometry)


class _Geometry(NamedTuple):
  """Static description of a correlation: the tiled helpers read `x_padded = _pad(x)`."""
  kernel_size: tuple[int, ...]
  strides: tuple[int, ...]
  dilations: tuple[int, ...]
  pads: tuple[tuple[int, int], ...]
  input_dilations: tuple[int, ...]
  groups: int
  tile_bytes: int
  precision: lax.Precision | None
  tiled: frozenset[str]
  materialize_input: bool
  onednn: frozenset[str] = frozenset()


def _onednn_correlate(x: jax.Array, kernel: jax.Array, geometry: _Geometry) -> jax.Array:
  """The correlation of x (input dilation 1) in oneDNN (`onednn.forward_p`)."""
  return onednn_kernels.correlate(x, kernel, onednn_kernels.geometry_params(
      x.shape, kernel.shape, geometry.strides, geometry.pads, geometry.dilations,
      geometry.groups))


def _output_size(padded_size, geometry: _Geometry) -> tuple[int, ...]:
  """`O = floor((P - D (K - 1) - 1) / S) + 1` per spatial axis of a padded input of size P."""
  return tuple(output_size(p, k, s, 0, d) for p, k, s, d in zip(
      padded_size, geometry.kernel_size, geometry.strides, geometry.dilations))


def _patches(x_tile: jax.Array, out_size, geometry: _Geometry) -> jax.Array:
  """im2col: `[c, *P, C] -> [c, *O, prod(K) C]`, tap-major: `p[n, k C + c] = x[n S + k D, c]`."""
  columns = []
  for tap in _taps(geometry):
    start = tuple(k * d for k, d in zip(tap, geometry.dilations))
    stop = tuple(b + (o - 1) * s + 1 for b, o, s in zip(start, out_size, geometry.strides))
    columns.append(lax.slice(x_tile, (0,) + start + (0,),
                             (x_tile.shape[0],) + stop + (x_tile.shape[-1],),
                             (1,) + geometry.strides + (1,)))
  return jnp.concatenate(columns, axis=-1)


def _grouped(array: jax.Array, groups: int, taps: int) -> jax.Array:
  """`[..., taps * C] -> [..., taps, groups, C // groups]`: patches split by channel group."""
  return array.reshape(array.shape[:-1] + (taps, groups, array.shape[-1] // (taps * groups)))


def _patch_product(patches: jax.Array, kernel: jax.Array, geometry: _Geometry) -> jax.Array:
  """`[..., prod(K) C_in] x [*K, C_in // G, C_out] -> [..., C_out]`, group by group."""
  taps, channels_out = math.prod(kernel.shape[:-2]), kernel.shape[-1]
  if geometry.groups == 1:
    # A plain 2-D product: its transpose (the kernel gradient) measured 1.8x faster than the
    # same contraction over several batch axes.
    product = jnp.matmul(patches.reshape(-1, patches.shape[-1]), kernel.reshape(-1, channels_out),
                         precision=geometry.precision)
    return product.reshape(patches.shape[:-1] + (channels_out,))
  grouped_kernel = kernel.reshape(taps, kernel.shape[-2], geometry.groups, -1)
  product = jnp.einsum("...kgc,kcgo->...go", _grouped(patches, geometry.groups, taps),
                       grouped_kernel, precision=geometry.precision)
  return product.reshape(product.shape[:-2] + (channels_out,))


def _divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


def _tiling(batch: int, out_rows: int, row_bytes: int, tile_bytes: int) -> tuple[int, int]:
  """(images, output rows) per tile, for a patch matrix of about `tile_bytes`.

  Candidates: bands of rows of one image (dividing its rows), or whole images (dividing the
  batch). The largest that fits in `tile_bytes`, unless that is under a quarter of it (an image
  with a prime row count, say): then the smallest that does not fit, since many tiny matrix
  products cost more than one that spills from the cache.
  """
  candidates = sorted({(1, rows) for rows in _divisors(out_rows)}
                      | {(images, out_rows) for images in _divisors(batch)},
                      key=lambda tile: tile[0] * tile[1])
  size = lambda tile: tile[0] * tile[1] * row_bytes
  fitting = [tile for tile in candidates if size(tile) <= tile_bytes]
  if fitting and 4 * size(fitting[-1]) >= tile_bytes:
    return fitting[-1]
  return next((tile for tile in candidates if size(tile) > tile_bytes), candidates[-1])


def _tile_plan(x_padded: jax.Array, geometry: _Geometry, tile_bytes: int):
  """Output size, tile shape `(images, rows)` and tile counts `(image tiles, row tiles)`."""
  out_size = _output_size(x_padded.shape[1:-1], geometry)
  row_bytes = (x_padded.dtype.itemsize * x_padded.shape[-1] * len(_taps(geometry))
               * math.prod(out_size[1:]))
  images, rows = _tiling(x_padded.shape[0], out_size[0], row_bytes, tile_bytes)
  return out_size, (images, rows), (x_padded.shape[0] // images, out_size[0] // rows)


def _taps(geometry: _Geometry) -> tuple[tuple[int, ...], ...]:
  return tuple(itertools.product(*(range(k) for k in geometry.kernel_size)))


def _input_tile(x_padded, index, tile, row_tiles, geometry: _Geometry):
  """The input that tile `index` reads: `[images, (rows - 1) S + D (K - 1) + 1, *P[1:], C]`."""
  images, rows = tile
  first_image, first_row = (index // row_tiles) * images, (index % row_tiles) * rows
  in_rows = (rows - 1) * geometry.strides[0] + geometry.dilations[0] * (
      geometry.kernel_size[0] - 1) + 1
  start = (first_image, first_row * geometry.strides[0]) + (0,) * (x_padded.ndim - 2)
  return lax.dynamic_slice(x_padded, start, (images, in_rows) + x_padded.shape[2:])


def _untile(tiles: jax.Array, tile, tile_counts) -> jax.Array:
  """`[T, images, rows, *rest]` in (image tile, row tile) order -> `[N, O_0, *rest]`."""
  (images, rows), (image_tiles, row_tiles) = tile, tile_counts
  rest = tiles.shape[3:]
  blocks = tiles.reshape((image_tiles, row_tiles, images, rows) + rest)
  return jnp.swapaxes(blocks, 1, 2).reshape((image_tiles * images, row_tiles * rows) + rest)


def _forward(x_padded: jax.Array, kernel: jax.Array, geometry: _Geometry, *,
             tile_bytes: int | None = None, rematerialize: bool = False) -> jax.Array:
  """`y[n, o] = sum_{k, c} x_padded[n S + k D, c] kernel[k, c, o]`: `[N, *P, C] -> [N, *O, C_out]`.

  Tile by tile (images or bands of output rows). Linear in the kernel: transposed, each tile
  adds `patches(x_tile)^T @ dy_tile` into the kernel gradient. With `rematerialize`, a backward
  pass recomputes each tile's patches instead of keeping them all.
  """
  out_size, tile, tile_counts = _tile_plan(x_padded, geometry,
                                           tile_bytes or geometry.tile_bytes)
  tile_out_size = (tile[1],) + out_size[1:]

  def tile_output(index):
    x_tile = _input_tile(x_padded, index, tile, tile_counts[1], geometry)
    return _patch_product(_patches(x_tile, tile_out_size, geometry), kernel, geometry)

  if rematerialize:
    tile_output = jax.checkpoint(tile_output, prevent_cse=False)
  tiles = lax.map(tile_output, jnp.arange(tile_counts[0] * tile_counts[1]))
  return _untile(tiles, tile, tile_counts)


def _forward_by_images(x_padded: jax.Array, kernel: jax.Array,
                       geometry: _Geometry) -> jax.Array:
  """`_forward` over tiles of whole images, linear in x: its transpose is col2im.

  Transposed, each tile's `dpatches = dy_tile @ W^T` goes back tap by tap through the transpose
  of a strided slice, a pad with interior padding S - 1, into its own images only (row bands
  would overlap and add into the whole input gradient on every tile).
  """
  out_size = _output_size(x_padded.shape[1:-1], geometry)
  image_bytes = (x_padded.dtype.itemsize * x_padded.shape[-1] * len(_taps(geometry))
                 * math.prod(out_size))
  images, _ = _tiling(x_padded.shape[0], 1, image_bytes, geometry.tile_bytes)
  x_tiles = x_padded.reshape((x_padded.shape[0] // images, images) + x_padded.shape[1:])
  tiles = lax.map(
      lambda x_tile: _patch_product(_patches(x_tile, out_size, geometry), kernel, geometry),
      x_tiles)
  return tiles.reshape((x_padded.shape[0],) + tiles.shape[2:])


def _pad(x: jax.Array, geometry: _Geometry) -> jax.Array:
  """Zero padding and input dilation (D_in - 1 zeros between pixels) in one pad."""
  return lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0)] + [
      (lo, hi, d - 1) for (lo, hi), d in zip(geometry.pads, geometry.input_dilations)]
                 + [(0, 0, 0)])


def _xla_correlate(x: jax.Array, kernel: jax.Array, geometry: _Geometry) -> jax.Array:
  """The reference lowering: `lax.conv_general_dilated`, padding included, so that XLA's own
  input gradient never computes the padding's.

  Except where a padding reaches past the kernel's extent: there XLA's input gradient would
  be a convolution with a negative padding, which XLA:CPU can compute wrong
  (`xla_convolution_failure`), so x is padded first (`explicitly_padded_correlate`).
  """
  if _xla_failure(x.shape, kernel.shape, geometry) != "ok":
    return explicitly_padded_correlate(x, kernel, geometry.strides, geometry.pads,
                                       geometry.input_dilations, geometry.dilations,
                                       geometry.groups, geometry.precision)
  ndim = x.ndim - 2
  return lax.conv_general_dilated(
      x, kernel, window_strides=geometry.strides, padding=geometry.pads,
      lhs_dilation=geometry.input_dilations, rhs_dilation=geometry.dilations,
      dimension_numbers=channels_last_dimension_numbers(ndim), feature_group_count=geometry.groups,
      precision=geometry.precision)


def explicitly_padded_correlate(x: jax.Array, kernel: jax.Array, strides, pads, input_dilations,
                                kernel_dilations, groups: int, precision=None) -> jax.Array:
  """`lax.conv_general_dilated` with its padding and input dilation done by `lax.pad` first.

  x is padded, dilated and cropped to exactly the `(O - 1) S + D (K - 1) + 1` pixels per axis
  that the output reads, then correlated 'VALID'. JAX differentiates the two apart: the
  convolutions of both gradients then have non-negative paddings of `D (K - 1)` and 0.
  """
  ndim = x.ndim - 2
  config = [(0, 0, 0)]
  for n, k, s, d, d_in, (lo, hi) in zip(x.shape[1:-1], kernel.shape[:-2], strides,
                                        kernel_dilations, input_dilations, pads):
    read = (output_size((n - 1) * d_in + 1 + lo + hi, k, s, 0, d) - 1) * s + d * (k - 1) + 1
    config.append((lo, read - (n - 1) * d_in - 1 - lo, d_in - 1))
  x_padded = lax.pad(x, jnp.zeros((), x.dtype), config + [(0, 0, 0)])
  return lax.conv_general_dilated(
      x_padded, kernel, window_strides=strides, padding="VALID", rhs_dilation=kernel_dilations,
      dimension_numbers=channels_last_dimension_numbers(ndim), feature_group_count=groups,
      precision=precision)


class _ConvolutionWindow(NamedTuple):
  """One spatial axis of an XLA convolution: `size` of the window, the input's `input_size`."""
  input_size: int
  size: int
  stride: int
  window_dilation: int
  base_dilation: int
  pad: tuple[int, int]


def _training_convolutions(spatial, kernel_size, strides, pads, input_dilations,
                           kernel_dilations, groups):
  """The three convolutions of `jax.vjp` of `lax.conv_general_dilated`, as XLA receives them.

  Per convolution: its windows (one per spatial axis) and whether it has feature or batch
  groups. The forward convolution; the input gradient (dy dilated by S, the flipped kernel,
  strides D_in, pads `(D (K-1) - lo, ...)`); the kernel gradient (x with dy as the window,
  dilated by S, strides D). Formulas of `jax._src.lax.convolution`'s transpose rules.
  """
  forward, input_gradient, kernel_gradient = [], [], []
  for n, k, s, (lo, hi), d_in, d in zip(spatial, kernel_size, strides, pads, input_dilations,
                                        kernel_dilations):
    n_eff, k_eff = (n - 1) * d_in + 1, d * (k - 1) + 1
    o = output_size(n_eff + lo + hi, k, s, 0, d)
    o_eff = (o - 1) * s + 1
    input_lo = k_eff - 1 - lo
    forward.append(_ConvolutionWindow(n, k, s, d, d_in, (lo, hi)))
    input_gradient.append(_ConvolutionWindow(
        o, k, d_in, d, s, (input_lo, n_eff + k_eff - 1 - o_eff - input_lo)))
    kernel_gradient.append(_ConvolutionWindow(
        n, o, d, s, d_in, (lo, o_eff - n_eff + k_eff - 1 - lo)))
  return ((forward, groups > 1), (input_gradient, groups > 1), (kernel_gradient, groups > 1))


def _swapped_operands_abort(windows, grouped: bool) -> bool:
  """Whether XLA's algebraic simplifier swaps this convolution's operands into an invalid one.

  `AlgebraicSimplifier` makes the input the kernel when the kernel is the larger
  (product of window sizes over the axes it rewrites > product of input sizes), ungrouped
  convolutions only. An axis whose window looks like a "group" axis (no padding, no window
  dilation, base dilation = window size, stride = size - 1) is copied unchanged although the
  new kernel there has the input's size: the shape check fails and XLA aborts the process
  ("Window dimensions do not match RHS shape").
  """
  if grouped:
    return False
  kernel_product, swapped_product, copied_mismatch = 1, 1, False
  for w in windows:
    unpadded = w.pad == (0, 0) and w.window_dilation == 1
    if unpadded and w.base_dilation == w.size and w.stride == w.size - 1:
      copied_mismatch |= w.input_size != w.size
      continue
    if unpadded and w.base_dilation == 1 and w.stride == 1 and w.input_size == w.size:
      continue
    kernel_product *= w.size
    one_pixel = (w.input_size == 1 and w.stride == 1 and w.window_dilation == 1
                 and w.pad == (w.size - 1, w.size - 1))
    swapped_product *= w.size if one_pixel else w.input_size
  return copied_mismatch and kernel_product > swapped_product


def _xla_failure(x_shape, kernel_shape, geometry: _Geometry) -> str:
  return xla_convolution_failure(x_shape[1:-1], kernel_shape[:-2], geometry.strides,
                                 geometry.pads, geometry.input_dilations, geometry.dilations,
                                 geometry.groups)


def xla_convolution_failure(spatial, kernel_size, strides, pads, input_dilations,
                            kernel_dilations, groups: int) -> str:
  """How XLA:CPU (jaxlib 0.10.2) fails to differentiate this convolution: 'abort', 'wrong', 'ok'.

  The map of `tools/conv_gradient_map.py` (`docs/conv_gradients.md`), for
  `jax.vjp(lax.conv_general_dilated)` under `jax.jit`, checked against its scan:
  * 'abort': one of the three convolutions of a training step (forward, input gradient,
    kernel gradient) meets `_swapped_operands_abort`. With input dilation 1 only the input
    gradient can: an axis with K = S = 2, D = 1, pads `(1, 1 + r)` (`r` the input rows past the
    last window) beside an axis whose kernel is larger than the output (issue 17's 4 x 2
    kernel at stride 2, padding 1).
  * 'wrong': one of them has a negative low padding, which Eigen's spatial convolution does not
    treat as padding: it reads outside its input (openxla/xla#48713). With non-negative pads,
    the input gradient of an axis padded by at least the kernel's extent, `lo >= D (K - 1) + 1`
    (issue 20). Whether values come out wrong also depends on batch and channel counts and on
    memory: the whole region is flagged.
  Arguments are per spatial axis (`pads` as `(lo, hi)` pairs, negative allowed), as
  `lax.conv_general_dilated` takes them.
  """
  convolutions = _training_convolutions(spatial, kernel_size, strides, pads, input_dilations,
                                        kernel_dilations, groups)
  if any(_swapped_operands_abort(windows, grouped) for windows, grouped in convolutions):
    return "abort"
  if any(w.pad[0] < 0 for windows, _ in convolutions for w in windows):
    return "wrong"
  return "ok"


def _kernel_tangent_tile_bytes(x_padded, kernel_shape, geometry: _Geometry) -> int:
  """Tiles for the kernel gradient: each tile's product adds into the whole
  `[prod(K) C_in, C_out]` gradient, so tiles of at least 2 C_out patch rows keep that
  read-modify-write below the product's own traffic; 4x the forward's tiles measured 10% faster.
  """
  patch_row_bytes = x_padded.dtype.itemsize * len(_taps(geometry)) * x_padded.shape[-1]
  return max(4 * geometry.tile_bytes, 2 * kernel_shape[-1] * patch_row_bytes)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _correlate(x: jax.Array, kernel: jax.Array, geometry: _Geometry) -> jax.Array:
  if "forward" in geometry.onednn:
    return _onednn_correlate(x, kernel, geometry)
  if "forward" in geometry.tiled:
    return _forward(_pad(x, geometry), kernel, geometry)
  return _xla_correlate(x, kernel, geometry)


def _correlate_jvp(geometry, primals, tangents):
  """`dy = correlate(dx, W) + correlate(x, dW)`, each term in the lowering of its gradient.

  In oneDNN, `forward_p(dx, W)` transposes into oneDNN's input gradient and `forward_p(x, dW)`
  into its kernel gradient (`cnn_jax.ops.onednn`).
  """
  x, kernel = primals
  dx, dkernel = tangents
  y = _correlate(x, kernel, geometry)
  dy = jnp.zeros(y.shape, y.dtype)
  if not isinstance(dx, SymbolicZero):
    if "input_gradient" in geometry.onednn:
      dy = dy + _onednn_correlate(dx, kernel, geometry)
    elif "input_gradient" in geometry.tiled:
      dy = dy + _forward_by_images(_pad(dx, geometry), kernel, geometry)
    else:
      dy = dy + _xla_correlate(dx, kernel, geometry)
  if not isinstance(dkernel, SymbolicZero):
    if "kernel_gradient" in geometry.onednn:
      return y, dy + _onednn_correlate(x, dkernel, geometry)
    if geometry.materialize_input:
      x = _materialized(x)
    if "kernel_gradient" in geometry.tiled:
      x_padded = _pad(x, geometry)
      dy = dy + _forward(x_padded, dkernel, geometry, rematerialize=True,
                         tile_bytes=_kernel_tangent_tile_bytes(x_padded, kernel.shape, geometry))
    else:
      dy = dy + _xla_correlate(x, dkernel, geometry)
  return y, dy


_correlate.defjvp(_correlate_jvp, symbolic_zeros=True)


def _materialized(x: jax.Array) -> jax.Array:
  """x, written once into a buffer of its own: the identity, behind a conditional.

  A layer's input is usually the end of an elementwise chain (batch-norm apply, ReLU, residual
  additions back to the stage's first block). XLA:CPU fuses such chains into their consumers, and
  the kernel gradient's consumer is a transpose to `[C, *spatial, N]` (XLA's convolution kernel
  gradient) or the patches' strided slices: each re-reads 5-15 full-size tensors in a cache-hostile
  order, many times slower than one transpose of one buffer. A conditional is a fusion boundary XLA
  keeps (`lax.optimization_barrier` is removed before fusion). Its predicate is data-dependent so
  that XLA does not fold it away, and one branch is `x * 1` so that JAX does not forward x past it
  (it drops a conditional whose branches all return their operand unchanged); both branches equal x
  exactly.
  """
  first = lax.stop_gradient(x).reshape(-1)[:1]
  return lax.cond(jnp.all(first == first), lambda x: x, lambda x: x * 1, x)


def max_pool(x: jax.Array, windows, strides, pads, *, switches: bool = False) -> jax.Array:
  """`y[n] = max_{k < F} x[n S + k - P_lo]` over every axis of x (`ops.max_pool`), padded by -inf.

  Args:
    x: `[N, *spatial, C]`.
    windows, strides: one int per axis of x (1 on the batch and channel axes).
    pads: one `(lo, hi)` pair per axis of x.
    switches: differentiate through the recorded switches (the first maximum of each window in
      row-major order, as XLA's `select_and_scatter`) instead of XLA's rule.

  Returns:
    `[N, *spatial', C]`.
  """
  window = _Window(tuple(windows), tuple(strides), tuple(map(tuple, pads)))
  if switches:
    return _switch_max_pool(x, window)
  return _max_pool_forward(x, window)


class _Window(NamedTuple):
  """Static max-pooling geometry over all axes of x (batch and channel included, size 1)."""
  window: tuple[int, ...]
  strides: tuple[int, ...]
  pads: tuple[tuple[int, int], ...]


def _max_pool_forward(x: jax.Array, window: _Window) -> jax.Array:
  return lax.reduce_window(x, -jnp.inf, lax.max, window.window, window.strides, window.pads)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _switch_max_pool(x: jax.Array, window: _Window) -> jax.Array:
  return _max_pool_forward(x, window)


def _switch_max_pool_jvp(window, primals, tangents):
  """`dy[n] = dx[n S + s(n) - P_lo]`, `s(n)` the first argmax of window n (row-major).

  The switch is kept as one int8 tap index per output; transposed, each tap's selected
  gradients go back through a strided pad.
  """
  (x,), (dx,) = primals, tangents
  y = _max_pool_forward(x, window)
  taps = list(itertools.product(*(range(f) for f in window.window)))
  x_padded = lax.pad(x, jnp.array(-jnp.inf, x.dtype), [(lo, hi, 0) for lo, hi in window.pads])
  view = lambda array, tap: lax.slice(
      array, tap, tuple(k + (o - 1) * s + 1 for k, o, s in zip(tap, y.shape, window.strides)),
      window.strides)
  switch = jnp.full(y.shape, len(taps), jnp.int8 if len(taps) < 127 else jnp.int32)
  for index, tap in reversed(list(enumerate(taps))):  # the last write is the first maximum
    switch = jnp.where(view(x_padded, tap) == y, jnp.asarray(index, switch.dtype), switch)
  dx_padded = lax.pad(dx, jnp.zeros((), dx.dtype), [(lo, hi, 0) for lo, hi in window.pads])
  dy = jnp.zeros(y.shape, dx.dtype)
  for index, tap in enumerate(taps):
    dy = dy + jnp.where(switch == index, view(dx_padded, tap), 0)
  return y, dy


_switch_max_pool.defjvp(_switch_max_pool_jvp)
