"""PatchMatch (Barnes et al. 2009): a randomized nearest-neighbour field between two images.

For a source image A and a target image B (channels-last, `[H, W, C]`), a patch is the P x P
window whose top-left corner is its position, so A has a grid of `[H_A - P + 1, W_A - P + 1]`
patches. The nearest-neighbour field (NNF) maps every source patch position `a` to a target
patch position `f(a)` that minimizes the sum of squared differences

  D(a, b) = sum_{0 <= i, j < P} ||A[a + (i, j)] - B[b + (i, j)]||^2,

over the allowed target positions (`candidates`, a boolean mask over B's patch grid: all of
them, or, for hole filling, the patches that lie fully outside the hole). PatchMatch finds a
near-optimal field in a few iterations of

* random initialization: `f(a)` uniform over the allowed positions;
* propagation: `a` tries the offsets of its neighbours, `f(a + d) - d`, since offsets are
  coherent over regions (a good match at one pixel is a good match next to it);
* random search: `a` tries `f_0(a) + round(w alpha^i R_i)` for `i = 0, 1, ...` while
  `w alpha^i >= 1`, with `f_0(a)` its match at the start of the search, `R_i` uniform in
  `[-1, 1]^2`, `w` the larger side of B's patch grid and `alpha = 1/2`,

each candidate replacing `f(a)` only if its distance is strictly smaller, so that every
pixel's distance, and the field's mean distance, never increases.

Propagation runs in parallel over all pixels, as jump flooding (Rong & Tan 2006): one iteration
has steps `k = 2^m, ..., 2, 1` (`2^m` the largest power of two below the grid's larger side) and
at step k every pixel tries the offsets of its 8 neighbours at distance k (horizontally,
vertically and diagonally), all reading the field of the previous step. Barnes et al.'s own
propagation is a sequential scan (each pixel reads its left and upper neighbours after they were
updated, then the reverse order): a good offset travels across a whole coherent region in one
scan, which is what makes it converge in a few iterations, but it cannot be vectorized over
pixels. Its direct parallel form (every pixel reads its 4 neighbours at distance 1, all at once)
moves an offset by only one pixel per step. Jump flooding restores the reach: after the steps
`2^m, ..., 1` an offset has been offered to every pixel at a displacement of up to `2^(m+1) - 1`
in each axis (any displacement is a sum of distinct powers of two per axis, one jump per step,
diagonal jumps covering both axes at once), for `8 (m + 1)` candidates per pixel per iteration
instead of 4. The diagonal neighbours are what make this reach hold; with 4 neighbours only,
displacements with a power of two in both axes would be skipped.

`exact_nearest_neighbours` is the reference: every source patch against every allowed target
patch, `D(a, b) = ||A_a||^2 - 2 A_a . B_b + ||B_b||^2`, the cross term a `cnn_jax.ops.correlate`
of A with the target patches as kernels, in chunks of target patches.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from cnn_jax import ops

# Barnes et al.'s ratio between successive random-search radii.
SEARCH_RADIUS_RATIO = 0.5


class NearestNeighbourField(NamedTuple):
  """A field over the source patch grid `[H_A', W_A'] = [H_A - P + 1, W_A - P + 1]`.

  positions: `[H_A', W_A', 2]` int32, the (row, column) of each matched target patch.
  distances: `[H_A', W_A']` float32, the SSD of each source patch to its matched target patch.
  """
  positions: jax.Array
  distances: jax.Array


def patch_grid_shape(image_shape, patch_size: int) -> tuple[int, int]:
  """The grid of P x P patch positions of an `[H, W, ...]` image: `(H - P + 1, W - P + 1)`."""
  return image_shape[0] - patch_size + 1, image_shape[1] - patch_size + 1


def image_patches(image: jax.Array, patch_size: int) -> jax.Array:
  """Every P x P patch of `image: [H, W, C]`, flattened: `[H - P + 1, W - P + 1, P * P * C]`.

  `patches[y, x, (i P + j) C + c] = image[y + i, x + j, c]` (an exact gather, no arithmetic).
  """
  rows, columns = patch_grid_shape(image.shape, patch_size)
  windows = [image[i:i + rows, j:j + columns] for i in range(patch_size)
             for j in range(patch_size)]
  return jnp.concatenate(windows, axis=-1)


def as_image(name: str, image) -> jax.Array:
  """`image` as float32 `[H, W, C]`; a grey `[H, W]` image gets one channel."""
  image = jnp.asarray(image, jnp.float32)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3:
    raise ValueError(f"{name} must be an image [H, W] or [H, W, C], got shape {image.shape}")
  return image


def check_patch_size(patch_size, *shapes) -> None:
  """Raises a ValueError unless `patch_size` is an int that fits in every `[H, W, ...]` shape."""
  largest = min(min(shape[:2]) for shape in shapes)
  if not isinstance(patch_size, int) or isinstance(patch_size, bool) or not (
      1 <= patch_size <= largest):
    raise ValueError(f"patch_size must be an int in [1, {largest}] for images of shapes "
                     f"{[tuple(shape) for shape in shapes]}, got {patch_size!r}")


def check_candidates(candidates, grid: tuple[int, int]) -> jax.Array:
  """`candidates` as a boolean `[H_B', W_B']` mask with at least one allowed position."""
  if candidates is None:
    return jnp.ones(grid, bool)
  candidates = jnp.asarray(candidates)
  if candidates.dtype != bool or candidates.shape != grid:
    raise ValueError(f"candidates must be a boolean mask of the target's patch grid, shape "
                     f"{grid}, got {candidates.dtype} of shape {candidates.shape}")
  if not bool(jnp.any(candidates)):
    raise ValueError("candidates must allow at least one target patch, got an all-False mask")
  return candidates


def jump_steps(grid: tuple[int, int]) -> tuple[int, ...]:
  """Jump flooding's steps `2^m, ..., 2, 1`, `2^m` the largest power of two below max(grid)."""
  largest = max(grid)
  top = int(math.floor(math.log2(largest - 1))) if largest > 1 else 0
  return tuple(2 ** k for k in range(top, -1, -1))


