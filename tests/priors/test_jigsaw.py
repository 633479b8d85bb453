import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cnn_jax.priors.jigsaw import (MEASURES, assemble_tiles, best_buddies, buddy_estimate,
                                   chance_levels, compatibility, cut_tiles, direct_comparison,
                                   edge_dissimilarity, neighbour_comparison, place_greedily,
                                   shuffle_tiles, solve_jigsaw)


def smooth_image(height, width, channels=3):
  """A smooth colour image with no two identical rows or columns (a curved colour gradient)."""
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  planes = [np.sin(0.11 * y + 0.9 * c) + np.cos(0.07 * x + 0.4 * c) + 0.004 * x * y / (1 + c)
            for c in range(channels)]
  return np.stack(planes, -1).astype(np.float32)


def monotone_image(height, width):
  """A smooth colour image increasing along both axes in every channel (no flat direction)."""
  y, x = np.mgrid[0:height, 0:width].astype(np.float32) / max(height, width)
  return np.stack([(1 + c) * x + (3 - c) * y + 0.5 * x * y for c in range(3)], -1)


def solve_shuffled(image, tile_size, key, measure):
  tiles, grid = cut_tiles(image, tile_size)
  shuffled, permutation = shuffle_tiles(key, tiles)
  return np.asarray(permutation)[solve_jigsaw(shuffled, grid, measure)], grid


@settings(max_examples=6)
@given(rows=st.integers(1, 4), cols=st.integers(1, 4), side=st.integers(1, 5),
       channels=st.integers(1, 3))
def test_cut_then_assemble_in_order_is_exact(rows, cols, side, channels):
  if rows * cols < 2:
    return
  image = np.random.default_rng(rows * 100 + cols).random(
      (rows * side, cols * side, channels)).astype(np.float32)
  tiles, grid = cut_tiles(image, side)
  assert grid == (rows, cols) and tiles.shape == (rows * cols, side, side, channels)
  np.testing.assert_array_equal(assemble_tiles(tiles, np.arange(rows * cols), grid), image)
  # Tile k is the window at cell (k // cols, k % cols).
  k = rows * cols - 1
  np.testing.assert_array_equal(tiles[k], image[(k // cols) * side:(k // cols + 1) * side,
                                                (k % cols) * side:(k % cols + 1) * side])


def test_grey_image_gets_one_channel():
  tiles, grid = cut_tiles(np.zeros((8, 12)), 4)
  assert grid == (2, 3) and tiles.shape == (6, 4, 4, 1)


@settings(max_examples=6)
@given(n=st.integers(2, 40), seed=st.integers(0, 2**31 - 1))
def test_shuffle_is_a_permutation_that_argsort_undoes(n, seed):
  tiles = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1)
  shuffled, permutation = shuffle_tiles(jax.random.key(seed), tiles)
  np.testing.assert_array_equal(np.sort(permutation), np.arange(n))
  np.testing.assert_array_equal(shuffled[:, 0, 0, 0], permutation)
  np.testing.assert_array_equal(np.asarray(shuffled)[np.argsort(permutation)], tiles)


def test_metrics_of_the_identity_are_one():
  assert float(direct_comparison(np.arange(12))) == 1.0
  assert float(neighbour_comparison(np.arange(12), (3, 4))) == 1.0


def test_metrics_of_a_swap_of_two_tiles():
  # [[1 0 2] [3 4 5] [6 7 8]]: 7 of 9 tiles in place; of the 12 true pairs, (0,1), (1,2),
  # (0,3) and (1,4) are lost.
  placement = np.array([1, 0, 2, 3, 4, 5, 6, 7, 8])
  assert float(direct_comparison(placement)) == pytest.approx(7 / 9)
  assert float(neighbour_comparison(placement, (3, 3))) == pytest.approx(8 / 12)


def test_a_shifted_solution_scores_zero_direct_but_keeps_most_neighbours():
  # The 2x3 image with its columns rotated by one: [[1 2 0] [4 5 3]].
  placement = np.array([1, 2, 0, 4, 5, 3])
  assert float(direct_comparison(placement)) == 0.0
  # Right pairs (1,2), (4,5) and all 3 down pairs survive, of 2 * 2 + 1 * 3 = 7.
  assert float(neighbour_comparison(placement, (2, 3))) == pytest.approx(5 / 7)


