"""Experiment 1 on 'mnist_canvas' (digits at random positions on a 40 x 40 canvas): its own grid
and run names, its training length, its report section and its contrasts."""

import copy
import math

import numpy as np
import pytest

from experiments import augmentation, contrasts
from experiments.configs import exp_sweep
from experiments.in_memory_training import load_dataset, load_digits
from test_sweep import FAKE_METRICS  # pytest puts this directory on sys.path


def test_canvas_runs_have_their_own_grid_and_prefix_and_the_digits_keep_theirs():
  config = exp_sweep.get_config()
  runs = augmentation.plan(config)
  # The configured length (the stopping rule's other lengths: test_sweep).
  canvas = [run for run in runs
            if run.options["dataset"] == "mnist_canvas" and "epochs" not in run.options]
  settings = config.augmentation.canvas
  expected = {f"mnist_canvas_{model}_{name}_seed{seed}" for seed in config.augmentation.seeds
              for model in settings.models
              for name in augmentation.model_augmentations(config, model, "mnist_canvas")}
  assert {run.name for run in canvas} == expected
  assert {"mnist_canvas_resnet20_none_seed4", "mnist_canvas_resnet20_circular_none_seed4",
          "mnist_canvas_cnn_translate_seed4"} <= expected
  # The digits' runs are those of a sweep without the canvas: same names, same options.
  config.augmentation.datasets = ("mnist_offline",)
  digits = [run for run in runs if run.options["dataset"] == "mnist_offline"]
  assert digits == augmentation.plan(config)


def test_canvas_budget_cut_gives_the_reduced_models_only_the_first_augmentation():
  config = exp_sweep.get_config()
  config.augmentation.canvas.reduced_models = ("resnet20",)
  assert augmentation.model_augmentations(config, "resnet20", "mnist_canvas") == ("none",)
  assert augmentation.model_augmentations(config, "cnn", "mnist_canvas") == ("none", "translate")
  assert augmentation.model_augmentations(config, "mlp") == tuple(
      config.augmentation.augmentations)


def test_canvas_trains_for_its_own_number_of_epochs():
  config = exp_sweep.get_config()
  config.augmentation.num_epochs = 15.0
  config.augmentation.canvas.num_epochs = 5.0
  assert augmentation.num_steps(config, "mnist_canvas", 3600) == math.ceil(5 * 3600 / 64)
  assert augmentation.num_steps(config, "mnist_offline", 3600) == math.ceil(15 * 3600 / 64)
  assert augmentation.num_steps(config, "cifar10", 3600) == config.augmentation.cifar10_num_steps


@pytest.mark.parametrize("field, value, message", [
    ("models", ("vgg",), r"config.augmentation.canvas.models .* \['vgg'\]"),
    ("augmentations", ("flip",), r"config.augmentation.canvas.augmentations .* \['flip'\]"),
    ("reduced_models", ("vgg",), r"config.augmentation.canvas.reduced_models .* \['vgg'\]"),
    ("num_epochs", 0, "config.augmentation.canvas.num_epochs must be a number > 0, got 0"),
    ("half_length_models", ("vgg",),
     r"config.augmentation.canvas.half_length_models .* \['vgg'\]"),
])
def test_bad_canvas_settings_are_rejected(field, value, message):
  config = exp_sweep.get_config()
  config.augmentation.canvas[field] = value
  with pytest.raises(ValueError, match=message):
    augmentation.validate(config)


def test_canvas_dataset_holds_the_digits_on_40x40():
  canvas, digits = load_dataset("mnist_canvas", None), load_digits()
  assert canvas.name == "mnist_canvas"
  assert canvas.train_images.shape == (4000, 40, 40, 1)
  assert canvas.test_images.shape == (1000, 40, 40, 1) and canvas.test_images.dtype == np.uint8
  np.testing.assert_array_equal(canvas.train_labels, digits.train_labels)
  np.testing.assert_array_equal(canvas.test_labels, digits.test_labels)
  # Every digit's ink, moved but not changed: the same pixel sums, image by image.
  np.testing.assert_array_equal(canvas.test_images.sum(axis=(1, 2, 3), dtype=np.int64),
                                digits.test_images.sum(axis=(1, 2, 3), dtype=np.int64))