def search_radii(grid: tuple[int, int]) -> tuple[float, ...]:
  """Random search's radii `w alpha^i >= 1`, `w` the larger side of the target grid."""
  radii, radius = [], float(max(grid))
  while radius >= 1.0:
    radii.append(radius)
    radius *= SEARCH_RADIUS_RATIO
  return tuple(radii)


def _distances(source_patches, target_patches, candidates, positions):
  """SSD of each source patch to the target patch at `positions`; +inf where not allowed.

  `positions` may lie outside the target grid (a propagated offset can point out of it): those
  are clipped for the gather and then given +inf.
  """
  rows, columns = candidates.shape
  inside = ((positions[..., 0] >= 0) & (positions[..., 0] < rows)
            & (positions[..., 1] >= 0) & (positions[..., 1] < columns))
  row = jnp.clip(positions[..., 0], 0, rows - 1)
  column = jnp.clip(positions[..., 1], 0, columns - 1)
  ssd = jnp.sum((source_patches - target_patches[row, column]) ** 2, axis=-1)
  return jnp.where(inside & candidates[row, column], ssd, jnp.inf)


def _improve(source_patches, target_patches, candidates, field, proposal):
  """Keeps each pixel's match unless `proposal` is strictly closer."""
  distances = _distances(source_patches, target_patches, candidates, proposal)
  better = distances < field.distances
  return NearestNeighbourField(jnp.where(better[..., None], proposal, field.positions),
                               jnp.where(better, distances, field.distances))


def _shift(array, dy, dx, fill):
  """`out[y, x] = array[y + dy, x + dx]`, `fill` where that falls outside the array (dy, dx may
  be traced)."""
  rows, columns = array.shape[:2]
  shifted = jnp.roll(array, (-dy, -dx), axis=(0, 1))
  row = jnp.arange(rows)[:, None] + dy
  column = jnp.arange(columns)[None, :] + dx
  inside = (row >= 0) & (row < rows) & (column >= 0) & (column < columns)
  return jnp.where(inside.reshape(inside.shape + (1,) * (array.ndim - 2)), shifted, fill)


# The 8 jump-flooding directions: horizontal, vertical and diagonal.
_DIRECTIONS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))
# A position no grid contains: a neighbour outside the source grid proposes nothing.
_OUTSIDE = -(2 ** 30)


def propagate(source_patches, target_patches, candidates, field, steps):
  """Jump-flooding propagation: at each step k every pixel tries `f(a + k d) - k d` for the 8
  directions d, all read from the field as it was before the step.

  The steps and directions are loops, not unrolled, so the program compiles once per shape.
  """
  directions = jnp.array(_DIRECTIONS, jnp.int32)

  def one_step(field, step):
    before = field.positions

    def one_direction(field, direction):
      jump = step * direction
      neighbour = _shift(before, jump[0], jump[1], _OUTSIDE)
      return _improve(source_patches, target_patches, candidates, field, neighbour - jump), None

    return lax.scan(one_direction, field, directions)[0], None

  return lax.scan(one_step, field, jnp.array(steps, jnp.int32))[0]


