"""Hole filling: patch-based completion (Wexler et al. 2007 with PatchMatch), and two baselines.

`complete_hole` fills the pixels of a user-given boolean mask (True = hole) from patches of the
same image that lie fully outside the hole. It minimizes Wexler et al.'s coherence objective,
"every patch that overlaps the hole has a close copy among the known patches", by alternating
(an EM-like iteration) at each scale of an image pyramid:

1. search: the PatchMatch field (`cnn_jax.priors.patchmatch`) from the patches of the current
   image that overlap the hole (the hole's bounding box grown by P - 1) to the allowed patches,
   started from the previous iteration's field;
2. vote: each hole pixel q becomes the weighted mean of what the patches covering it say,
   `u(q) = sum_a w_a B[f(a) + q - a] / sum_a w_a` over the source patches a that contain q, with
   `w_a = exp(-D_a / (2 sigma^2))` and `sigma^2` the 75th percentile of the distances `D_a` of
   the patches overlapping the hole (Wexler et al.'s similarity weights).

Coarse to fine: the pyramid halves each side by 2 x 2 block means (a coarse pixel is in the hole
if any of its 4 fine pixels is, so no hole value leaks into the known coarse pixels); the
coarsest hole starts from the harmonic fill, and each finer level starts from the coarser
solution upsampled (bilinear), hole pixels only. Known pixels are never changed: the result is
`where(mask, fill, image)`, and what the hole held in the input is never read.

Simplifications against Wexler et al.: the plain weighted mean, not the mean-shift mode they
take to avoid blur, no weighting by distance to the hole's boundary, and a fixed number of
iterations per scale instead of iterating to convergence.

Baselines: `border_mean_fill` (the mean colour of the known pixels next to the hole) and
`harmonic_fill` (the solution of Laplace's equation `Delta u = 0` in the hole with the known
image as its boundary value, solved by conjugate gradients).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from cnn_jax.priors import patchmatch
from cnn_jax.priors.patchmatch import as_image, image_patches, patch_grid_shape

# Wexler et al.'s choice of sigma: the 75th percentile of the patch distances.
SIGMA_PERCENTILE = 75.0
# The smallest side the coarsest level may have, in patch sizes.
COARSEST_SIDE_IN_PATCHES = 4


def check_mask(mask, image_shape) -> jax.Array:
  """`mask` as a boolean `[H, W]` with at least one hole and one known pixel."""
  mask = jnp.asarray(mask)
  if mask.dtype != bool or mask.shape != tuple(image_shape[:2]):
    raise ValueError(f"mask must be a boolean array of shape {tuple(image_shape[:2])} (True = "
                     f"hole), got {mask.dtype} of shape {mask.shape}")
  if not bool(jnp.any(mask)):
    raise ValueError("mask must mark at least one hole pixel, got an all-False mask")
  if bool(jnp.all(mask)):
    raise ValueError("mask must leave at least one known pixel, got an all-True mask")
  return mask


def _neighbour_sum(array):
  """The sum of the 4 neighbours of each pixel of `[H, W, C]`, 0 outside the image."""
  padded = jnp.pad(array, ((1, 1), (1, 1), (0, 0)))
  return padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]


def border_mean_fill(image, mask) -> jax.Array:
  """Fills the hole with the mean colour of its border (known pixels 4-adjacent to the hole).

  Args:
    image: `[H, W]` or `[H, W, C]`.
    mask: boolean `[H, W]`, True in the hole.

  Returns:
    `[H, W, C]` float32.
  """
  image = as_image("image", image)
  mask = check_mask(mask, image.shape)
  hole = mask[..., None].astype(jnp.float32)
  border = (_neighbour_sum(hole) > 0) & ~mask[..., None]
  mean = jnp.sum(jnp.where(border, image, 0.0), (0, 1)) / jnp.sum(border, (0, 1))
  return jnp.where(mask[..., None], mean, image)


@functools.partial(jax.jit, static_argnames=("max_iterations",))
def _harmonic(image, mask, tolerance, *, max_iterations):
  hole = mask[..., None].astype(image.dtype)
  known = image * (1 - hole)
  degree = _neighbour_sum(jnp.ones_like(hole))

  def laplacian(u):  # -Delta on the hole, Dirichlet (known pixels) and Neumann (image edges).
    u = u * hole
    return hole * (degree * u - _neighbour_sum(u))

  right_side = hole * _neighbour_sum(known)
  solution, _ = jax.scipy.sparse.linalg.cg(laplacian, right_side, tol=tolerance,
                                           maxiter=max_iterations)
  return jnp.where(mask[..., None], solution, image)


def harmonic_fill(image, mask, *, tolerance: float = 1e-6,
                  max_iterations: int = 10_000) -> jax.Array:
  """Fills the hole with the harmonic interpolant of its boundary (diffusion to steady state).

  Solves `4 u(q) - sum_{r ~ q} u(r) = 0` for the hole pixels q (`r ~ q` the 4 neighbours inside
  the image, `u = image` on known pixels; at the image's edges the missing neighbours are left
  out, a reflecting boundary) by conjugate gradients on the symmetric positive definite system,
  to a relative residual of `tolerance`.

  Args:
    image: `[H, W]` or `[H, W, C]`.
    mask: boolean `[H, W]`, True in the hole.

  Returns:
    `[H, W, C]` float32.
  """
  image = as_image("image", image)
  mask = check_mask(mask, image.shape)
  return _harmonic(image, mask, tolerance, max_iterations=max_iterations)


def _downsample(array):
  """2 x 2 block means of `[H, W, C]` (edge rows/columns repeated for odd sizes)."""
  rows, columns = array.shape[:2]
  array = jnp.pad(array, ((0, rows % 2), (0, columns % 2), (0, 0)), mode="edge")
  return array.reshape(array.shape[0] // 2, 2, array.shape[1] // 2, 2, -1).mean((1, 3))


def pyramid(image: jax.Array, mask: jax.Array, levels: int) -> list[tuple[jax.Array, jax.Array]]:
  """`levels` (image, mask) pairs, finest first; a coarse pixel is hole if any of its 4 is."""
  pairs = [(image * ~mask[..., None], mask)]
  for _ in range(levels - 1):
    image, mask = pairs[-1]
    known = ~mask[..., None]
    coarse_mask = _downsample(mask[..., None].astype(jnp.float32))[..., 0] > 0
    pairs.append((_downsample(image * known) * ~coarse_mask[..., None], coarse_mask))
  return pairs


def default_levels(image_shape, patch_size: int) -> int:
  """Levels down to the last whose smaller side is still >= COARSEST_SIDE_IN_PATCHES P."""
  side, levels = min(image_shape[:2]), 1
  while -(-side // 2) >= COARSEST_SIDE_IN_PATCHES * patch_size:
    side, levels = -(-side // 2), levels + 1
  return levels


def allowed_patches(mask: jax.Array, patch_size: int) -> jax.Array:
  """`[H - P + 1, W - P + 1]`: True for the patches that lie fully outside the hole."""
  return ~jnp.any(image_patches(mask[..., None], patch_size), axis=-1)


def source_window(mask: jax.Array, patch_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """Corner and size of the hole's bounding box grown by P - 1 (the patches that overlap it)."""
  rows, columns = jnp.nonzero(jnp.any(mask, 1))[0], jnp.nonzero(jnp.any(mask, 0))[0]
  top = max(int(rows[0]) - patch_size + 1, 0)
  left = max(int(columns[0]) - patch_size + 1, 0)
  bottom = min(int(rows[-1]) + patch_size, mask.shape[0])
  right = min(int(columns[-1]) + patch_size, mask.shape[1])
  return (top, left), (bottom - top, right - left)


