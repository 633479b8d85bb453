import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cnn_jax.priors import patchmatch
from cnn_jax.priors.patchmatch import exact_nearest_neighbours, nearest_neighbour_field

PATCH = 5
# One source and one target shape for most tests: each new shape compiles again.
SOURCE_SHAPE, TARGET_SHAPE = (24, 28, 2), (26, 30, 2)


def smooth_image(seed: int, shape) -> np.ndarray:
  """Random smooth image: white noise blurred by a separable 5-tap box, then rescaled to [0, 1]."""
  noise = np.random.default_rng(seed).normal(size=(shape[0] + 4, shape[1] + 4, shape[2]))
  box = np.ones(5) / 5
  blurred = np.apply_along_axis(lambda row: np.convolve(row, box, "valid"), 0, noise)
  blurred = np.apply_along_axis(lambda column: np.convolve(column, box, "valid"), 1, blurred)
  return ((blurred - blurred.min()) / (blurred.max() - blurred.min())).astype(np.float32)


def nested_loop_nearest(source, target, patch, candidates):
  """For every source patch, the smallest SSD over the allowed target patches, by loops."""
  rows, columns = source.shape[0] - patch + 1, source.shape[1] - patch + 1
  best = np.full((rows, columns), np.inf)
  for y in range(rows):
    for x in range(columns):
      a = source[y:y + patch, x:x + patch].astype(np.float64)
      for v in range(target.shape[0] - patch + 1):
        for u in range(target.shape[1] - patch + 1):
          if candidates[v, u]:
            best[y, x] = min(best[y, x], np.sum((a - target[v:v + patch, u:u + patch]) ** 2))
  return best


def ssd_at(source, target, patch, positions):
  """The SSD of each source patch to the target patch at `positions`, by loops."""
  out = np.zeros(positions.shape[:2])
  for y in range(positions.shape[0]):
    for x in range(positions.shape[1]):
      v, u = positions[y, x]
      out[y, x] = np.sum((source[y:y + patch, x:x + patch].astype(np.float64)
                          - target[v:v + patch, u:u + patch]) ** 2)
  return out