@pytest.mark.slow  # compiles every metric for 40 x 40 images: 250 s on 2 loaded cores
def test_a_canvas_run_trains_and_measures_40x40_images():
  config = exp_sweep.get_config("smoke")
  config.augmentation.datasets = ("mnist_canvas",)
  config.augmentation.canvas.models = ("cnn",)
  config.augmentation.canvas.augmentations = ("translate",)
  config.augmentation.canvas.num_epochs = 0.04  # 3 steps
  (run,) = augmentation.plan(config)
  assert run.name == "mnist_canvas_cnn_translate_seed0"
  metrics = augmentation.execute(run, config, load_dataset("mnist_canvas", None))
  assert metrics["train_steps"] == 3
  assert all(0.0 <= metrics[name] <= 1.0
             for name in ("clean_accuracy", "consistency_crop", "consistency_circular"))
  assert [layer["name"] for layer in metrics["layers"]][:2] == ["conv1", "pool1"]


def _canvas_result(model, augmentation_name, seed, **metrics):
  return {"run": {"experiment": "augmentation", "name": f"mnist_canvas_{model}_seed{seed}",
                  "seed": seed, "options": {"model": model, "augmentation": augmentation_name,
                                            "dataset": "mnist_canvas"}},
          "metrics": {**copy.deepcopy(FAKE_METRICS), **metrics}}


def test_canvas_report_has_its_own_section_and_figures(tmp_path):
  config = exp_sweep.get_config()
  config.augmentation.dose_models = ()
  results = [_canvas_result(model, "none", seed) for model in ("cnn", "resnet20")
             for seed in range(2)]
  text = augmentation.report(results, config, str(tmp_path))
  assert "### Offline MNIST digits on a 40 x 40 canvas ('mnist_canvas')" in text
  assert augmentation.DATASET_NOTES["mnist_canvas"] in text
  assert "| cnn | none | 2 |" in text and "| resnet20 | none | 2 |" in text
  assert "![consistency](mnist_canvas_consistency.png)" in text
  assert (tmp_path / "mnist_canvas_layer_equivariance.png").exists()


def _contrast(claim_start):
  return next(c for c in contrasts.canvas_contrasts() if c.claim.startswith(claim_start))


def test_canvas_contrasts_are_listed_only_where_the_canvas_runs():
  config = exp_sweep.get_config()
  claims = [c.claim for c in contrasts.contrasts_for(config)]
  assert all(c.claim in claims for c in contrasts.canvas_contrasts())
  config.augmentation.datasets = ("mnist_offline",)
  claims = [c.claim for c in contrasts.contrasts_for(config)]
  assert not any(c.claim in claims for c in contrasts.canvas_contrasts())


@pytest.mark.parametrize("circular_consistency, expected", [
    ([0.95, 0.96, 0.94, 0.95, 0.97], "supported"),
    ([0.80, 0.81, 0.79, 0.80, 0.82], "opposite"),
])
def test_circular_minus_crop_gap_verdict_is_computed_from_the_runs(circular_consistency, expected):
  # The zero-padded ResNet: no gap; the circular one: circular consistency as given, crop 0.85.
  results = {"augmentation": [_canvas_result("resnet20", "none", seed, consistency_crop=0.85,
                                             consistency_circular=0.85 + 0.001 * seed)
                              for seed in range(5)]
             + [_canvas_result("resnet20_circular", "none", seed, consistency_crop=0.85,
                               consistency_circular=value)
                for seed, value in enumerate(circular_consistency)]}
  for claim in ("On the canvas, circular padding widens",
                "On the canvas, the circular ResNet is more consistent"):
    tested = contrasts.evaluate_contrast(results, _contrast(claim))
    assert tested["verdict"] == expected
  paired = contrasts.evaluate_contrast(results, _contrast("On the canvas, the circular ResNet"))
  assert paired["comparison"].difference == pytest.approx(np.mean(circular_consistency) - 0.85)


def test_circular_minus_crop_consistency():
  assert contrasts.circular_minus_crop_consistency(
      {"consistency_crop": 0.75, "consistency_circular": 0.5}) == pytest.approx(-0.25)