def vote(target_patches, field: patchmatch.NearestNeighbourField, window_mask, patch_size: int):
  """Each pixel of the source window as the weighted mean of the patches covering it.

  Args:
    target_patches: `[H_B', W_B', P * P * C]`.
    field: over the window's patch grid `[h', w']`.
    window_mask: boolean `[h' + P - 1, w' + P - 1]`, the hole inside the window.

  Returns:
    `[h' + P - 1, w' + P - 1, C]`: `sum_a w_a B[f(a) + q - a] / sum_a w_a` at every pixel q.
  """
  overlaps = jnp.any(image_patches(window_mask[..., None], patch_size), axis=-1)
  scale = jnp.nanpercentile(jnp.where(overlaps, field.distances, jnp.nan), SIGMA_PERCENTILE)
  # The floor keeps 0/0 away when every distance is 0 (an exactly periodic image).
  weights = jnp.maximum(jnp.exp(-field.distances / (2 * jnp.maximum(scale, 1e-12))), 1e-30)
  rows, columns = field.distances.shape
  votes = target_patches[field.positions[..., 0], field.positions[..., 1]]
  votes = votes.reshape(rows, columns, patch_size, patch_size, -1) * weights[..., None, None, None]
  shape = (rows + patch_size - 1, columns + patch_size - 1)
  channels = votes.shape[-1]

  def add_offset(sums, offset):
    # Pixel q = a + (i, j) receives patch a's value at (i, j): a shifted slice add.
    total, weight_sum = sums
    i, j = offset // patch_size, offset % patch_size
    patch_values = lax.dynamic_index_in_dim(
        lax.dynamic_index_in_dim(votes, i, 2, keepdims=False), j, 2, keepdims=False)
    total = lax.dynamic_update_slice(
        total, lax.dynamic_slice(total, (i, j, 0), (rows, columns, channels)) + patch_values,
        (i, j, 0))
    weight_sum = lax.dynamic_update_slice(
        weight_sum, lax.dynamic_slice(weight_sum, (i, j, 0), (rows, columns, 1))
        + weights[..., None], (i, j, 0))
    return (total, weight_sum), None

  (total, weight_sum), _ = lax.scan(add_offset, (jnp.zeros((*shape, channels)),
                                                 jnp.zeros((*shape, 1))),
                                    jnp.arange(patch_size * patch_size))
  return total / weight_sum