@pytest.mark.parametrize("chunk_size", [7, 512])
def test_brute_force_equals_a_numpy_nested_loop(chunk_size):
  source, target = smooth_image(0, (9, 10, 2)), smooth_image(1, (8, 11, 2))
  candidates = np.random.default_rng(2).random((8 - 3 + 1, 11 - 3 + 1)) < 0.6
  field = exact_nearest_neighbours(source, target, patch_size=3, candidates=candidates,
                                   chunk_size=chunk_size)
  positions = np.asarray(field.positions)
  assert candidates[positions[..., 0], positions[..., 1]].all()
  # float32 sums of 18 squared differences of values in [0, 1]: ~1e-6 relative rounding, and
  # the chosen patch may differ from the loop's only by a tie within that rounding.
  np.testing.assert_allclose(field.distances, nested_loop_nearest(source, target, 3, candidates),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(field.distances, ssd_at(source, target, 3, positions), rtol=1e-5,
                             atol=1e-6)


@settings(max_examples=10)
@given(st.integers(0, 2 ** 31 - 1))
def test_no_distance_ever_increases_across_iterations(seed):
  source, target = smooth_image(seed % 97, SOURCE_SHAPE), smooth_image(seed % 89 + 1, TARGET_SHAPE)
  field, history = nearest_neighbour_field(source, target, jax.random.key(seed), patch_size=PATCH,
                                           iterations=5, every_iteration=True)
  distances = np.asarray(history.distances)  # [6, H', W']
  assert np.all(np.diff(distances, axis=0) <= 0)  # every pixel, hence the mean too
  assert np.all(np.diff(distances.mean((1, 2))) < 0)  # and the mean strictly, on these images
  np.testing.assert_array_equal(np.asarray(history.positions[-1]), np.asarray(field.positions))


def test_propagation_and_random_search_never_increase_any_pixel_distance():
  source, target = smooth_image(3, SOURCE_SHAPE), smooth_image(4, TARGET_SHAPE)
  source_patches = patchmatch.image_patches(jnp.asarray(source), PATCH)
  target_patches = patchmatch.image_patches(jnp.asarray(target), PATCH)
  candidates = jnp.ones(target_patches.shape[:2], bool)
  grid = source_patches.shape[:2]
  start = patchmatch.random_positions(jax.random.key(0), grid, candidates)
  field = patchmatch.NearestNeighbourField(
      start, patchmatch._distances(source_patches, target_patches, candidates, start))
  propagated = patchmatch.propagate(source_patches, target_patches, candidates, field,
                                    patchmatch.jump_steps(grid))
  searched = patchmatch.random_search(source_patches, target_patches, candidates, propagated,
                                      jax.random.key(1), patchmatch.search_radii(grid))
  assert np.all(np.asarray(propagated.distances) <= np.asarray(field.distances))
  assert np.all(np.asarray(searched.distances) <= np.asarray(propagated.distances))
  assert float(jnp.mean(searched.distances)) < float(jnp.mean(field.distances))


# The stated factor: on these 24x28 -> 26x30 smooth images (3 pairs, keys 0-19) the mean
# distance measured 3.2-3.8 times the exact one at the random start, 1.11-1.23 after one
# iteration and 1.02-1.09 after 5; 1.2 leaves room for other keys and CPUs while a search that
# only kept its random start (or stopped after one iteration, at worst) would fail.
FACTOR_AFTER_5_ITERATIONS = 1.2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_field_reaches_the_exact_distance_within_a_stated_factor(seed):
  source, target = smooth_image(10 + seed, SOURCE_SHAPE), smooth_image(20 + seed, TARGET_SHAPE)
  exact = exact_nearest_neighbours(source, target, patch_size=PATCH)
  field, means = nearest_neighbour_field(source, target, jax.random.key(seed), patch_size=PATCH,
                                         iterations=5)
  exact_mean = float(jnp.mean(exact.distances))
  assert float(means[-1]) <= FACTOR_AFTER_5_ITERATIONS * exact_mean
  assert float(means[0]) > 2.5 * exact_mean  # the random start is far from it
  # No field beats the exact one (up to float32 rounding of the same sums).
  assert np.all(np.asarray(field.distances) >= np.asarray(exact.distances) * (1 - 1e-5) - 1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_planted_copy_of_a_patch_is_found_exactly(seed):
  rng = np.random.default_rng(seed)
  source = rng.random(SOURCE_SHAPE).astype(np.float32)
  target = rng.random(TARGET_SHAPE).astype(np.float32)
  # A 2P x 2P block of the target pasted into the source: in white noise its (P + 1)^2 patches
  # have exactly one zero-distance match each, with one common offset. One random-search hit
  # is enough: the next propagation hands the offset to the whole block. Measured over keys
  # 0-29: all found after 10 iterations (28 of 30 after 5).
  source[6:6 + 2 * PATCH, 9:9 + 2 * PATCH] = target[13:13 + 2 * PATCH, 4:4 + 2 * PATCH]
  field, _ = nearest_neighbour_field(source, target, jax.random.key(seed), patch_size=PATCH,
                                     iterations=10)
  block = (slice(6, 6 + PATCH + 1), slice(9, 9 + PATCH + 1))
  offsets = np.asarray(field.positions)[block] - np.stack(
      np.mgrid[6:6 + PATCH + 1, 9:9 + PATCH + 1], -1)
  assert np.all(offsets == np.array([13 - 6, 4 - 9]))
  assert np.all(np.asarray(field.distances)[block] == 0.0)


def test_matches_stay_among_the_candidates():
  source, target = smooth_image(5, SOURCE_SHAPE), smooth_image(6, TARGET_SHAPE)
  grid = patchmatch.patch_grid_shape(TARGET_SHAPE, PATCH)
  candidates = np.zeros(grid, bool)
  candidates[3:9, 10:20] = True
  for field in (nearest_neighbour_field(source, target, jax.random.key(0), patch_size=PATCH,
                                        iterations=5, candidates=candidates)[0],
                exact_nearest_neighbours(source, target, patch_size=PATCH, candidates=candidates)):
    positions = np.asarray(field.positions)
    assert candidates[positions[..., 0], positions[..., 1]].all()
    assert np.all(np.isfinite(np.asarray(field.distances)))


def test_jump_steps_and_search_radii():
  assert patchmatch.jump_steps((20, 9)) == (16, 8, 4, 2, 1)
  assert patchmatch.jump_steps((17, 3)) == (16, 8, 4, 2, 1)
  assert patchmatch.jump_steps((1, 1)) == (1,)
  assert patchmatch.search_radii((20, 9)) == (20.0, 10.0, 5.0, 2.5, 1.25)


def test_bad_arguments_are_rejected():
  image = np.zeros((10, 10, 3), np.float32)
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="patch_size must be an int in"):
    nearest_neighbour_field(image, image, key, patch_size=11)
  with pytest.raises(ValueError, match="same channels"):
    nearest_neighbour_field(image, image[..., :1], key)
  with pytest.raises(ValueError, match="source must be an image"):
    exact_nearest_neighbours(np.zeros((2, 10, 10, 3)), image)
  with pytest.raises(ValueError, match="candidates must be a boolean mask"):
    nearest_neighbour_field(image, image, key, patch_size=3, candidates=np.ones((8, 8)))
  with pytest.raises(ValueError, match="at least one target patch"):
    exact_nearest_neighbours(image, image, patch_size=3, candidates=np.zeros((8, 8), bool))
  with pytest.raises(ValueError, match="iterations must be an int >= 0"):
    nearest_neighbour_field(image, image, key, patch_size=3, iterations=-1)
  with pytest.raises(ValueError, match="initial_positions must be integer positions"):
    nearest_neighbour_field(image, image, key, patch_size=3, initial_positions=np.zeros((8, 8)))
