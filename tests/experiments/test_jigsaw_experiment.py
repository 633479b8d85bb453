"""`experiments/jigsaw.py` (named apart from tests/priors/test_jigsaw.py: one module name each)."""

import json
import os

import numpy as np
import pytest
from scipy import stats

from experiments import jigsaw
from experiments.configs.jigsaw import get_config


def test_conditions_are_unique_and_cover_the_config():
  config = get_config()
  found = jigsaw.conditions(config)
  keys = [(c["kind"], tuple(c["grid"]), c["tile_size"], c["measure"]) for c in found]
  assert len(keys) == len(set(keys))
  for grid in config.count_grids:
    assert ("photo", tuple(grid), config.count_tile_size, "prediction") in keys
  for size in config.tile_sizes:
    assert ("photo", tuple(config.size_grid), size, "lpq") in keys
  for grid in config.noise_grids:
    assert ("white_noise", tuple(grid), config.count_tile_size, "prediction") in keys
    assert ("pixels_shuffled", tuple(grid), config.count_tile_size, "lpq") in keys


def test_puzzle_images_have_the_puzzle_shape_and_the_right_content():
  photo = jigsaw.puzzle_image("astronaut", "photo", (3, 4), 8, seed=0)
  shuffled = jigsaw.puzzle_image("astronaut", "pixels_shuffled", (3, 4), 8, seed=0)
  noise = jigsaw.puzzle_image("camera", "white_noise", (3, 4), 8, seed=0)
  assert photo.shape == shuffled.shape == (24, 32, 3) and noise.shape == (24, 32, 1)
  # Shuffling moves whole pixels: the same colours, another order.
  np.testing.assert_array_equal(np.sort(photo.reshape(-1, 3), axis=0),
                                np.sort(shuffled.reshape(-1, 3), axis=0))
  assert not np.array_equal(photo, shuffled)
  assert 0.0 <= noise.min() and noise.max() < 1.0
  # Seeds are different crops of the photo.
  assert not np.array_equal(photo, jigsaw.puzzle_image("astronaut", "photo", (3, 4), 8, seed=1))


def test_summary_is_over_images_with_a_t_interval():
  summary = jigsaw.summarize({"a": [0.0, 1.0], "b": [1.0, 1.0], "c": [0.5, 0.5]})
  means = np.array([0.5, 1.0, 0.5])
  assert summary["mean"] == pytest.approx(means.mean())
  assert summary["std"] == pytest.approx(means.std(ddof=1))
  half = stats.t.ppf(0.975, 2) * means.std(ddof=1) / np.sqrt(3)
  assert summary["ci95"] == pytest.approx([means.mean() - half, means.mean() + half])
  assert summary["runs"] == 6 and summary["images"] == 3


def test_unknown_photo_is_rejected():
  with pytest.raises(ValueError, match="photo must be one of"):
    jigsaw.load_photo("lena")


@pytest.mark.slow
def test_smoke_run_writes_the_report(tmp_path):
  config = get_config("smoke")
  output = jigsaw.run_experiment(config)
  readme = jigsaw.write_report(output, config, str(tmp_path))
  assert os.path.basename(readme) == "README.md"
  for name in ("results.json", "jigsaw_example.png", "jigsaw_accuracy_vs_tiles.png",
               "jigsaw_accuracy_vs_tile_size.png"):
    assert os.path.getsize(tmp_path / name) > 0
  saved = json.loads((tmp_path / "results.json").read_text())
  assert len(saved["conditions"]) == len(jigsaw.conditions(config))