@functools.partial(jax.jit, static_argnames=("window_size", "patch_size", "em_iterations",
                                             "nnf_iterations"))
def _complete_level(image, mask, start, corner, key, *, window_size, patch_size: int,
                    em_iterations: int, nnf_iterations: int):
  candidates = allowed_patches(mask, patch_size)
  window_mask = lax.dynamic_slice(mask, corner, window_size)
  grid = patch_grid_shape(window_size, patch_size)
  start_key, loop_key = jax.random.split(key)
  positions = patchmatch.random_positions(start_key, grid, candidates)

  def iteration(carry, step_key):
    current, positions = carry
    window = lax.dynamic_slice(current, (*corner, 0), (*window_size, current.shape[-1]))
    field, _ = patchmatch.search(window, current, candidates, positions, step_key,
                                 patch_size=patch_size, iterations=nnf_iterations)
    voted = vote(image_patches(current, patch_size), field, window_mask, patch_size)
    window = jnp.where(window_mask[..., None], voted, window)
    return (lax.dynamic_update_slice(current, window, (*corner, 0)), field.positions), None

  start = jnp.where(mask[..., None], start, image)
  (current, _), _ = lax.scan(iteration, (start, positions),
                             jax.random.split(loop_key, em_iterations))
  return current


def complete_hole(image, mask, key: jax.Array, *, patch_size: int = 7, levels: int | None = None,
                  em_iterations: int = 5, nnf_iterations: int = 3) -> jax.Array:
  """Fills the hole of `image` with patches of its known part, coarse to fine.

  See the module docstring for the search/vote iteration and the pyramid.

  Args:
    image: `[H, W]` or `[H, W, C]`.
    mask: boolean `[H, W]`, True in the hole. What the image holds there is ignored.
    key: a PRNG key (PatchMatch's random initialization and search).
    patch_size: P, the side of the square patches.
    levels: pyramid levels (1 = the full resolution only); None for `default_levels`.
    em_iterations: search + vote rounds per level.
    nnf_iterations: PatchMatch iterations per search.

  Returns:
    `[H, W, C]` float32, equal to `image` outside the hole.
  """
  image = as_image("image", image)
  mask = check_mask(mask, image.shape)
  patchmatch.check_patch_size(patch_size, image.shape)
  if levels is None:
    levels = default_levels(image.shape, patch_size)
  for name, value in (("levels", levels), ("em_iterations", em_iterations),
                      ("nnf_iterations", nnf_iterations)):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f"{name} must be an int >= 1, got {value!r}")
  scales = pyramid(image, mask, levels)
  patchmatch.check_patch_size(patch_size, scales[-1][0].shape)
  for level, (level_image, level_mask) in enumerate(scales):
    if not bool(jnp.any(allowed_patches(level_mask, patch_size))):
      raise ValueError(f"the hole leaves no {patch_size}x{patch_size} patch fully outside it at "
                       f"pyramid level {level} (shape {level_image.shape[:2]}); use a smaller "
                       f"patch_size or fewer levels (got patch_size={patch_size}, "
                       f"levels={levels})")
  current = None
  for level_key, (level_image, level_mask) in zip(jax.random.split(key, levels),
                                                   reversed(scales)):
    if current is None:
      start = harmonic_fill(level_image, level_mask)
    else:
      start = jax.image.resize(current, level_image.shape, "linear")
    corner, window_size = source_window(level_mask, patch_size)
    current = _complete_level(level_image, level_mask, start, jnp.array(corner), level_key,
                              window_size=window_size, patch_size=patch_size,
                              em_iterations=em_iterations, nnf_iterations=nnf_iterations)
  return jnp.where(mask[..., None], current, image)
