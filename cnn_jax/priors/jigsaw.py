"""Square-tile jigsaw puzzles: cut, shuffle, score edges, reassemble greedily, measure.

The seed notes' structure prior: "if we want to solve a small-piece jigsaw puzzle, where an image
is tessellated and each piece is in a random position, we can just rearrange the pieces in order
for them to be close to the ones that have the lower jump in color". This module makes that a
solver in the style of Pomeranz, Shemesh & Ben-Shahar 2011 ("A fully automated greedy square
jigsaw puzzle solver"): known orientation, known grid size, no clues.

Conventions. An image `[H, W, C]` (or grey `[H, W]`) cut with tile side T gives a grid of
`rows = H / T` by `cols = W / T` tiles, numbered row-major: tile `k` is cell `(k // cols,
k % cols)` of the original. A *placement* `[rows * cols]` lists, cell by cell (row-major), the
index of the tile put there; the identity `arange(n)` is the original image. Directions
`d = 0, 1, 2, 3` are right, down, left, up; an array `X[d, i, j]` is about tile `j` placed at
direction `d` of tile `i` (so `X[2, i, j] = X[0, j, i]`, `X[3, i, j] = X[1, j, i]`).

Dissimilarities (lower = better fit), for `j` to the right of `i`, with `x[r, c, ch]` a tile's
pixels, `T` its side, and `(L_p)^q` as in Pomeranz et al.:

* `'lpq'`, the plain colour jump across the shared edge the notes describe:
  `D(i, j) = (sum_{r, ch} |x_i[r, T-1, ch] - x_j[r, 0, ch]|^p)^(q/p)`; `p = q = 2` is the sum of
  squared differences (SSD), Pomeranz's best `(p, q) = (3/10, 1/16)` is the default.
* `'prediction'`, Pomeranz et al.'s prediction-based compatibility: each tile extrapolates its
  border linearly one pixel across the edge and the prediction is compared with the neighbour's
  actual border, from both sides:
  `D(i, j) = (sum_{r, ch} |2 x_i[r, T-1] - x_i[r, T-2] - x_j[r, 0]|^p
             + |2 x_j[r, 0] - x_j[r, 1] - x_i[r, T-1]|^p)^(q/p)`.
  A smooth image continues its gradient across a true edge, so a true neighbour predicts well
  even where the colour itself changes; the plain jump penalizes every gradient.

Compatibility (Pomeranz's normalization): `C[d, i, j] = exp(-D[d, i, j] / q_{d,i})`, with
`q_{d,i}` the first quartile of `{D[d, i, j] : j != i}` and `C[d, i, i] = 0`. Tiles `i` and `j`
are *best buddies* in direction `d` when `j = argmax_k C[d, i, k]` and `i = argmax_k C[d', j, k]`
with `d'` the opposite direction.

Metrics (Cho, Avidan & Freeman 2010): *direct comparison*, the fraction of tiles at their true
cell; *neighbour comparison*, the fraction of the original's adjacent pairs (right and down, each
pair once) that are adjacent in the same relation in the solution. A solver that assembles the
image correctly but one cell to the side scores 1 - (boundary share) on neighbours and near 0
on direct comparison: direct comparison penalizes a shifted solution, as in the literature.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

DIRECTIONS = ("right", "down", "left", "up")
MEASURES = ("lpq", "prediction")
# Cell offsets (row, column) of the four directions, and each direction's opposite.
_OFFSETS = np.array([(0, 1), (1, 0), (0, -1), (-1, 0)])
_OPPOSITE = np.array([2, 3, 0, 1])


def cut_tiles(image, tile_size: int) -> tuple[jax.Array, tuple[int, int]]:
  """`image: [H, W]` or `[H, W, C]` -> `(tiles [rows * cols, T, T, C], (rows, cols))`, row-major.

  Grey images get a channel axis of 1.
  """
  image = jnp.asarray(image)
  if image.ndim not in (2, 3):
    raise ValueError(f"image must be [H, W] or [H, W, C], got shape {image.shape}")
  if image.ndim == 2:
    image = image[..., None]
  height, width, channels = image.shape
  if not isinstance(tile_size, (int, np.integer)) or isinstance(tile_size, bool) or tile_size < 1:
    raise ValueError(f"tile_size must be an int >= 1, got {tile_size!r}")
  if height % tile_size or width % tile_size:
    raise ValueError(f"tile_size must divide the image height and width, got tile_size="
                     f"{tile_size} for an image of {height}x{width}")
  rows, cols = height // tile_size, width // tile_size
  if rows * cols < 2:
    raise ValueError(f"the image must hold at least 2 tiles, got a {rows}x{cols} grid of "
                     f"tile_size={tile_size} for an image of {height}x{width}")
  tiles = image.reshape(rows, tile_size, cols, tile_size, channels).transpose(0, 2, 1, 3, 4)
  return tiles.reshape(rows * cols, tile_size, tile_size, channels), (rows, cols)


def assemble_tiles(tiles, placement, grid: tuple[int, int]) -> jax.Array:
  """`tiles: [n, T, T, C]`, `placement: [rows * cols]` (tile per cell) -> `[rows T, cols T, C]`."""
  tiles = jnp.asarray(tiles)
  rows, cols = grid
  if tiles.ndim != 4 or tiles.shape[0] != rows * cols:
    raise ValueError(f"tiles must be [rows * cols, T, T, C] = [{rows * cols}, T, T, C] for grid "
                     f"{grid}, got shape {tiles.shape}")
  if np.shape(placement) != (rows * cols,):
    raise ValueError(f"placement must have shape ({rows * cols},) for grid {grid}, got "
                     f"{np.shape(placement)}")
  side, channels = tiles.shape[1], tiles.shape[3]
  placed = tiles[jnp.asarray(placement)].reshape(rows, cols, side, side, channels)
  return placed.transpose(0, 2, 1, 3, 4).reshape(rows * side, cols * side, channels)


def shuffle_tiles(key: jax.Array, tiles) -> tuple[jax.Array, jax.Array]:
  """A random order of the tiles: `(tiles[permutation], permutation)`, `permutation: [n]`.

  Shuffled tile `k` is original tile `permutation[k]`; a placement of shuffled indices becomes a
  placement of original indices as `permutation[placement]`.
  """
  tiles = jnp.asarray(tiles)
  permutation = jax.random.permutation(key, tiles.shape[0])
  return tiles[permutation], permutation


def _check_measure(measure: str, p: float, q: float, tile_size: int) -> None:
  if measure not in MEASURES:
    raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
  if not (p > 0 and q > 0):
    raise ValueError(f"p and q must be > 0, got p={p!r}, q={q!r}")
  if measure == "prediction" and tile_size < 2:
    raise ValueError(f"the 'prediction' measure needs tiles of side >= 2, got {tile_size}")


def _right_dissimilarity(tiles: jax.Array, measure: str, p: float, q: float) -> jax.Array:
  """`D[i, j]` for tile j to the right of tile i: `tiles [n, T, T, C]` -> `[n, n]`."""
  last, first = tiles[:, :, -1], tiles[:, :, 0]                       # [n, T, C] each
  power_sum = lambda jump: jnp.sum(jnp.abs(jump) ** p, axis=(-2, -1))  # over rows and channels
  if measure == "lpq":
    total = power_sum(last[:, None] - first[None, :])
  else:
    ahead = 2 * last - tiles[:, :, -2]     # i's guess of the column right of its edge
    behind = 2 * first - tiles[:, :, 1]    # j's guess of the column left of its edge
    total = (power_sum(ahead[:, None] - first[None, :])
             + power_sum(behind[None, :] - last[:, None]))
  return total ** (q / p)


@functools.partial(jax.jit, static_argnames=("measure",))
def _edge_dissimilarity(tiles, measure, p, q):
  right = _right_dissimilarity(tiles, measure, p, q)
  down = _right_dissimilarity(tiles.transpose(0, 2, 1, 3), measure, p, q)
  return jnp.stack([right, down, right.T, down.T])


def edge_dissimilarity(tiles, measure: str = "prediction", p: float = 0.3,
                       q: float = 1 / 16) -> jax.Array:
  """`D[d, i, j]` for every ordered tile pair and direction: `tiles [n, T, T, C]` -> `[4, n, n]`.

  Jit-compiled; batch puzzles of one shape with `jax.vmap`. The diagonal `D[d, i, i]` is
  computed like any other entry and ignored downstream.
  """
  tiles = jnp.asarray(tiles, jnp.float32)
  if tiles.ndim != 4 or tiles.shape[1] != tiles.shape[2]:
    raise ValueError(f"tiles must be [n, T, T, C] (square), got shape {tiles.shape}")
  _check_measure(measure, p, q, tiles.shape[1])
  return _edge_dissimilarity(tiles, measure, p, q)


@jax.jit
def compatibility(dissimilarity) -> jax.Array:
  """`C[d, i, j] = exp(-D[d, i, j] / q_{d,i})`, `q_{d,i}` the first quartile of row `(d, i)`.

  `dissimilarity: [4, n, n]` -> `[4, n, n]` in [0, 1], with 0 on the diagonal (a tile is never
  its own neighbour). A row whose quartile is 0 (several exact continuations) keeps only its
  zero-dissimilarity entries (compatibility 1).
  """
  n = dissimilarity.shape[-1]
  off_diagonal = ~jnp.eye(n, dtype=bool)
  quartile = jnp.nanquantile(jnp.where(off_diagonal, dissimilarity, jnp.nan), 0.25, axis=-1,
                             keepdims=True)
  quartile = jnp.maximum(quartile, jnp.finfo(jnp.float32).tiny)
  return jnp.where(off_diagonal, jnp.exp(-dissimilarity / quartile), 0.0)


def best_buddies(compatibilities) -> np.ndarray:
  """`[4, n]`: the best buddy of tile `i` in direction `d`, or -1 where it has none.

  `compatibilities: [4, n, n]`, higher = better; the diagonal is ignored.
  """
  compatibilities = np.asarray(compatibilities, np.float64)
  n = compatibilities.shape[-1]
  best = np.where(np.eye(n, dtype=bool), -np.inf, compatibilities).argmax(-1)   # [4, n]
  mutual = best[_OPPOSITE[:, None], best] == np.arange(best.shape[1])
  return np.where(mutual, best, -1)


def place_greedily(compatibilities, grid: tuple[int, int], max_regrowths: int = 4) -> np.ndarray:
  """Greedy placement within a `rows x cols` frame: `[4, n, n]` -> placement `[rows * cols]`.

  Pomeranz et al.'s placer. Start from the most compatible best-buddy pair; then, repeatedly,
  over the empty cells next to placed tiles whose use keeps the assembly's bounding box within
  `rows x cols` (the assembly floats in the frame, growing in any direction until it meets the
  frame's size):

  1. if some unplaced tile is the best buddy of *every* placed neighbour of some cell (in that
     direction), place such a (cell, tile) pair, preferring cells with more placed neighbours
     and then the highest mean compatibility with them;
  2. otherwise, among the cells with the most placed neighbours, place the (cell, tile) pair of
     highest mean compatibility `mean_e C[e, tile, neighbour_e]` (the tile's own normalized row).

  Then Pomeranz's shift correction: the largest connected segment of the result whose adjacent
  tiles are all best buddies is kept as the seed of a new growth (so a correct region that
  the first growth pushed against the wrong side of the frame can move), and the new placement
  is kept while it raises the best-buddy estimate (the fraction of adjacent pairs that are best
  buddies, no ground truth used), at most `max_regrowths` times.

  Ties go to the first free cell in row-major order, then the lowest tile index. Cost: each
  growth takes `n` steps; a step updates the scores of the placed tile's 4 free neighbours
  (O(n) each) and ranks every free cell (F of them: O(rows + cols) for a compact assembly, O(n)
  at worst) against every tile, so O(n^2 F) time per growth and O(n^2) memory for the
  compatibilities. A numpy loop; n is at most a few hundred here.
  """
  compatibilities = np.asarray(compatibilities, np.float64)
  rows, cols = grid
  n = compatibilities.shape[1]
  if compatibilities.shape != (4, n, n) or n != rows * cols:
    raise ValueError(f"compatibilities must be [4, n, n] with n = rows * cols = {rows * cols}, "
                     f"got shape {compatibilities.shape}")
  if not isinstance(max_regrowths, int) or max_regrowths < 0:
    raise ValueError(f"max_regrowths must be an int >= 0, got {max_regrowths!r}")
  # A tile is never its own neighbour, whatever the diagonal holds.
  compatibilities = np.where(np.eye(n, dtype=bool), -np.inf, compatibilities)
  buddies = best_buddies(compatibilities)
  has_buddy = buddies >= 0
  if has_buddy.any():
    seed_scores = np.where(has_buddy, compatibilities[np.arange(4)[:, None], np.arange(n),
                                                      np.maximum(buddies, 0)], -1.0)
    direction, first = np.unravel_index(np.argmax(seed_scores), seed_scores.shape)
    second = buddies[direction, first]
  else:
    direction, first = np.unravel_index(np.argmax(compatibilities.max(-1)), (4, n))
    second = compatibilities[direction, first].argmax()
  seed = [(first, (0, 0))]
  if _fits([0, 0, 0, 0], _OFFSETS[direction], rows, cols):
    seed.append((second, tuple(_OFFSETS[direction])))
  placement = _grow(compatibilities, buddies, grid, seed)
  estimate = buddy_estimate(placement, buddies, grid)
  for _ in range(max_regrowths):
    regrown = _grow(compatibilities, buddies, grid, _largest_buddy_segment(placement, buddies,
                                                                            grid))
    regrown_estimate = buddy_estimate(regrown, buddies, grid)
    if regrown_estimate <= estimate:
      break
    placement, estimate = regrown, regrown_estimate
  return placement


def _grow(compatibilities: np.ndarray, buddies: np.ndarray, grid: tuple[int, int],
          seed: list[tuple[int, tuple[int, int]]]) -> np.ndarray:
  """Places the `seed` tiles at their relative cells, then the rest greedily (rules 1-2).

  Every free cell next to the assembly keeps, for all n tiles, the sum of its compatibilities
  with the cell's placed neighbours and whether the tile is their best buddy in every direction;
  placing a tile updates only its 4 neighbouring cells.
  """
  rows, cols = grid
  n = compatibilities.shape[1]
  placed = np.zeros(n, bool)
  cells = {}      # (row, col) -> tile
  frontier = {}   # free (row, col) -> [score sum [n], placed-neighbour count, agrees [n]]
  bounds = None   # min row, max row, min column, max column

  def put(tile, cell):
    nonlocal bounds
    row, col = cell
    cells[cell] = tile
    placed[tile] = True
    frontier.pop(cell, None)
    bounds = ([row, row, col, col] if bounds is None else
              [min(bounds[0], row), max(bounds[1], row), min(bounds[2], col),
               max(bounds[3], col)])
    for e, (dr, dc) in enumerate(_OFFSETS):
      other = (row + dr, col + dc)
      if other in cells:
        continue
      entry = frontier.setdefault(other, [np.zeros(n), 0, np.ones(n, bool)])
      # The new tile sits at the opposite direction of the free cell `other`.
      entry[0] = entry[0] + compatibilities[_OPPOSITE[e], :, tile]
      entry[1] += 1
      entry[2] = entry[2] & (buddies[_OPPOSITE[e]] == tile)

  for tile, offset in seed:
    put(tile, tuple(offset))
  while not placed.all():
    free = sorted(cell for cell in frontier if _fits(bounds, cell, rows, cols))
    count = np.array([frontier[cell][1] for cell in free])                    # [F]
    score = np.stack([frontier[cell][0] for cell in free]) / count[:, None]   # [F, n]
    agrees = np.stack([frontier[cell][2] for cell in free]) & ~placed
    if agrees.any():
      ranked = np.where(agrees, count[:, None] + score, -np.inf)
    else:
      ranked = np.where((count == count.max())[:, None] & ~placed, score, -np.inf)
    cell, tile = np.unravel_index(np.argmax(ranked), ranked.shape)
    put(tile, free[cell])
  top, left = bounds[0], bounds[2]
  return np.array([cells[(top + r, left + c)] for r in range(rows) for c in range(cols)])


def _buddy_links(placement, buddies: np.ndarray, grid: tuple[int, int]):
  """Best-buddy flags of the right and down pairs: `[rows, cols-1], [rows-1, cols]`."""
  tiles = np.asarray(placement).reshape(grid)
  right = buddies[0][tiles[:, :-1]] == tiles[:, 1:]
  down = buddies[1][tiles[:-1, :]] == tiles[1:, :]
  return right, down


def buddy_estimate(placement, buddies, grid: tuple[int, int]) -> float:
  """Pomeranz's best-buddies estimate: the fraction of a placement's adjacent pairs that are
  best buddies (`buddies` from `best_buddies`). Needs no ground truth."""
  right, down = _buddy_links(placement, np.asarray(buddies), grid)
  return float((right.sum() + down.sum()) / (right.size + down.size))


def _largest_buddy_segment(placement, buddies, grid):
  """The largest segment of cells joined by best buddies, as `(tile, (dr, dc))` pairs.

  Pomeranz et al.'s segmentation: grown from a cell by breadth-first search, a neighbouring
  cell joins only if its tile is a best buddy of *every* tile of the segment next to it.
  """
  rows, cols = grid
  tiles = np.asarray(placement).reshape(grid)
  right, down = _buddy_links(placement, buddies, grid)

  def linked(cell, other):  # best buddies across the edge between two adjacent cells
    (r, c), (r2, c2) = sorted([cell, other])
    return right[r, c] if r == r2 else down[r, c]

  segment_of = -np.ones(grid, np.int64)
  segments = []
  for start in np.ndindex(rows, cols):
    if segment_of[start] >= 0:
      continue
    label = len(segments)
    segment_of[start] = label
    queue, members = [start], []
    while queue:
      cell = queue.pop(0)
      members.append(cell)
      for dr, dc in _OFFSETS:
        candidate = (cell[0] + dr, cell[1] + dc)
        if not (0 <= candidate[0] < rows and 0 <= candidate[1] < cols):
          continue
        if segment_of[candidate] >= 0:
          continue
        touching = [(candidate[0] + er, candidate[1] + ec) for er, ec in _OFFSETS]
        touching = [t for t in touching if 0 <= t[0] < rows and 0 <= t[1] < cols
                    and segment_of[t] == label]
        if all(linked(candidate, t) for t in touching):
          segment_of[candidate] = label
          queue.append(candidate)
    segments.append(members)
  largest = max(segments, key=len)
  r0, c0 = largest[0]
  return [(tiles[r, c], (r - r0, c - c0)) for r, c in largest]


def _fits(bounds, cell, rows: int, cols: int) -> bool:
  """Whether adding `cell` keeps the assembly's bounding box within `rows x cols`."""
  row, col = cell
  return (max(bounds[1], row) - min(bounds[0], row) < rows
          and max(bounds[3], col) - min(bounds[2], col) < cols)


def solve_jigsaw(tiles, grid: tuple[int, int], measure: str = "prediction", p: float = 0.3,
                 q: float = 1 / 16) -> np.ndarray:
  """Reassembles `tiles [rows * cols, T, T, C]` into `grid`: placement `[rows * cols]`.

  `edge_dissimilarity` -> `compatibility` -> `place_greedily`; see those for the definitions.
  """
  rows, cols = grid
  if np.shape(tiles)[0] != rows * cols:
    raise ValueError(f"tiles must hold rows * cols = {rows * cols} tiles for grid {grid}, got "
                     f"{np.shape(tiles)[0]}")
  return place_greedily(compatibility(edge_dissimilarity(tiles, measure, p, q)), grid)


def direct_comparison(placement) -> jax.Array:
  """Fraction of cells holding their own tile: `mean_k [placement[k] == k]`, original indices."""
  placement = jnp.asarray(placement)
  return jnp.mean(placement == jnp.arange(placement.shape[-1]), axis=-1)


def neighbour_comparison(placement, grid: tuple[int, int]) -> jax.Array:
  """Fraction of the original's adjacent pairs that the placement keeps adjacent, same relation.

  `placement [..., rows * cols]` (original tile indices) -> `[...]`. The original has
  `rows (cols - 1)` right pairs `(k, k + 1)` and `(rows - 1) cols` down pairs `(k, k + cols)`;
  each solution pair that is one of them counts once.
  """
  rows, cols = grid
  tiles = jnp.asarray(placement).reshape(*np.shape(placement)[:-1], rows, cols)
  right = (tiles[..., :, 1:] == tiles[..., :, :-1] + 1) & (tiles[..., :, :-1] % cols != cols - 1)
  down = tiles[..., 1:, :] == tiles[..., :-1, :] + cols
  pairs = rows * (cols - 1) + (rows - 1) * cols
  return (jnp.sum(right, axis=(-2, -1)) + jnp.sum(down, axis=(-2, -1))) / pairs


def chance_levels(grid: tuple[int, int]) -> tuple[float, float]:
  """Expected (direct, neighbour) comparison of a uniformly random placement.

  Direct: `1 / n`. Neighbour: a solution pair of `h = rows (cols - 1)` right pairs is a true
  right pair with probability `h / (n (n - 1))` (likewise `v = (rows - 1) cols` down pairs), so
  the expectation is `(h^2 + v^2) / (n (n - 1) (h + v))`; `1 / (m (m + 1))` for an m x m grid.
  """
  rows, cols = grid
  n = rows * cols
  right, down = rows * (cols - 1), (rows - 1) * cols
  return 1 / n, (right ** 2 + down ** 2) / (n * (n - 1) * (right + down))
