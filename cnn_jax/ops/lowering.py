"""Faster CPU lowerings of cross-correlation and max pooling, with the same values and gradients.

XLA:CPU runs `lax.conv_general_dilated`, and the kernel-gradient convolution that autodiff
derives from it, over the whole batch at once; its working set falls out of the caches and the
kernel gradient runs 2-5x slower than oneDNN's (see the per-op table of `benchmarks/`). Here each
part of a correlation's training step can instead be a matrix product computed tile by tile, a
tile being a few images (or a band of output rows of one image) whose patch matrix fits in about
`TILE_BYTES`:

* forward (im2col): `y_tile = patches(x_tile) @ W`, `W` the kernel as a `[prod(K) C_in, C_out]`
  matrix and `patches[n, k C_in + c] = x_padded[n S + k D, c]`;
* kernel gradient (im2col): `dW = sum_tiles patches(x_tile)^T @ dy_tile`;
* input gradient (col2im): `dpatches = dy_tile @ W^T`, each tap added back in place by a pad
  with interior padding S - 1 (XLA's own rule convolves an output gradient dilated by S zeros).

`tiled_correlate` uses them where they measured faster (`default_tiled_parts`), XLA's
convolution elsewhere. `switch_max_pool` backpropagates through the switches of the forward pass
(the first maximum of each window, as XLA's `select_and_scatter` does) with elementwise selects
and strided pads that XLA fuses into one loop.

Both functions take the arguments of their `cnn_jax.ops` counterparts and validate them there.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from cnn_jax.ops import conv, pooling
from cnn_jax.ops.conv import Padding

# Bytes of one tile's patch matrix: a few MB stays in the L2/L3 caches while the matrix product
# runs (on the project's Zen 4 machine 1-4 MB measured alike, 0.5 MB and whole batches slower).
TILE_BYTES = 2 ** 21
# The three parts of a correlation's training step that can run as tiled matrix products.
TILED_PARTS = ("forward", "input_gradient", "kernel_gradient")


def default_tiled_parts(kernel_size, strides) -> tuple[str, ...]:
  """The parts that measured faster tiled than XLA's convolution (`benchmarks/`, per-op table).

  The kernel gradient always (2-5x); the input gradient (col2im) of strided convolutions with at
  most 3x3 taps, where XLA convolves a zero-dilated output gradient; never the forward pass,
  where XLA's convolution is as fast and fuses with its neighbours.
  """
  strided_small = any(s > 1 for s in strides) and math.prod(kernel_size) <= 9
  return ("input_gradient", "kernel_gradient") if strided_small else ("kernel_gradient",)


class _Geometry(NamedTuple):
  """Static description of a correlation of an already padded (and dilated) input."""
  kernel_size: tuple[int, ...]
  strides: tuple[int, ...]
  dilations: tuple[int, ...]
  groups: int
  tile_bytes: int
  precision: lax.Precision | None
  tiled: frozenset[str]


def _output_size(padded_size, geometry: _Geometry) -> tuple[int, ...]:
  """`O = floor((P - D (K - 1) - 1) / S) + 1` per spatial axis of a padded input of size P."""
  return tuple((p - d * (k - 1) - 1) // s + 1 for p, k, s, d in zip(
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
    return jnp.matmul(patches, kernel.reshape(-1, channels_out), precision=geometry.precision)
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


def _forward(x_padded: jax.Array, kernel: jax.Array, geometry: _Geometry) -> jax.Array:
  """`y[n, o] = sum_{k, c} x_padded[n S + k D, c] kernel[k, c, o]`: `[N, *P, C] -> [N, *O, C_out]`."""
  out_size, tile, tile_counts = _tile_plan(x_padded, geometry, geometry.tile_bytes)
  tile_out_size = (tile[1],) + out_size[1:]

  def tile_output(index):
    x_tile = _input_tile(x_padded, index, tile, tile_counts[1], geometry)
    return _patch_product(_patches(x_tile, tile_out_size, geometry), kernel, geometry)

  tiles = lax.map(tile_output, jnp.arange(tile_counts[0] * tile_counts[1]))
  return _untile(tiles, tile, tile_counts)


def _kernel_gradient(x_padded: jax.Array, dy: jax.Array, kernel_shape,
                     geometry: _Geometry) -> jax.Array:
  """`dW[k, c, o] = sum_n x_padded[n S + k D, c] dy[n, o]`, accumulated tile by tile."""
  taps, groups = len(_taps(geometry)), geometry.groups
  # Each tile's product adds into the whole [prod(K) C_in, C_out] gradient: tiles of at least
  # 2 C_out patch rows keep that read-modify-write below the matrix product's own traffic, and
  # 4x larger tiles than the forward's measured 10% faster.
  patch_row_bytes = dy.dtype.itemsize * taps * kernel_shape[-2] * groups
  out_size, tile, tile_counts = _tile_plan(
      x_padded, geometry, max(4 * geometry.tile_bytes, 2 * kernel_shape[-1] * patch_row_bytes))
  images, rows = tile

  def accumulate(total, index):
    x_tile = _input_tile(x_padded, index, tile, tile_counts[1], geometry)
    start = ((index // tile_counts[1]) * images, (index % tile_counts[1]) * rows)
    dy_tile = lax.dynamic_slice(dy, start + (0,) * (dy.ndim - 2),
                                (images, rows) + dy.shape[2:])
    patches = _patches(x_tile, (rows,) + out_size[1:], geometry)
    spatial = "NXYZ"[:dy.ndim - 1]  # batch and spatial axes, summed over
    if groups == 1:
      # A plain 2-D product: measured 1.8x faster than the same contraction as an einsum.
      product = jnp.matmul(patches.reshape(-1, patches.shape[-1]).T,
                           dy_tile.reshape(-1, dy_tile.shape[-1]), precision=geometry.precision)
    else:
      product = jnp.einsum(f"{spatial}kgc,{spatial}go->kcgo", _grouped(patches, groups, taps),
                           dy_tile.reshape(dy_tile.shape[:-1] + (groups, -1)),
                           precision=geometry.precision)
    return total + product.reshape(total.shape), None

  total = jnp.zeros((taps * kernel_shape[-2], kernel_shape[-1]), dy.dtype)
  total, _ = lax.scan(accumulate, total, jnp.arange(tile_counts[0] * tile_counts[1]))
  return total.reshape(kernel_shape)


def _col2im(dy: jax.Array, kernel: jax.Array, padded_shape, geometry: _Geometry) -> jax.Array:
  """`dx_padded[m, c] = sum_{n, k: n S + k D = m} dy[n, o] kernel[k, c, o]`: `[N, *P, C_in]`.

  col2im: `dpatches = dy @ W^T` per tile of whole images, each tap put back by a pad with
  interior padding S - 1 (zeros between the strided positions); XLA fuses the pads and sums.
  """
  out_size = dy.shape[1:-1]
  taps = _taps(geometry)
  channels_in = padded_shape[-1]
  image_bytes = dy.dtype.itemsize * channels_in * len(taps) * math.prod(out_size)
  images, _ = _tiling(dy.shape[0], 1, image_bytes, geometry.tile_bytes)
  tile_shape = (images,) + tuple(padded_shape[1:])

  def tile_gradient(dy_tile):
    if geometry.groups == 1:
      dpatches = jnp.matmul(dy_tile, kernel.reshape(-1, kernel.shape[-1]).T,
                            precision=geometry.precision)
    else:
      dpatches = jnp.einsum("...go,kcgo->...kgc",
                            dy_tile.reshape(dy_tile.shape[:-1] + (geometry.groups, -1)),
                            kernel.reshape(len(taps), kernel.shape[-2], geometry.groups, -1),
                            precision=geometry.precision)
    dpatches = dpatches.reshape(dpatches.shape[:len(out_size) + 1] + (len(taps), channels_in))
    total = jnp.zeros(tile_shape, dy.dtype)
    for index, tap in enumerate(taps):
      config = [(0, 0, 0)]
      for k, d, s, o, p in zip(tap, geometry.dilations, geometry.strides, out_size,
                               padded_shape[1:-1]):
        config.append((k * d, p - k * d - (o - 1) * s - 1, s - 1))
      total = total + lax.pad(dpatches[..., index, :], jnp.zeros((), dy.dtype),
                              config + [(0, 0, 0)])
    return total

  tiles = lax.map(tile_gradient, dy.reshape((dy.shape[0] // images, images) + dy.shape[1:]))
  return tiles.reshape(padded_shape)


def _xla_forward(x_padded: jax.Array, kernel: jax.Array, geometry: _Geometry) -> jax.Array:
  """The reference lowering, `lax.conv_general_dilated`, of the padded correlation."""
  ndim = x_padded.ndim - 2
  return lax.conv_general_dilated(
      x_padded, kernel, window_strides=geometry.strides, padding=((0, 0),) * ndim,
      rhs_dilation=geometry.dilations, dimension_numbers=conv._dimension_numbers(ndim),
      feature_group_count=geometry.groups, precision=geometry.precision)


def _correlate_forward(x_padded, kernel, geometry: _Geometry) -> jax.Array:
  if "forward" in geometry.tiled:
    return _forward(x_padded, kernel, geometry)
  return _xla_forward(x_padded, kernel, geometry)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _correlate_padded(x_padded: jax.Array, kernel: jax.Array, geometry: _Geometry) -> jax.Array:
  return _correlate_forward(x_padded, kernel, geometry)


def _correlate_padded_forward(x_padded, kernel, geometry):
  return _correlate_forward(x_padded, kernel, geometry), (x_padded, kernel)


def _correlate_padded_backward(geometry, residuals, dy):
  x_padded, kernel = residuals
  if "input_gradient" in geometry.tiled:
    dx = _col2im(dy, kernel, x_padded.shape, geometry)
  else:
    (dx,) = jax.linear_transpose(lambda x: _xla_forward(x, kernel, geometry), x_padded)(dy)
  if "kernel_gradient" in geometry.tiled:
    dkernel = _kernel_gradient(x_padded, dy, kernel.shape, geometry)
  else:
    (dkernel,) = jax.linear_transpose(lambda k: _xla_forward(x_padded, k, geometry), kernel)(dy)
  return dx, dkernel


_correlate_padded.defvjp(_correlate_padded_forward, _correlate_padded_backward)


def tiled_correlate(x: jax.Array, kernel: jax.Array, *, stride=1, padding: Padding = "valid",
                    kernel_dilation=1, input_dilation=1, groups: int = 1,
                    bias: jax.Array | None = None, precision=None,
                    tiled=None, tile_bytes: int = TILE_BYTES) -> jax.Array:
  """`cnn_jax.ops.correlate` as tiled im2col matrix products (forward and both gradients).

  `y[b, n, o] = bias[o] + sum_{k, c} x_pad[b, n*S + k*D, g(o)*C_g + c] kernel[k, c, o]`.
  Same arguments, validation, shapes and values as `cnn_jax.ops.correlate` (up to float
  rounding: sums run in another order).

  Args:
    x: `[N, *spatial, C_in]`, 1 to 3 spatial axes.
    kernel: `[*K, C_in // groups, C_out]`.
    stride, padding, kernel_dilation, input_dilation, groups, bias, precision: as in
      `cnn_jax.ops.correlate`.
    tiled: which of `TILED_PARTS` run as tiled matrix products; the others use XLA's
      convolution (`lax.conv_general_dilated` and its autodiff transposes). None: the measured
      winners, `default_tiled_parts`.
    tile_bytes: the size of one tile's patch matrix in bytes (>= 1); a tuning knob only.

  Returns:
    `[N, *spatial', C_out]`.
  """
  x, kernel = jnp.asarray(x), jnp.asarray(kernel)
  if not isinstance(tile_bytes, int) or tile_bytes < 1:
    raise ValueError(f"tile_bytes must be an int >= 1, got {tile_bytes!r}")
  if tiled is not None:
    tiled = (tiled,) if isinstance(tiled, str) else tuple(tiled)
    if not set(tiled) <= set(TILED_PARTS):
      raise ValueError(f"tiled must name parts among {TILED_PARTS}, got {tiled!r}")
  options = dict(stride=stride, padding=padding, kernel_dilation=kernel_dilation,
                 input_dilation=input_dilation, groups=groups, precision=precision)
  # Validates every argument exactly as the reference does, without computing anything.
  jax.eval_shape(functools.partial(conv.correlate, **options), x, kernel,
                 bias=None if bias is None else jax.ShapeDtypeStruct(jnp.shape(bias), x.dtype))
  ndim = x.ndim - 2
  strides = conv._per_axis("stride", stride, ndim, minimum=1)
  dilations = conv._per_axis("kernel_dilation", kernel_dilation, ndim, minimum=1)
  input_dilations = conv._per_axis("input_dilation", input_dilation, ndim, minimum=1)
  pads = conv.resolve_padding(padding, x.shape[1:-1], kernel.shape[:-2], strides, dilations,
                              input_dilations)
  if isinstance(padding, str) and padding.lower() == "circular":
    x = jnp.pad(x, ((0, 0),) + pads + ((0, 0),), mode="wrap")
    pads = ((0, 0),) * ndim
  # Zero padding and input dilation (D_in - 1 zeros between pixels) in one pad.
  x_padded = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0)] + [
      (lo, hi, d - 1) for (lo, hi), d in zip(pads, input_dilations)] + [(0, 0, 0)])
  if tiled is None:
    tiled = default_tiled_parts(kernel.shape[:-2], strides)
  geometry = _Geometry(tuple(kernel.shape[:-2]), strides, dilations, groups, tile_bytes,
                       precision, frozenset(tiled))
  y = _correlate_padded(x_padded, kernel, geometry)
  return y if bias is None else y + bias


class _Window(NamedTuple):
  """Static max-pooling geometry over all axes of x (batch and channel included, size 1)."""
  window: tuple[int, ...]
  strides: tuple[int, ...]
  pads: tuple[tuple[int, int], ...]


def _max_pool_forward(x: jax.Array, window: _Window) -> jax.Array:
  return lax.reduce_window(x, -jnp.inf, lax.max, window.window, window.strides, window.pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _switch_max_pool(x: jax.Array, window: _Window) -> jax.Array:
  return _max_pool_forward(x, window)


def _switch_max_pool_forward(x, window):
  y = _max_pool_forward(x, window)
  return y, (x, y)


def _switch_max_pool_backward(window, residuals, dy):
  """`dx[m] = sum_{n, k: n S + k - P_lo = m} dy[n] [k is the first argmax of window n]`."""
  x, y = residuals
  x_padded = lax.pad(x, jnp.array(-jnp.inf, x.dtype), [(lo, hi, 0) for lo, hi in window.pads])
  taken = jnp.zeros(y.shape, bool)
  dx_padded = jnp.zeros(x_padded.shape, dy.dtype)
  for tap in itertools.product(*(range(f) for f in window.window)):
    stop = tuple(k + (o - 1) * s + 1 for k, o, s in zip(tap, y.shape, window.strides))
    is_max = lax.slice(x_padded, tap, stop, window.strides) == y
    switch = is_max & ~taken  # ties: the first maximum in row-major window order wins
    taken = taken | is_max
    config = [(k, p - k - (o - 1) * s - 1, s - 1)
              for k, p, o, s in zip(tap, x_padded.shape, y.shape, window.strides)]
    dx_padded = dx_padded + lax.pad(jnp.where(switch, dy, 0), jnp.zeros((), dy.dtype), config)
  start = tuple(lo for lo, _ in window.pads)
  return (lax.slice(dx_padded, start, tuple(b + n for b, n in zip(start, x.shape))),)


_switch_max_pool.defvjp(_switch_max_pool_forward, _switch_max_pool_backward)


def switch_max_pool(x: jax.Array, window, stride=None, padding: Padding = "valid") -> jax.Array:
  """`cnn_jax.ops.max_pool` whose backward pass routes gradients through recorded switches.

  `y[n] = max_{k < F} x[n S + k - P_lo]` per channel; the gradient of `y[n]` goes to the first
  maximum of its window in row-major order, as for `ops.max_pool`. Same arguments as
  `ops.max_pool`: `x: [N, *spatial, C]` -> `[N, *spatial', C]`.
  """
  x, windows, strides, pads = pooling._window_geometry(x, window, stride, padding)
  return _switch_max_pool(x, _Window(windows, strides, pads))
