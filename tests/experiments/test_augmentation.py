"""Experiment 1 on CIFAR-10: planned where 'cifar10' is prepared, skipped (and said) where not."""

import math
import os

import numpy as np
import pytest

from experiments import augmentation, sweep
from experiments.configs import exp_sweep
from experiments.in_memory_training import load_dataset, load_digits


def one_seed_config(data_dir: str):
  config = exp_sweep.get_config()
  config.augmentation.seeds = (0,)
  config.augmentation.dose_models = ()  # the grid only, every model with every augmentation
  config.augmentation.reduced_models = ()
  config.augmentation.half_length_models = ()
  config.augmentation.schedule_epochs = {}
  config.augmentation.datasets = ("mnist_offline", "cifar10")  # the canvas: its own tests
  config.data_dir = data_dir
  return config


def test_cifar10_runs_are_planned_only_where_it_is_prepared(cifar10_data_dir, tmp_path):
  settings = exp_sweep.get_config().augmentation
  digit_names = [f"{model}_{augmentation_name}_seed0" for model in settings.models
                 for augmentation_name in settings.augmentations]

  prepared = augmentation.plan(one_seed_config(cifar10_data_dir))
  assert [run.name for run in prepared] == digit_names + [f"cifar10_{name}" for name in digit_names]
  assert {run.options["dataset"] for run in prepared[len(digit_names):]} == {"cifar10"}

  absent_config = one_seed_config(str(tmp_path))
  absent = augmentation.plan(absent_config)
  # The digits' runs keep the names (and so the result paths) they had before CIFAR-10.
  assert [run.name for run in absent] == digit_names
  assert augmentation.absent_datasets(absent_config) == ("cifar10",)


def test_cifar10_loads_as_uint8_arrays(cifar10_data_dir, tmp_path):
  dataset = load_dataset("cifar10", cifar10_data_dir)
  assert dataset.name == "cifar10"
  # The fake split sizes of conftest.py.
  assert dataset.train_images.shape == (40, 32, 32, 3)
  assert dataset.test_images.shape == (20, 32, 32, 3)
  assert dataset.train_images.dtype == np.uint8 and dataset.test_labels.dtype == np.int32
  assert set(dataset.train_labels.tolist()) == set(range(10))
  with pytest.raises(FileNotFoundError, match="tfds build cifar10"):
    load_dataset("cifar10", str(tmp_path))


@pytest.mark.slow  # a CIFAR-size training run (about 20 s)
def test_cifar10_run_trains_and_measures_32x32x3_images(cifar10_data_dir, tmp_path):
  config = exp_sweep.get_config("smoke")
  config.experiments = ("augmentation",)
  config.data_dir = cifar10_data_dir
  config.batch_size = 8
  config.eval_images = 8
  config.layer_images = 4
  config.augmentation.datasets = ("cifar10",)
  config.augmentation.cifar10_num_steps = 2
  (result,) = sweep.run_sweep(config, str(tmp_path))["augmentation"]
  assert result["run"]["name"] == "cifar10_cnn_both_seed0"
  metrics = result["metrics"]
  fractions = [metrics["clean_accuracy"], metrics["consistency_crop"],
               metrics["consistency_circular"], metrics["p_top1_change"],
               *metrics["accuracy_vs_rotation"],
               *[v for curve in metrics["accuracy_vs_translation"].values() for v in curve]]
  assert all(0.0 <= value <= 1.0 for value in fractions)
  assert math.isfinite(metrics["lie_translation_logits"]) and metrics["lie_rotation_logits"] > 0
  assert 0 < metrics["lie_rotation_log_softmax"] < math.inf
  layers = metrics["layers"]
  assert [layer["name"] for layer in layers][:2] == ["conv1", "pool1"]
  # Every layer has a finite error on or off its grid; the first conv's (stride 1) is on it.
  assert all(math.isfinite(layer["on_grid"]) or math.isfinite(layer["off_grid"])
             for layer in layers)
  assert 0.0 < layers[0]["on_grid"] < math.inf
  readme = open(os.path.join(tmp_path, "report", "README.md")).read()
  assert "### CIFAR-10 ('cifar10')" in readme and "| cnn | both | 1 |" in readme
  assert "![consistency](cifar10_consistency.png)" in readme
  assert os.path.exists(os.path.join(tmp_path, "report", "cifar10_accuracy_vs_angle.png"))


def test_a_digits_run_lowers_the_loss_and_beats_chance_by_far():
  config = exp_sweep.get_config("smoke")
  config.augmentation.models = ("mlp",)
  config.augmentation.augmentations = ("none",)
  config.augmentation.num_epochs = 0.7  # 40 steps of the 3,600 training digits
  (run,) = augmentation.plan(config)
  metrics = augmentation.execute(run, config, load_digits())
  # An untrained 10-class classifier has a loss near ln 10 = 2.3 and accuracy near 0.1.
  assert metrics["final_train_loss"] < 0.5 * math.log(10)
  assert metrics["clean_accuracy"] > 0.6
  assert metrics["accuracy_vs_translation"]["horizontal"][1] > 0.6  # the unshifted images
