import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax.priors import inpaint
from cnn_jax.priors.inpaint import border_mean_fill, complete_hole, harmonic_fill

SHAPE = (48, 48)


def periodic_texture() -> np.ndarray:
  """Three channels, periods 8 (rows) and 6 (columns): every patch repeats many times."""
  rows, columns = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
  tile = np.random.default_rng(0).random((8, 6, 3))
  return tile[rows % 8, columns % 6].astype(np.float32)


def square_mask(top: int, left: int, side: int) -> np.ndarray:
  mask = np.zeros(SHAPE, bool)
  mask[top:top + side, left:left + side] = True
  return mask


# One hole, patch size and pyramid for the completion tests: they then share compiled programs.
HOLE = dict(top=20, left=16, side=10)
COMPLETION = dict(patch_size=5, levels=2)


def test_a_hole_in_a_periodic_texture_is_filled_near_exactly():
  image = periodic_texture()
  mask = square_mask(**HOLE)
  filled = complete_hole(image, mask, jax.random.key(0), **COMPLETION)
  hole_error = np.abs(np.asarray(filled) - image)[mask]
  # Every hole patch has exact copies outside it, so the votes agree up to float32 rounding of
  # the weighted means (values in [0, 1]).
  assert hole_error.max() < 1e-4
  # The harmonic fill cannot restore the texture: its error is of the order of the texture's.
  assert np.abs(np.asarray(harmonic_fill(image, mask)) - image)[mask].mean() > 0.1


def test_known_pixels_are_never_changed_and_the_hole_contents_are_ignored():
  image = np.random.default_rng(1).random((*SHAPE, 3)).astype(np.float32)
  mask = square_mask(**HOLE)
  scribbled = image.copy()
  scribbled[mask] = 7.0  # what a user wants removed: must not reach the fill
  key = jax.random.key(2)
  filled = np.asarray(complete_hole(scribbled, mask, key, **COMPLETION))
  np.testing.assert_array_equal(filled[~mask], image[~mask])
  np.testing.assert_array_equal(filled, np.asarray(complete_hole(image, mask, key, **COMPLETION)))
  assert filled[mask].max() <= 1.0  # votes are means of known pixels in [0, 1]
  for baseline in (harmonic_fill, border_mean_fill):
    np.testing.assert_array_equal(np.asarray(baseline(scribbled, mask))[~mask], image[~mask])


def test_harmonic_fill_reproduces_a_linear_ramp():
  rows, columns = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
  ramp = (0.02 * rows - 0.01 * columns + 0.3).astype(np.float32)
  mask = square_mask(10, 12, 15)
  # A linear function is discrete-harmonic away from the image's edges, so it is the solution;
  # CG stops at a 1e-6 relative residual.
  np.testing.assert_allclose(np.asarray(harmonic_fill(ramp, mask))[..., 0], ramp, atol=1e-4)


def test_border_mean_fill_is_the_mean_of_the_pixels_around_the_hole():
  image = np.zeros((*SHAPE, 1), np.float32)
  mask = square_mask(10, 10, 3)
  image[9, 10:13] = 1.0  # the 3 border pixels above the hole; 12 border pixels in all
  filled = np.asarray(border_mean_fill(image, mask))
  np.testing.assert_allclose(filled[mask], 3 / 12, rtol=1e-6)


def test_pyramid_keeps_hole_values_out_of_the_known_coarse_pixels():
  image = np.random.default_rng(3).random((*SHAPE, 1)).astype(np.float32)
  mask = square_mask(11, 7, 5)
  (fine, fine_mask), (coarse, coarse_mask) = inpaint.pyramid(jnp.asarray(image),
                                                             jnp.asarray(mask), 2)
  assert np.array_equal(np.asarray(coarse_mask), mask.reshape(24, 2, 24, 2).any((1, 3)))
  expected = image.reshape(24, 2, 24, 2, 1).mean((1, 3))
  known = ~np.asarray(coarse_mask)
  np.testing.assert_allclose(np.asarray(coarse)[known], expected[known], rtol=1e-6)
  assert np.all(np.asarray(fine)[mask] == 0)


def test_bad_masks_and_shapes_are_rejected():
  image = np.zeros((*SHAPE, 3), np.float32)
  key = jax.random.key(0)
  with pytest.raises(ValueError, match=r"mask must be a boolean array of shape \(48, 48\)"):
    complete_hole(image, np.zeros((48, 47), bool), key)
  with pytest.raises(ValueError, match="mask must be a boolean array"):
    harmonic_fill(image, np.zeros(SHAPE, np.int32))
  with pytest.raises(ValueError, match="at least one hole pixel"):
    complete_hole(image, np.zeros(SHAPE, bool), key)
  with pytest.raises(ValueError, match="at least one known pixel"):
    border_mean_fill(image, np.ones(SHAPE, bool))
  with pytest.raises(ValueError, match="image must be an image"):
    complete_hole(np.zeros((2, *SHAPE, 3)), square_mask(0, 0, 4), key)
  with pytest.raises(ValueError, match="no 9x9 patch fully outside it"):
    complete_hole(image, square_mask(4, 4, 40), key, patch_size=9, levels=1)
  with pytest.raises(ValueError, match="levels must be an int >= 1"):
    complete_hole(image, square_mask(0, 0, 4), key, levels=0)
  with pytest.raises(ValueError, match="patch_size must be an int in"):
    complete_hole(image, square_mask(0, 0, 4), key, patch_size=30, levels=2)
  with pytest.raises(ValueError, match="patch_size must be an int in"):
    complete_hole(image, square_mask(0, 0, 4), key, patch_size="7")