def test_a_row_wrap_is_not_a_neighbour():
  # [[2 3 5] [1 0 4]]: tiles 2 and 3 are consecutive numbers but not neighbours in a 2x3 grid.
  placement = np.array([2, 3, 5, 1, 0, 4])
  assert float(neighbour_comparison(placement, (2, 3))) == 0.0


@pytest.mark.parametrize("grid", [(3, 3), (2, 5), (4, 6)])
def test_chance_levels_match_random_placements(grid):
  rows, cols = grid
  rng = np.random.default_rng(0)
  placements = np.stack([rng.permutation(rows * cols) for _ in range(20000)])
  direct, neighbour = chance_levels(grid)
  # 20,000 placements: the standard error of each mean is below 0.002.
  assert float(np.mean(direct_comparison(placements))) == pytest.approx(direct, abs=0.01)
  assert float(np.mean(neighbour_comparison(placements, grid))) == pytest.approx(neighbour,
                                                                                  abs=0.01)


def test_chance_level_of_a_square_grid_is_one_over_m_m_plus_one():
  assert chance_levels((6, 6)) == pytest.approx((1 / 36, 1 / 42))


@pytest.mark.parametrize("measure", MEASURES)
def test_true_neighbour_has_the_lowest_dissimilarity_on_a_smooth_image(measure):
  tiles, (rows, cols) = cut_tiles(monotone_image(40, 40), 8)
  dissimilarity = np.array(edge_dissimilarity(tiles, measure))
  dissimilarity[:, np.arange(rows * cols), np.arange(rows * cols)] = np.inf
  best = dissimilarity.argmin(-1)
  k = np.arange(rows * cols)
  has_right, has_down = k % cols != cols - 1, k < (rows - 1) * cols
  np.testing.assert_array_equal(best[0][has_right], k[has_right] + 1)
  np.testing.assert_array_equal(best[1][has_down], k[has_down] + cols)
  np.testing.assert_array_equal(best[2][k % cols != 0], k[k % cols != 0] - 1)
  np.testing.assert_array_equal(best[3][k >= cols], k[k >= cols] - cols)


def test_left_and_up_are_right_and_down_transposed():
  tiles, _ = cut_tiles(np.random.default_rng(1).random((12, 18, 2)), 6)
  dissimilarity = np.asarray(edge_dissimilarity(tiles, "lpq"))
  np.testing.assert_array_equal(dissimilarity[2], dissimilarity[0].T)
  np.testing.assert_array_equal(dissimilarity[3], dissimilarity[1].T)


def test_sum_of_squared_differences_is_lpq_with_p_and_q_two():
  a = np.zeros((2, 2, 2, 1), np.float32)
  a[1] = [[[1.0], [2.0]], [[3.0], [5.0]]]  # tile 1, rows [1 2] and [3 5]
  dissimilarity = np.asarray(edge_dissimilarity(a, "lpq", p=2.0, q=2.0))
  # Tile 1 right of tile 0: its left column (1, 3) against tile 0's zeros: 1 + 9.
  assert dissimilarity[0, 0, 1] == pytest.approx(10.0)
  # Tile 0 right of tile 1: tile 1's right column (2, 5): 4 + 25.
  assert dissimilarity[0, 1, 0] == pytest.approx(29.0)


def test_prediction_measure_forgives_a_gradient_that_continues():
  ramp = np.tile(np.arange(8, dtype=np.float32), (4, 1))[..., None]  # value = column index
  tiles, _ = cut_tiles(ramp, 4)
  assert float(edge_dissimilarity(tiles, "prediction")[0, 0, 1]) == pytest.approx(0.0)
  assert float(edge_dissimilarity(tiles, "lpq")[0, 0, 1]) > 0.0


def test_compatibility_is_a_normalized_similarity():
  tiles, _ = cut_tiles(smooth_image(24, 32), 8)
  dissimilarity = edge_dissimilarity(tiles)
  compatibilities = np.asarray(compatibility(dissimilarity))
  assert compatibilities.min() >= 0.0 and compatibilities.max() <= 1.0
  np.testing.assert_array_equal(compatibilities[:, np.arange(12), np.arange(12)], 0.0)
  masked = np.where(np.eye(12, dtype=bool), np.inf, np.asarray(dissimilarity))
  np.testing.assert_array_equal(compatibilities.argmax(-1), masked.argmin(-1))


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("seed", [0, 1])
def test_solver_recovers_a_smooth_image_exactly(measure, seed):
  placement, grid = solve_shuffled(smooth_image(32, 48), 8, jax.random.key(seed), measure)
  np.testing.assert_array_equal(placement, np.arange(grid[0] * grid[1]))


