"""Top-k search over a dataset, receptive-field crops and the deconvnet figure."""

import numpy as np
import pytest

from cnn_jax.models.inspect import field_bounds
from cnn_jax.ops.arithmetic import LayerGeometry, receptive_field
from cnn_jax.viz.grids import rescale_to_unit
from cnn_jax.viz.projection import intermediates, project
from cnn_jax.viz.top_activations import crop, deconvnet_figure, top_activations


@pytest.fixture
def scanned(conv_stack):
  model, variables, images = conv_stack(image_shape=(13, 16, 16, 3))
  channels = [4, 0, 2]
  top = top_activations(model, variables, [images[:5], images[5:6], images[6:]], "pool1",
                        channels, k=4)
  return model, variables, images, channels, top


def test_top_k_equals_a_full_sort_whatever_the_batching(scanned):
  model, variables, images, channels, top = scanned
  activation = np.asarray(intermediates(model, variables, images)["pool1"])
  for row, channel in enumerate(channels):
    maxima = activation[..., channel].reshape(len(images), -1).max(axis=1)
    expected = np.argsort(-maxima, kind="stable")[:4]
    np.testing.assert_array_equal(top.indices[row], expected)
    np.testing.assert_allclose(top.values[row], maxima[expected], rtol=1e-6)
    np.testing.assert_array_equal(top.images[row], images[expected])
    for index, position, value in zip(expected, top.positions[row], top.values[row]):
      assert activation[index, position[0], position[1], channel] == pytest.approx(value)


def test_top_k_keeps_all_images_when_there_are_fewer_than_k(conv_stack):
  model, variables, images = conv_stack()
  top = top_activations(model, variables, [images], "relu1", [1], k=10)
  assert top.values.shape == (1, len(images))
  assert np.all(np.diff(top.values[0]) <= 0)


@pytest.mark.parametrize("arguments, message", [
    (dict(channels=[5]), r"channels must lie in \[0, 5\)"),
    (dict(layer="conv9"), "layer must be one of"),
    (dict(k=0), "k must be an int >= 1"),
    (dict(batches=[]), "at least one batch"),
])
def test_top_k_rejects_bad_arguments(conv_stack, arguments, message):
  model, variables, images = conv_stack()
  call = dict(batches=[images], layer="pool1", channels=[0], k=2) | arguments
  with pytest.raises(ValueError, match=message):
    top_activations(model, variables, **call)


def test_crop_fills_the_part_of_the_window_outside_the_image():
  image = np.arange(16.0).reshape(4, 4, 1)
  np.testing.assert_array_equal(crop(image, (1, 2), (0, 1))[..., 0], [[4, 5], [8, 9]])
  window = crop(image, (-1, 1), (2, 5), fill=-1.0)[..., 0]
  np.testing.assert_array_equal(window, [[-1, -1, -1, -1], [2, 3, -1, -1], [6, 7, -1, -1]])


def test_deconvnet_figure_crops_each_projection_to_its_units_field(scanned):
  model, variables, images, channels, top = scanned
  figure = deconvnet_figure(model, variables, top, "pool1")
  # ConvStack: conv 3 'same', pool 2, conv 3 'valid', pool 2: a 10x10 field of jump 4.
  field = receptive_field([LayerGeometry(3, 1, 1, 1), LayerGeometry(2, 2), LayerGeometry(3),
                           LayerGeometry(2, 2)])
  assert field.size == 10
  assert figure.projections.shape == figure.patches.shape == (3, 4, 10, 10, 3)
  row = 1
  projections, _ = project(model, variables, top.images[row], "pool1", channels[row],
                           top.positions[row])
  for signal, image, shown, patch, position in zip(
      np.asarray(projections), top.images[row], figure.projections[row], figure.patches[row],
      top.positions[row]):
    (first_row, _), (first_column, _) = (field_bounds(field, int(unit)) for unit in position)
    window = (slice(max(first_row, 0), first_row + 10),
              slice(max(first_column, 0), first_column + 10))
    # The crop holds all of the projection, so its extreme value (0 or 1) is shown.
    assert np.abs(signal[window]).sum() == pytest.approx(np.abs(signal).sum(), rel=1e-6)
    assert np.abs(shown - 0.5).max() == pytest.approx(0.5)
    # The patch is the same window of the image (the part inside the image).
    unit_image = rescale_to_unit(image)[window]
    inside = patch[max(0, -first_row):, max(0, -first_column):][:unit_image.shape[0],
                                                                 :unit_image.shape[1]]
    np.testing.assert_allclose(inside, unit_image, atol=1e-6)
  montage = figure.montage(scale=2, gap=1)
  assert montage.shape == (3 * 20 + 2, 2 * 4 * 20 + (2 * 4 + 1), 3)
