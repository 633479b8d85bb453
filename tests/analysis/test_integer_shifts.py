import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from cnn_jax.analysis.integer_shifts import random_shifts, shift_images

small_shift = st.integers(-4, 4)


@given(small_shift, small_shift)
def test_circular_shift_is_a_roll(dy, dx):
  images = jnp.arange(2 * 6 * 7 * 2, dtype=jnp.float32).reshape(2, 6, 7, 2)
  np.testing.assert_array_equal(shift_images(images, jnp.array([dy, dx]), "circular"),
                                np.roll(images, (dy, dx), axis=(1, 2)))


@given(small_shift, small_shift)
def test_crop_shift_moves_pixels_and_fills_zeros(dy, dx):
  images = jnp.arange(1, 1 + 6 * 7, dtype=jnp.float32).reshape(1, 6, 7, 1)
  shifted = np.asarray(shift_images(images, jnp.array([dy, dx]), "crop"))[0, :, :, 0]
  for i in range(6):
    for j in range(7):
      inside = 0 <= i - dy < 6 and 0 <= j - dx < 7
      assert shifted[i, j] == (images[0, i - dy, j - dx, 0] if inside else 0)


@given(small_shift, small_shift)
def test_crop_and_circular_shifts_agree_when_content_stays_inside(dy, dx):
  images = jnp.pad(jnp.ones((3, 2, 2, 1)), ((0, 0), (4, 4), (4, 4), (0, 0)))
  np.testing.assert_array_equal(shift_images(images, jnp.array([dy, dx]), "crop"),
                                shift_images(images, jnp.array([dy, dx]), "circular"))


def test_each_image_gets_its_own_shift():
  images = jnp.zeros((2, 5, 5, 1)).at[:, 2, 2, 0].set(1.0)
  shifted = shift_images(images, jnp.array([[1, 0], [0, -2]]), "circular")
  assert shifted[0, 3, 2, 0] == 1 and shifted[1, 2, 0, 0] == 1


def test_random_shifts_cover_the_range_and_stay_inside():
  shifts = random_shifts(jax.random.PRNGKey(0), 2000, 3)
  assert set(np.unique(np.asarray(shifts)).tolist()) == set(range(-3, 4))


def test_unknown_mode_is_rejected():
  with pytest.raises(ValueError, match="mode must be one of"):
    shift_images(jnp.zeros((1, 4, 4, 1)), jnp.array([1, 1]), "reflect")