def test_solver_recovers_a_downsampled_photo_exactly():
  import skimage.data
  import skimage.transform
  photo = skimage.transform.resize(skimage.data.astronaut(), (128, 128), anti_aliasing=True)
  placement, grid = solve_shuffled(photo.astype(np.float32), 32, jax.random.key(3), "prediction")
  assert float(direct_comparison(placement)) == 1.0
  assert float(neighbour_comparison(placement, grid)) == 1.0


def test_solver_is_near_chance_on_white_noise():
  scores = []
  for seed in range(8):
    noise = np.asarray(jax.random.uniform(jax.random.key(seed), (24, 24, 3)))
    placement, grid = solve_shuffled(noise, 6, jax.random.key(100 + seed), "prediction")
    scores.append(float(neighbour_comparison(placement, grid)))
  # Chance is 1/20 on 4x4; the edges of i.i.d. noise carry no information about adjacency, so
  # the mean of 8 puzzles (standard error about 0.02) stays far below a photo's (~1).
  assert np.mean(scores) < 0.2


def test_solution_does_not_depend_on_the_shuffle():
  # The solver sees only pixels: on noise (no exact ties) two shuffles give the same arrangement.
  noise = np.asarray(jax.random.uniform(jax.random.key(7), (20, 20, 3)))
  first, _ = solve_shuffled(noise, 5, jax.random.key(1), "prediction")
  second, _ = solve_shuffled(noise, 5, jax.random.key(2), "prediction")
  np.testing.assert_array_equal(first, second)


@settings(max_examples=10)
@given(rows=st.integers(1, 5), cols=st.integers(2, 5), seed=st.integers(0, 1000))
def test_greedy_placement_fills_the_frame_with_every_tile_once(rows, cols, seed):
  n = rows * cols
  compatibilities = np.random.default_rng(seed).random((4, n, n))
  placement = place_greedily(compatibilities, (rows, cols))
  np.testing.assert_array_equal(np.sort(placement), np.arange(n))


def test_best_buddies_are_mutual():
  tiles, _ = cut_tiles(smooth_image(32, 32), 8)
  buddies = best_buddies(compatibility(edge_dissimilarity(tiles)))
  opposite = [2, 3, 0, 1]
  for d in range(4):
    for i in np.flatnonzero(buddies[d] >= 0):
      assert buddies[opposite[d], buddies[d, i]] == i
  assert buddy_estimate(np.arange(16), buddies, (4, 4)) == 1.0


@pytest.mark.parametrize("call, message", [
    (lambda: cut_tiles(np.zeros((30, 32, 3)), 8), "tile_size must divide"),
    (lambda: cut_tiles(np.zeros((32, 32)), 0), "tile_size must be an int >= 1"),
    (lambda: cut_tiles(np.zeros((32, 32)), 8.0), "tile_size must be an int >= 1"),
    (lambda: cut_tiles(np.zeros((8, 8)), 8), "at least 2 tiles"),
    (lambda: cut_tiles(np.zeros((2, 8, 8, 3)), 4), r"image must be \[H, W\]"),
    (lambda: edge_dissimilarity(np.zeros((4, 3, 3, 1)), "ssd"), "measure must be one of"),
    (lambda: edge_dissimilarity(np.zeros((4, 3, 3, 1)), "lpq", p=0.0), "p and q must be > 0"),
    (lambda: edge_dissimilarity(np.zeros((4, 1, 1, 1)), "prediction"), "side >= 2"),
    (lambda: edge_dissimilarity(np.zeros((4, 3, 2, 1))), "square"),
    (lambda: assemble_tiles(np.zeros((4, 2, 2, 1)), np.arange(3), (2, 2)), "placement must"),
    (lambda: solve_jigsaw(np.zeros((6, 2, 2, 1)), (2, 2)), "rows \\* cols = 4"),
    (lambda: place_greedily(np.zeros((4, 4, 4)), (2, 2), max_regrowths=-1), "max_regrowths"),
])
def test_bad_arguments_are_rejected(call, message):
  with pytest.raises(ValueError, match=message):
    call()