def random_search(source_patches, target_patches, candidates, field, key, radii):
  """Tries `f_0(a) + round(r_i R_i)` for each radius `r_i`, `R_i` uniform in `[-1, 1]^2`, the
  samples clipped to the target grid."""
  start = field.positions
  upper = jnp.array(candidates.shape, jnp.int32) - 1

  def one_radius(field, radius_and_key):
    radius, subkey = radius_and_key
    jitter = jax.random.uniform(subkey, start.shape, minval=-1.0, maxval=1.0)
    proposal = jnp.clip(start + jnp.round(radius * jitter).astype(jnp.int32), 0, upper)
    return _improve(source_patches, target_patches, candidates, field, proposal), None

  keys = jax.random.split(key, len(radii))
  return lax.scan(one_radius, field, (jnp.array(radii, jnp.float32), keys))[0]


def random_positions(key: jax.Array, grid: tuple[int, int], candidates: jax.Array) -> jax.Array:
  """`[*grid, 2]` positions drawn uniformly from the allowed target positions (inverse CDF)."""
  counts = jnp.cumsum(candidates.ravel())
  draws = jax.random.randint(key, grid, 0, counts[-1])
  flat = jnp.searchsorted(counts, draws, side="right")
  return jnp.stack(jnp.divmod(flat, candidates.shape[1]), axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("patch_size", "iterations", "every_iteration"))
def search(source, target, candidates, initial_positions, key, *, patch_size: int,
           iterations: int, every_iteration: bool = False):
  """`nearest_neighbour_field` for validated inputs (`[H, W, C]` float32 images, a boolean
  `candidates` with at least one True, int32 `initial_positions` or None): callable inside jit.
  """
  source_patches = image_patches(source, patch_size)
  target_patches = image_patches(target, patch_size)
  grid = source_patches.shape[:2]
  init_key, loop_key = jax.random.split(key)
  random_start = random_positions(init_key, grid, candidates)
  field = NearestNeighbourField(random_start, _distances(source_patches, target_patches,
                                                         candidates, random_start))
  if initial_positions is not None:
    # A given field (e.g. from a coarser scale) where it is allowed and closer than random.
    field = _improve(source_patches, target_patches, candidates, field, initial_positions)
  steps, radii = jump_steps(grid), search_radii(candidates.shape)

  def iteration(field, step_key):
    field = propagate(source_patches, target_patches, candidates, field, steps)
    field = random_search(source_patches, target_patches, candidates, field, step_key, radii)
    return field, field if every_iteration else jnp.mean(field.distances)

  start = field
  field, history = lax.scan(iteration, field, jax.random.split(loop_key, iterations))
  if every_iteration:
    return field, jax.tree.map(lambda first, rest: jnp.concatenate([first[None], rest]), start,
                               history)
  return field, jnp.concatenate([jnp.mean(start.distances)[None], history])


def nearest_neighbour_field(source, target, key: jax.Array, *, patch_size: int = 7,
                            iterations: int = 5, candidates=None, initial_positions=None,
                            every_iteration: bool = False):
  """The PatchMatch nearest-neighbour field from `source` to `target` (see the module docstring).

  Args:
    source: A, `[H_A, W_A]` or `[H_A, W_A, C]`.
    target: B, `[H_B, W_B]` or `[H_B, W_B, C]`, the same C.
    key: a PRNG key (random initialization and search).
    patch_size: P, the side of the square patches.
    iterations: propagation + random-search rounds, >= 0.
    candidates: boolean `[H_B - P + 1, W_B - P + 1]`, the target positions a match may take;
      None for all.
    initial_positions: int `[H_A - P + 1, W_A - P + 1, 2]`, a starting field (e.g. upsampled
      from a coarser scale); it replaces the random start wherever it is closer.
    every_iteration: also return the whole field after each iteration.

  Returns:
    The field (`positions [H_A', W_A', 2]`, `distances [H_A', W_A']`) and its history: the mean
    distance after each iteration, `[iterations + 1]` (entry 0: the starting field), or with
    `every_iteration` the fields themselves, a `NearestNeighbourField` of
    `[iterations + 1, H_A', W_A', ...]` arrays.
  """
  source, target = as_image("source", source), as_image("target", target)
  if source.shape[-1] != target.shape[-1]:
    raise ValueError(f"source and target must have the same channels, got shapes {source.shape} "
                     f"and {target.shape}")
  check_patch_size(patch_size, source.shape, target.shape)
  if not isinstance(iterations, int) or iterations < 0:
    raise ValueError(f"iterations must be an int >= 0, got {iterations!r}")
  candidates = check_candidates(candidates, patch_grid_shape(target.shape, patch_size))
  grid = patch_grid_shape(source.shape, patch_size)
  if initial_positions is not None:
    initial_positions = jnp.asarray(initial_positions)
    if initial_positions.shape != (*grid, 2) or not jnp.issubdtype(initial_positions.dtype,
                                                                  jnp.integer):
      raise ValueError(f"initial_positions must be integer positions of shape {(*grid, 2)}, got "
                       f"{initial_positions.dtype} of shape {initial_positions.shape}")
    initial_positions = initial_positions.astype(jnp.int32)
  return search(source, target, candidates, initial_positions, key, patch_size=patch_size,
                iterations=iterations, every_iteration=bool(every_iteration))


