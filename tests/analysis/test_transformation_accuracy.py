import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from cnn_jax.analysis.transformation_accuracy import (accuracy_vs_transformation,
                                                      accuracy_vs_translation)


def row_classifier(images):
  """Predicts the row of the brightest pixel of the first column."""
  return images[:, :, 0, 0]


def bright_pixel_images(rows):
  return jnp.zeros((len(rows), 8, 8, 1)).at[jnp.arange(len(rows)), jnp.array(rows), 0, 0].set(1.0)


@given(st.lists(st.integers(0, 7), min_size=10, max_size=10), st.integers(0, 7))
def test_accuracy_at_no_transformation_is_the_clean_accuracy(labels, offset):
  images = bright_pixel_images(labels)
  noisy_labels = (jnp.array(labels) + jnp.arange(len(labels)) % 2 * offset) % 8
  clean = float(jnp.mean(jnp.argmax(row_classifier(images), -1) == noisy_labels))
  curve = accuracy_vs_translation(row_classifier, images, noisy_labels, [-2, 0, 3],
                                  axis="vertical")
  assert float(curve[1]) == pytest.approx(clean)
  identity = accuracy_vs_transformation(row_classifier, images, noisy_labels,
                                        lambda x, theta: x * (1 + theta), [0.0])
  assert float(identity[0]) == pytest.approx(clean)


def test_vertical_shift_moves_a_position_classifier_off_its_labels():
  rows = [2, 3, 4, 5]
  curve = accuracy_vs_translation(row_classifier, bright_pixel_images(rows), jnp.array(rows),
                                  [-1, 0, 1], axis="vertical")
  np.testing.assert_allclose(curve, [0.0, 1.0, 0.0])
  # A horizontal shift moves the pixel out of the first column: the classifier sees zeros.
  horizontal = accuracy_vs_translation(row_classifier, bright_pixel_images(rows),
                                       jnp.array(rows), [0, 1], axis="horizontal")
  np.testing.assert_allclose(horizontal, [1.0, 0.0])


def test_invariant_network_accuracy_is_flat_under_circular_translation(images, conv_net):
  _, apply_fn = conv_net(jax.random.PRNGKey(0))
  labels = jnp.argmax(apply_fn(images), -1)
  curve = accuracy_vs_translation(apply_fn, images, labels, range(-3, 4), mode="circular")
  np.testing.assert_allclose(curve, 1.0)


def test_bad_arguments_are_rejected(images):
  labels = jnp.zeros(images.shape[0], jnp.int32)
  with pytest.raises(ValueError, match="axis must be one of"):
    accuracy_vs_translation(row_classifier, images, labels, [0], axis="diagonal")
  with pytest.raises(ValueError, match="labels must have shape"):
    accuracy_vs_translation(row_classifier, images, labels[:3], [0])
  with pytest.raises(ValueError, match="parameters must hold at least one"):
    accuracy_vs_transformation(row_classifier, images, labels, lambda x, t: x, [])


def test_horizontal_translation_moves_a_column_classifier_and_vertical_does_not():
  # Every row one-hot at the label's column: the top-1 is that column whatever the row shift.
  labels = np.array([2, 4, 5], np.int32)
  images = np.zeros((3, 8, 8, 1), np.float32)
  images[np.arange(3), :, labels, 0] = 1.0
  column_classifier = lambda x: x[:, 0, :, 0]
  for axis, expected in (("horizontal", [0.0, 1.0, 0.0]), ("vertical", [1.0, 1.0, 1.0])):
    accuracies = accuracy_vs_translation(column_classifier, images, labels, [-1, 0, 1],
                                         axis=axis, mode="circular")
    np.testing.assert_array_equal(accuracies, expected, err_msg=axis)
