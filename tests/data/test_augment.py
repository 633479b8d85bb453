"""Tests of cnn_jax/data/augment.py: deterministic warps and random augmentations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads

from cnn_jax.data.augment import (AUGMENTATION_NAMES, affine_transform, build_augmentation,
                                  parse_augmentation, random_crop, random_flip, random_rotate,
                                  random_translate, rotate, translate)


# Jitted, and most tests share one shape: every new shape compiles, and eager dispatch compiles
# every op on its own.
_rotate = jax.jit(rotate)
_translate = jax.jit(translate)
_affine_transform = jax.jit(affine_transform)
_SHAPE = (16, 9, 9, 1)


def _images(seed, shape=_SHAPE):
  # Strictly positive, so that a pixel of the image is never mistaken for the zero fill.
  return jax.random.uniform(jax.random.key(seed), shape, minval=0.1, maxval=1.0)


def _reference_translate(images, dy, dx):
  """`out[y, x] = in[y - dy, x - dx]`, zeros entering, by explicit indexing."""
  images = np.asarray(images)
  out = np.zeros_like(images)
  height, width = images.shape[1:3]
  for y in range(height):
    for x in range(width):
      if 0 <= y - dy < height and 0 <= x - dx < width:
        out[:, y, x] = images[:, y - dy, x - dx]
  return out


@given(size=st.sampled_from([8, 9]), turns=st.sampled_from([-1, 1, 2, 3]))
def test_rotation_by_multiples_of_90_degrees_equals_rot90(size, turns):
  # Even and odd sides: the centre falls between pixels or on one.
  images = _images(size, (16, size, size, 1))
  np.testing.assert_allclose(_rotate(images, 90.0 * turns), jnp.rot90(images, turns, axes=(1, 2)),
                             atol=1e-5)


@given(dy=st.integers(-12, 12), dx=st.integers(-12, 12))
def test_translate_moves_content_by_the_shift_with_zeros_entering(dy, dx):
  images = _images(0)
  np.testing.assert_array_equal(_translate(images, jnp.array([dy, dx])),
                                _reference_translate(images, dy, dx))


@given(dy=st.integers(-4, 4), dx=st.integers(-4, 4))
def test_translation_by_k_then_minus_k_is_the_identity_away_from_the_border(dy, dx):
  images = _images(1)
  round_trip = _translate(_translate(images, jnp.array([dy, dx])), jnp.array([-dy, -dx]))
  height, width = images.shape[1:3]
  interior = (slice(None), slice(max(-dy, 0), height - max(dy, 0)),
              slice(max(-dx, 0), width - max(dx, 0)))
  np.testing.assert_array_equal(round_trip[interior], images[interior])
  assert float(jnp.sum(round_trip)) == pytest.approx(float(jnp.sum(images[interior])), rel=1e-5)


def test_translate_takes_one_shift_per_image():
  images = _images(2)
  shifts = jax.random.randint(jax.random.key(2), (16, 2), -9, 10)
  expected = [_reference_translate(images[i:i + 1], *map(int, shifts[i]))[0] for i in range(16)]
  np.testing.assert_array_equal(_translate(images, shifts), np.stack(expected))


def test_zero_rotation_and_zero_translation_are_the_identity():
  images = _images(3)
  np.testing.assert_array_equal(_rotate(images, 0.0), images)
  np.testing.assert_array_equal(_translate(images, jnp.array([0, 0])), images)
  np.testing.assert_array_equal(_affine_transform(images, jnp.eye(2, 3)), images)


@given(dy=st.integers(-10, 10), dx=st.integers(-10, 10))
def test_affine_transform_with_an_integer_translation_equals_translate(dy, dx):
  images = _images(4)
  matrix = jnp.array([[1.0, 0.0, -dy], [0.0, 1.0, -dx]])
  np.testing.assert_allclose(_affine_transform(images, matrix),
                             _translate(images, jnp.array([dy, dx])), atol=1e-6)


@given(shift=st.floats(-3, 3))
def test_affine_half_way_translation_is_the_mean_of_its_integer_neighbours(shift):
  # Bilinear sampling is linear between grid points: t = k + f gives (1 - f) T_k + f T_{k+1}.
  images = _images(5)
  lower = int(np.floor(shift))
  fraction = shift - lower
  warped = _affine_transform(images, jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, -shift]]))
  expected = ((1 - fraction) * _translate(images, jnp.array([0, lower]))
              + fraction * _translate(images, jnp.array([0, lower + 1])))
  np.testing.assert_allclose(warped, expected, atol=1e-5)


def test_rotation_is_about_the_image_centre():
  # A radially symmetric blob centred on the image is (up to interpolation) rotation-invariant.
  size = 21
  coordinates = jnp.arange(size) - (size - 1) / 2
  radius2 = coordinates[:, None] ** 2 + coordinates[None, :] ** 2
  blobs = jnp.broadcast_to(jnp.exp(-radius2 / 18.0)[None, :, :, None], (3, size, size, 1))
  np.testing.assert_allclose(_rotate(blobs, jnp.array([17.0, 45.0, 133.0])), blobs, atol=0.03)
  assert float(jnp.abs(_translate(blobs, jnp.array([0, 1])) - blobs).max()) > 0.1


def test_affine_transform_gradient_matches_finite_differences():
  images = _images(6, (2, 8, 8, 1))
  weights = _images(7, (2, 8, 8, 1))
  # Fractional offsets keep every sample point >= 0.2 pixel away from the grid lines, where
  # bilinear interpolation has kinks; eps moves them by less than that.
  matrix = jnp.array([[1.0, 0.0, 0.25], [0.0, 1.0, -0.35]])
  loss = jax.jit(lambda m: jnp.sum(weights * affine_transform(images, m)))
  check_grads(loss, (matrix,), order=1, modes=("fwd", "rev"), eps=1e-2, atol=1e-2, rtol=1e-2)
  assert float(jnp.abs(jax.grad(loss)(matrix)).max()) > 0.1


def test_affine_transform_takes_one_matrix_per_image():
  images = _images(8, (3, 9, 9, 1))
  matrices = jnp.stack([jnp.eye(2, 3), jnp.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]]),
                        jnp.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])])
  warped = _affine_transform(images, matrices)
  np.testing.assert_allclose(warped[0], images[0])
  np.testing.assert_allclose(warped[1], _reference_translate(images[1:2], 1, 0)[0])
  np.testing.assert_allclose(warped[2], jnp.rot90(images[2]), atol=1e-6)


@pytest.mark.parametrize("spec", ["crop=2", "translate=2", "rotate=20", "flip",
                                  "translate=2,rotate=10", "crop=4,rotate=30,flip"])
def test_augmentations_keep_shape_dtype_and_range_under_jit(spec):
  images = _images(9)
  out = jax.jit(build_augmentation(spec))(jax.random.key(0), images)
  assert out.shape == images.shape and out.dtype == images.dtype
  assert bool(jnp.all((out >= 0) & (out <= 1)))


@pytest.mark.parametrize("spec", ["crop=2", "translate=2", "rotate=20", "flip"])
def test_same_key_same_output_and_different_keys_differ(spec):
  augmentation = jax.jit(build_augmentation(spec))
  images = _images(10)
  first = augmentation(jax.random.key(1), images)
  np.testing.assert_array_equal(first, augmentation(jax.random.key(1), images))
  assert not np.array_equal(first, augmentation(jax.random.key(2), images))


@pytest.mark.parametrize("spec", ["crop=2", "translate=2", "rotate=20", "flip"])
def test_each_example_gets_its_own_transformation(spec):
  images = jnp.broadcast_to(_images(11, (1, 9, 9, 1)), _SHAPE)
  out = jax.jit(build_augmentation(spec))(jax.random.key(3), images)
  assert len({np.asarray(image).tobytes() for image in out}) > 1


def _matching_shifts(image, candidate, limit):
  return [(dy, dx) for dy in range(-limit, limit + 1) for dx in range(-limit, limit + 1)
          if np.array_equal(_translate(image[None], jnp.array([dy, dx]))[0], candidate)]


@pytest.mark.parametrize("random_shift", [random_crop, random_translate])
def test_random_crop_and_translate_are_shifts_within_the_limit(random_shift):
  images = _images(12)
  out = jax.jit(random_shift, static_argnums=2)(jax.random.key(4), images, 2)
  shifts = []
  for image, candidate in zip(images, out):
    matches = _matching_shifts(image, candidate, 2)
    assert len(matches) == 1
    shifts.append(matches[0])
  assert len(set(shifts)) > 3


def test_random_flip_flips_about_half_the_examples():
  images = _images(13)
  outs = [jax.jit(random_flip)(jax.random.key(seed), images) for seed in range(4)]
  flipped = [np.array_equal(o, i[:, ::-1]) for out in outs for o, i in zip(out, images)]
  kept = [np.array_equal(o, i) for out in outs for o, i in zip(out, images)]
  assert all(f != k for f, k in zip(flipped, kept))
  assert 16 < sum(flipped) < 48


def test_random_rotate_angles_stay_within_the_limit():
  # An impulse at distance r from the centre moves along its circle by at most r * max angle.
  image = jnp.zeros((1, 21, 21, 1)).at[0, 10, 18, 0].set(1.0)
  out = jax.jit(random_rotate, static_argnums=2)(
      jax.random.key(6), jnp.broadcast_to(image, (32, 21, 21, 1)), 30.0)
  columns, rows = jnp.meshgrid(jnp.arange(21) - 10.0, jnp.arange(21) - 10.0)
  mass = out[..., 0].sum(axis=(1, 2))
  angles = jnp.degrees(jnp.arctan2(-(out[..., 0] * rows).sum(axis=(1, 2)) / mass,
                                   (out[..., 0] * columns).sum(axis=(1, 2)) / mass))
  assert float(jnp.abs(angles).max()) <= 30.5
  assert float(angles.max()) > 10 and float(angles.min()) < -10


def test_build_augmentation_composes_stages_in_order_with_split_keys():
  images = _images(14)
  key = jax.random.key(7)
  translate_key, flip_key = jax.random.split(key, 2)
  expected = random_flip(flip_key, random_translate(translate_key, images, 2))
  np.testing.assert_array_equal(build_augmentation("translate=2,flip")(key, images), expected)
  np.testing.assert_array_equal(build_augmentation("")(key, images), images)


def test_parse_augmentation_examples():
  assert AUGMENTATION_NAMES == ("crop", "translate", "rotate", "flip")
  assert parse_augmentation("crop=4,rotate=30,flip") == (("crop", 4), ("rotate", 30.0),
                                                         ("flip", None))
  assert parse_augmentation("") == ()
  assert parse_augmentation(" translate = 2 , rotate=7.5 ") == (("translate", 2),
                                                                ("rotate", 7.5))
  assert isinstance(parse_augmentation("crop=4")[0][1], int)
  assert isinstance(parse_augmentation("rotate=30")[0][1], float)


@pytest.mark.parametrize("spec, message", [
    ("shear=3", "unknown augmentation 'shear'.*'crop', 'translate', 'rotate', 'flip'"),
    ("crop=4,,flip", "unknown augmentation ''"),
    ("flip=1", "'flip' takes no value"),
    ("crop", "'crop' needs an int"),
    ("crop=2.5", "'crop' needs an int"),
    ("rotate=-5", "'rotate' needs a number >= 0"),
    ("rotate=nan", "'rotate' needs a number >= 0"),
])
def test_bad_specs_are_rejected(spec, message):
  with pytest.raises(ValueError, match=message):
    parse_augmentation(spec)


@pytest.mark.parametrize("call, message", [
    (lambda x: translate(x, (1.5, 0)), "shift must be ints"),
    (lambda x: translate(x, jnp.zeros((2, 2), int)),
     r"shift must be ints of shape \(2,\) or \(16, 2\)"),
    (lambda x: rotate(x, jnp.zeros(2)), "degrees must be a scalar or have shape"),
    (lambda x: affine_transform(x, jnp.eye(3)), r"matrix must have shape \(2, 3\)"),
    (lambda x: affine_transform(x[0], jnp.eye(2, 3)), r"images must be \[N, H, W, C\]"),
    (lambda x: random_crop(jax.random.key(0), x, -1), "padding must be an int >= 0, got -1"),
    (lambda x: random_translate(jax.random.key(0), x, 1.5), "max_shift must be an int"),
])
def test_bad_arguments_are_rejected(call, message):
  with pytest.raises(ValueError, match=message):
    call(_images(15))