@functools.partial(jax.jit, static_argnames=("patch_size", "chunk_size"))
def _exact(source, target, candidates, *, patch_size: int, chunk_size: int):
  channels = source.shape[-1]
  target_patches = image_patches(target, patch_size)
  grid = target_patches.shape[:2]
  count = grid[0] * grid[1]
  chunks = -(-count // chunk_size)
  padded = chunks * chunk_size
  # Target patches as correlation kernels `[P, P, C, chunk]`; the padding ones are never chosen.
  kernels = jnp.pad(target_patches.reshape(count, -1), ((0, padded - count), (0, 0)))
  kernels = kernels.reshape(chunks, chunk_size, patch_size, patch_size, channels)
  kernels = kernels.transpose(0, 2, 3, 4, 1)
  target_norms = jnp.pad(jnp.sum(target_patches ** 2, -1).ravel(), (0, padded - count))
  allowed = jnp.pad(candidates.ravel(), (0, padded - count)).reshape(chunks, chunk_size)
  highest = lax.Precision.HIGHEST
  ones = jnp.ones((patch_size, patch_size, channels, 1), source.dtype)
  source_norms = ops.correlate(source[None] ** 2, ones, precision=highest)[0, ..., 0]

  def best_in_chunk(best, chunk):
    kernel, norms, mask, offset = chunk
    cross = ops.correlate(source[None], kernel, precision=highest)[0]
    distances = jnp.where(mask, source_norms[..., None] - 2 * cross + norms, jnp.inf)
    index = jnp.argmin(distances, axis=-1)
    value = jnp.take_along_axis(distances, index[..., None], -1)[..., 0]
    better = value < best[1]
    return (jnp.where(better, index + offset, best[0]), jnp.where(better, value, best[1])), None

  source_grid = source_norms.shape
  start = (jnp.zeros(source_grid, jnp.int32), jnp.full(source_grid, jnp.inf))
  (flat, _), _ = lax.scan(best_in_chunk, start,
                          (kernels, target_norms.reshape(chunks, chunk_size), allowed,
                           jnp.arange(chunks) * chunk_size))
  positions = jnp.stack(jnp.divmod(flat, grid[1]), axis=-1).astype(jnp.int32)
  # The chosen match's distance recomputed directly: the expansion cancels digits near 0.
  distances = _distances(image_patches(source, patch_size), target_patches, candidates, positions)
  return NearestNeighbourField(positions, distances)


def exact_nearest_neighbours(source, target, *, patch_size: int = 7, candidates=None,
                             chunk_size: int = 512) -> NearestNeighbourField:
  """The exact nearest-neighbour field by brute force, `O(H_A' W_A' H_B' W_B' P^2 C)`.

  `D(a, b) = ||A_a||^2 - 2 A_a . B_b + ||B_b||^2` for all pairs, the cross term the correlation
  of A with `chunk_size` target patches at a time as a `[P, P, C, chunk_size]` kernel (and
  `||A_a||^2` a correlation of `A^2` with ones), keeping the running minimum over chunks; the
  returned distance of the minimizer is recomputed as a direct SSD.

  Args:
    source, target, patch_size, candidates: as in `nearest_neighbour_field`.
    chunk_size: target patches per correlation; the cross term takes
      `4 H_A' W_A' chunk_size` bytes.

  Returns:
    The exact field (ties go to the first target position in row-major order, up to rounding).
  """
  source, target = as_image("source", source), as_image("target", target)
  if source.shape[-1] != target.shape[-1]:
    raise ValueError(f"source and target must have the same channels, got shapes {source.shape} "
                     f"and {target.shape}")
  check_patch_size(patch_size, source.shape, target.shape)
  if not isinstance(chunk_size, int) or chunk_size < 1:
    raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
  candidates = check_candidates(candidates, patch_grid_shape(target.shape, patch_size))
  return _exact(source, target, candidates, patch_size=patch_size, chunk_size=chunk_size)
