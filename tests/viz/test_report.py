"""All visualizations of a model in one directory, with the index page."""

import os
import re

import flax.linen as nn
import matplotlib.image
import numpy as np
import pytest

from cnn_jax.models import get_model
from cnn_jax.viz.report import (default_layer, first_layer_kernel, strongest_channels,
                                write_visualizations)


@pytest.fixture
def small_cnn(init_variables):
  # conv 3x3 (4) -> conv 3x3 (8) -> max pool 2 -> fc 16 -> fc 10 on 28x28x1: conv2 is the last
  # conv layer, with a 5x5 receptive field.
  model = get_model("cnn", features=(4, 8), hidden=(16,))
  images = np.random.default_rng(0).normal(size=(10, 28, 28, 1)).astype(np.float32)
  return model, init_variables(model, images), images


def test_written_pngs_are_valid_with_the_expected_sizes(tmp_path, small_cnn):
  model, variables, images = small_cnn
  index = write_visualizations(str(tmp_path), model, variables, [images[:6], images[6:]],
                               num_channels=3, top_k=2, image_index=7, title="cnn")
  expected_shapes = {
      "filters.png": (48, 4 * 48 + 3),  # 4 filters 3x3, 16x enlarged, 1 apart
      "activations_conv1.png": (52, 4 * 52 + 3),  # 26x26x4, 2x
      "activations_conv2.png": (48, 8 * 48 + 7),  # 24x24x8
      "activations_pool1.png": (24, 8 * 24 + 7),  # 12x12x8
      "top2_conv2.png": (3 * 60 + 2 * 2, 2 * 2 * 60 + 5 * 2),  # 5x5 fields, 12x, 2 apart
      "methods_conv2.png": (3 * 84 + 2 * 2, 4 * 84 + 3 * 2),  # 28x28 images, 3x
  }
  written = sorted(name for name in os.listdir(tmp_path) if name.endswith(".png"))
  assert written == sorted(expected_shapes)
  for name, shape in expected_shapes.items():
    path = tmp_path / name
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(str(path)).shape[:2] == shape, name
  with open(index) as file:
    page = file.read()
  assert sorted(re.findall(r"\]\(([^)]+\.png)\)", page)) == written


def test_the_default_layer_is_the_last_conv_layer_and_the_kernel_the_first(small_cnn):
  model, variables, images = small_cnn
  activations = {"conv1": np.zeros((1, 4, 4, 2)), "conv2": np.zeros((1, 2, 2, 2)),
                 "pool1": np.zeros((1, 1, 1, 2)), "fc1": np.zeros((1, 3))}
  assert default_layer(activations) == "conv2"
  assert default_layer({"pool1": np.zeros((1, 1, 1, 2)), "fc1": np.zeros((1, 3))}) == "pool1"
  np.testing.assert_array_equal(first_layer_kernel(variables["params"]),
                                variables["params"]["Conv1"]["kernel"])


class SownInput(nn.Module):
  """No parameters: sows its input as the layer 'input', so each channel's activation is known."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    self.sow("intermediates", "input", x)
    return x.mean(axis=(1, 2))


def test_strongest_channels_are_those_with_the_largest_maximum_over_all_batches():
  # Channel maxima: first batch (1, 5, 2, 0), second (4, 0, 3, 6); over both (4, 5, 3, 6).
  first, second = np.zeros((2, 3, 3, 4), np.float32), np.zeros((3, 3, 3, 4), np.float32)
  first[1, 2, 0] = [1.0, 5.0, 2.0, -1.0]
  second[2, 0, 1] = [4.0, -2.0, 3.0, 6.0]
  choose = lambda count: strongest_channels(SownInput(), {}, [first, second], "input", count)
  assert choose(1) == [3]
  assert choose(2) == [1, 3]  # channel numbers in increasing order
  assert choose(3) == [0, 1, 3]


@pytest.mark.parametrize("arguments, message", [
    (dict(layer="fc1"), "layer must be one of the model's layers with spatial axes"),
    (dict(image_index=10), r"image_index must be in \[0, 10\)"),
])
def test_bad_layer_and_image_are_rejected(tmp_path, small_cnn, arguments, message):
  model, variables, images = small_cnn
  with pytest.raises(ValueError, match=message):
    write_visualizations(str(tmp_path), model, variables, [images[:4], images[4:]], **arguments)


@pytest.mark.slow
def test_alexnet_pages_show_the_filters_by_tower_with_their_colourfulness(tmp_path,
                                                                          init_variables):
  model = get_model("alexnet", num_classes=2)
  images = np.random.default_rng(0).normal(size=(2, 227, 227, 3)).astype(np.float32)
  variables = init_variables(model, images)
  index = write_visualizations(str(tmp_path), model, variables, [images], channels=[0, 200],
                               top_k=1)
  towers = matplotlib.image.imread(str(tmp_path / "filters_by_tower.png"))
  # 48 filters 11x11 per tower, 4x enlarged: 3 rows of 16, towers 6 pixels apart.
  assert towers.shape[:2] == (2 * (3 * 44 + 2) + 6, 16 * 44 + 15)
  with open(index) as file:
    page = file.read()
  tower_table = page[page.index("| tower | colourfulness |"):].split("\n\n")[0]
  scores = [float(score) for score in re.findall(r"\| [01] \| ([0-9.]+) \|", tower_table)]
  assert len(scores) == 2 and all(0 <= score <= 1 for score in scores)
