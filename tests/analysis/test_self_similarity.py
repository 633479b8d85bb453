import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cnn_jax.analysis.self_similarity import image_patches, self_similarity_ratio


def test_periodic_texture_is_perfectly_self_similar():
  tile = np.asarray(jax.random.uniform(jax.random.PRNGKey(0), (8, 8)))
  assert self_similarity_ratio(np.tile(tile, (6, 6)), patch_size=8, stride=4) == pytest.approx(
      0.0, abs=1e-3)


def test_smooth_image_is_more_self_similar_than_its_shuffled_pixels():
  rows, columns = np.mgrid[0:48, 0:48]
  smooth = np.sin(rows / 7.0) + np.cos(columns / 5.0) + 0.05 * rows
  shuffled = np.random.default_rng(0).permutation(smooth.ravel()).reshape(smooth.shape)
  assert self_similarity_ratio(smooth) < 0.5 * self_similarity_ratio(shuffled)


@settings(max_examples=8)
@given(st.floats(0.1, 100.0))
def test_ratio_is_scale_free(scale):
  image = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (24, 24)))
  assert self_similarity_ratio(scale * image) == pytest.approx(self_similarity_ratio(image),
                                                               rel=1e-3)


def test_patches_are_the_image_windows():
  image = np.arange(36.0).reshape(6, 6)
  patches, corners = image_patches(image, patch_size=2, stride=2)
  assert patches.shape == (9, 4)
  np.testing.assert_array_equal(corners[4], [2, 2])
  np.testing.assert_array_equal(patches[4], [14, 15, 20, 21])


def test_bad_arguments_are_rejected():
  with pytest.raises(ValueError, match="patch_size must be an int in"):
    self_similarity_ratio(np.zeros((4, 4)), patch_size=5)
  with pytest.raises(ValueError, match="image must be a grey image"):
    self_similarity_ratio(np.zeros((4, 4, 3)))


def test_ratio_by_hand_for_three_patches_side_by_side():
  # Patches A, B, A in one row (only their columns are apart): nearest distances (0, d, 0), mean
  # d / 3; the 6 ordered pairs have distances (d, 0, d, d, 0, d), mean 2 d / 3: ratio 1 / 2.
  first, second = np.arange(16.0).reshape(4, 4), np.ones((4, 4))
  image = np.concatenate([first, second, first], axis=1)
  assert self_similarity_ratio(image, patch_size=4, stride=4) == pytest.approx(0.5, rel=1e-5)
