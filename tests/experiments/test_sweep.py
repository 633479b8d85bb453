import json
import logging
import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax import models
from experiments import augmentation, learned_invariance, model_zoo, priors, sweep
from experiments.configs import exp_sweep
from experiments.in_memory_training import not_prepared_message, prng_key
from experiments.runs import claim, claim_path, result_path, save_result

# What augmentation.execute returns, for a run that never trained.
FAKE_METRICS = {
    "clean_accuracy": 0.5, "final_train_loss": 1.0, "train_steps": 2, "record_steps": [1, 2],
    "validation_accuracy": [0.3, 0.4], "validation_loss": [2.0, 1.5], "plateau_gain": 0.1,
    "consistency_crop": 0.9,
    "consistency_circular": 0.8, "p_top1_change": 0.1, "mean_abs_change": 0.05,
    "translations": [-1, 0, 1],
    "accuracy_vs_translation": {"horizontal": [0.4, 0.5, 0.4], "vertical": [0.3, 0.5, 0.3]},
    "angles": [-90, 0, 90], "accuracy_vs_rotation": [0.2, 0.5, 0.2],
    "layers": [{"name": "fc1", "stride": None, "on_grid": 0.3, "off_grid": float("nan")}],
    "lie_translation_logits": 1.0, "lie_rotation_logits": 2.0,
    "lie_translation_log_softmax": 0.1, "lie_rotation_log_softmax": 0.2,
    "layer_lie_translation": [{"name": "fc1", "relative_norm": 0.2}],
    "lie_attribution": {name: [{"name": "fc1", "norm": 1.0, "share": 1.0}]
                        for name in ("translation_horizontal", "rotation")},
    "wall_time_seconds": 1.0,
}


def tiny_config():
  """One MLP trained for 2 steps: the sweep machinery at the smallest cost."""
  config = exp_sweep.get_config("smoke")
  config.experiments = ("augmentation",)
  config.augmentation.models = ("mlp",)
  config.augmentation.augmentations = ("none",)
  config.augmentation.num_epochs = 0.03  # 2 steps of the 3,600 training digits
  config.augmentation.dose_models = ()
  return config


@pytest.mark.parametrize("field, value, message", [
    ("experiments", ("augmentation", "colour"), r"config.experiments must be .* \['colour'\]"),
    ("augmentation.models", ("cnn", "vgg"), r"config.augmentation.models .* \['vgg'\]"),
    ("augmentation.augmentations", ("flip",), r"config.augmentation.augmentations .* \['flip'\]"),
    ("augmentation.datasets", ("mnist_offline", "svhn"),
     r"config.augmentation.datasets must be .* \('mnist_offline', 'mnist_canvas', 'cifar10'\).* "
     r"\['svhn'\]"),
    ("augmentation.cifar10_num_steps", 0, "config.augmentation.cifar10_num_steps must be an int"),
    ("augmentation.num_epochs", 0.0,
     r"config.augmentation.num_epochs must be a number > 0, got 0.0"),
    ("validation_fraction", 1.0, r"config.validation_fraction must be in \(0, 1\), got 1.0"),
    ("augmentation.seeds", (), "config.augmentation.seeds must be a non-empty list"),
    ("priors.seeds", (), "config.priors.seeds must be a non-empty list"),
    ("depth.depths", (9,), "config.depth.depths must be a non-empty list of depths 6n"),
])
def test_bad_sweep_specifications_are_rejected(field, value, message):
  config = exp_sweep.get_config("gpu")  # every experiment
  section, _, name = field.rpartition(".")
  (config[section] if section else config)[name] = value
  with pytest.raises(ValueError, match=message):
    sweep.validate_sweep(config)


def test_every_experiment_name_has_its_module_in_order():
  assert tuple(sweep.EXPERIMENTS) == exp_sweep.EXPERIMENT_NAMES


def test_bad_config_argument_is_rejected():
  with pytest.raises(ValueError, match="must be '', 'two_hours', 'smoke' or 'gpu', got 'huge'"):
    exp_sweep.get_config("huge")


def test_runs_go_seed_by_seed_and_have_unique_names():
  for config in (exp_sweep.get_config(), exp_sweep.get_config("gpu")):
    runs = sweep.plan_sweep(config)
    seeds = [run.seed for run in runs]
    assert seeds == sorted(seeds)
    assert len({(run.experiment, run.name) for run in runs}) == len(runs)
    assert {run.experiment for run in runs if run.seed == 0} == set(config.experiments)
  for arg in (None, "gpu"):
    assert exp_sweep.get_config(arg).experiments == exp_sweep.EXPERIMENT_NAMES


@pytest.mark.slow
def test_sweep_writes_a_report_and_skips_finished_runs(tmp_path):
  config = tiny_config()
  workdir = str(tmp_path)
  results = sweep.run_sweep(config, workdir)
  (result,) = results["augmentation"]
  metrics = result["metrics"]
  assert 0.0 <= metrics["clean_accuracy"] <= 1.0
  readme = open(os.path.join(workdir, "report", "README.md")).read()
  assert "| mlp | none | 1 |" in readme
  assert os.path.exists(os.path.join(workdir, "report", "accuracy_vs_angle.png"))
  # A rerun finds the result and does not train again: the edited file is what it reports.
  (run,) = sweep.plan_sweep(config)
  path = result_path(workdir, run)
  with open(path) as file:
    saved = json.load(file)
  saved["metrics"]["clean_accuracy"] = -1.0
  with open(path, "w") as file:
    json.dump(saved, file)
  rerun = sweep.run_sweep(config, workdir)
  assert rerun["augmentation"][0]["metrics"]["clean_accuracy"] == -1.0


def test_workers_run_the_runs_they_claim_and_leave_the_report_to_their_parent(tmp_path,
                                                                                monkeypatch):
  config = tiny_config()
  config.augmentation.seeds = (0, 1, 2, 3, 4)
  workdir = str(tmp_path)
  planned = sweep.plan_sweep(config)
  # Another worker of this invocation holds runs 1 and 3; an interrupted invocation's claim on
  # run 0 (another token) does not count.
  assert claim(workdir, planned[1], "now") and claim(workdir, planned[3], "now")
  assert claim(workdir, planned[0], "before")
  executed = []

  def execute(run, config, digits):
    executed.append(run.name)
    return dict(FAKE_METRICS)

  monkeypatch.setattr(augmentation, "execute", execute)
  monkeypatch.setattr(sweep, "load_dataset", lambda name, data_dir: None)
  sweep.run_sweep(config, workdir, worker="now")
  assert executed == [run.name for i, run in enumerate(planned) if i not in (1, 3)]
  assert not os.path.exists(os.path.join(tmp_path, "report"))
  # A second worker of the invocation finds nothing left to claim; its own runs' claims are
  # removed once their results are saved.
  sweep.run_sweep(config, workdir, worker="now")
  assert len(executed) == len(planned) - 2
  assert not os.path.exists(claim_path(workdir, planned[0], "now"))
  assert os.path.exists(claim_path(workdir, planned[1], "now"))
  results = sweep.run_sweep(config, workdir, report_only=True)
  assert [r["run"]["name"] for r in results["augmentation"]] == [
      run.name for i, run in enumerate(planned) if i not in (1, 3)]


def test_a_run_is_claimed_once_per_token(tmp_path):
  run = sweep.plan_sweep(tiny_config())[0]
  workdir = str(tmp_path)
  assert claim(workdir, run, "a") and not claim(workdir, run, "a") and claim(workdir, run, "b")


def test_finished_runs_are_skipped_and_unfinished_ones_run(tmp_path, monkeypatch):
  config = tiny_config()
  config.augmentation.seeds = (0, 1)
  first, second = sweep.plan_sweep(config)
  finished = dict(FAKE_METRICS, clean_accuracy=0.25)
  save_result(str(tmp_path), first, finished)
  executed = []

  def execute(run, config, digits):
    executed.append(run.name)
    return dict(FAKE_METRICS)

  monkeypatch.setattr(augmentation, "execute", execute)
  monkeypatch.setattr(sweep, "load_dataset", lambda name, data_dir: None)
  results = sweep.run_sweep(config, str(tmp_path))
  assert executed == [second.name]
  assert [r["metrics"]["clean_accuracy"] for r in results["augmentation"]] == [0.25, 0.5]
  readme = open(os.path.join(tmp_path, "report", "README.md")).read()
  # sample std (ddof=1) of 0.25, 0.5; t interval with 1 degree of freedom.
  assert "| mlp | none | 2 | 0.03 | 0.375 ± 0.177 [-1.213, 1.963] |" in readme


def test_absent_cifar10_is_logged_and_reported(tmp_path, caplog):
  config = exp_sweep.get_config("smoke")
  config.experiments = ("augmentation",)
  config.augmentation.datasets = ("mnist_offline", "cifar10")
  config.data_dir = str(tmp_path / "tfds")
  (digits_run,) = augmentation.plan(config)
  save_result(str(tmp_path), digits_run, FAKE_METRICS)
  with caplog.at_level(logging.WARNING):
    sweep.run_sweep(config, str(tmp_path), report_only=True)
  # Where TFDS is installed: where it looked and how to prepare it; else that it is missing.
  expected = not_prepared_message("cifar10", config.data_dir)
  # One line from the sweep (TFDS itself also warns that the folder it looked in is empty).
  (message,) = [r.getMessage() for r in caplog.records if "skips cifar10" in r.getMessage()]
  assert expected in message
  readme = open(os.path.join(tmp_path, "report", "README.md")).read()
  assert f"### CIFAR-10 ('cifar10')\n\nNot run: {expected}." in readme
  assert "augmentation 1/1" in readme  # the one digits run is planned, the CIFAR-10 one is not


def test_the_not_prepared_message_says_where_tfds_looked_and_how_to_prepare(tmp_path):
  pytest.importorskip("tensorflow_datasets", reason="the message without TFDS is tested above")
  message = not_prepared_message("cifar10", str(tmp_path))
  assert message.startswith("dataset 'cifar10' is not prepared in the TFDS data_dir")
  assert str(tmp_path) in message and "tfds build cifar10" in message
  assert "download_and_prepare()" in message


@pytest.mark.slow
def test_smoke_sweep_runs_every_experiment(tmp_path):
  results = sweep.run_sweep(exp_sweep.get_config("smoke"), str(tmp_path))
  assert set(results) == set(exp_sweep.EXPERIMENT_NAMES)
  readme = open(os.path.join(tmp_path, "report", "README.md")).read()
  for title in ("Equivariance by construction", "Learned translation invariance", "Priors",
                "Depth"):
    assert title in readme
  equivariance = results["equivariance"]
  circular = next(r for r in equivariance if r["run"]["options"]["variant"] == "conv_circular")
  assert max(layer["on_grid"] for layer in circular["metrics"]["layers"]) < 1e-5


def test_augmentation_specs_parse_and_combine():
  config = exp_sweep.get_config()
  assert augmentation.augmentation_spec("none", config) == ""
  assert augmentation.augmentation_spec("both", config) == "crop=3,rotate=30.0"


def test_canvas_placement_keeps_the_digit_and_fills_black():
  digits = jax.random.uniform(jax.random.PRNGKey(0), (3, 28, 28, 1)) + 0.1
  canvas = learned_invariance.place_on_canvas(digits, 40, (4, 12))
  assert canvas.shape == (3, 40, 40, 1)
  np.testing.assert_array_equal(canvas[:, 4:32, 12:40], digits)
  assert float(jnp.sum(canvas)) == pytest.approx(float(jnp.sum(digits)), rel=1e-5)


def test_random_placement_keeps_every_digit_whole_on_the_canvas():
  digits = jnp.ones((24, 28, 28, 1))
  canvases = jax.jit(learned_invariance.random_placement(36))(jax.random.PRNGKey(1), digits)
  np.testing.assert_allclose(jnp.sum(canvases, axis=(1, 2, 3)), 28 * 28)
  corners = {tuple(np.argwhere(np.asarray(c[..., 0]))[0]) for c in canvases}
  assert len(corners) > 5 and all(0 <= i <= 8 and 0 <= j <= 8 for i, j in corners)


def test_new_class_predictions_ignore_the_pretraining_classes():
  logits = jnp.array([[9.0, 0, 0, 0, 0, 1, 2, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0, 0, 3.0]])
  np.testing.assert_array_equal(learned_invariance.new_class_predictions(logits), [6, 9])


def test_circular_resnet_is_invariant_to_circular_shifts_on_its_grid():
  model_name, overrides = model_zoo.MODELS["resnet20_circular"]
  model = models.get_model(model_name, num_classes=10, **overrides)
  images = jax.random.normal(jax.random.PRNGKey(0), (2, 28, 28, 1))
  variables = jax.jit(lambda key: model.init(key, images, train=False))(prng_key(1))
  # The cumulative stride is 4: shifts by multiples of 4 leave the pooled features unchanged.
  on_grid, off_grid = jnp.roll(images, (4, 8), axis=(1, 2)), jnp.roll(images, (1, 0), axis=(1, 2))
  logits, on_grid_logits, off_grid_logits = jnp.split(model.apply(
      variables, jnp.concatenate([images, on_grid, off_grid]), train=False), 3)
  np.testing.assert_allclose(on_grid_logits, logits, atol=1e-4)
  assert not np.allclose(off_grid_logits, logits, atol=1e-4)


def test_pixel_permutation_moves_pixels_without_changing_them():
  images = jax.random.uniform(jax.random.PRNGKey(2), (2, 28, 28, 1))
  permuted = priors.pixel_permutation(images)
  np.testing.assert_array_equal(np.sort(permuted.ravel()), np.sort(images.ravel()))
  assert not np.allclose(permuted, images)
  np.testing.assert_array_equal(priors.pixel_permutation(images), permuted)


def test_balanced_subset_has_equal_classes():
  labels = np.repeat(np.arange(10), 50)
  _, subset_labels = priors.balanced_subset(np.zeros((500, 1)), labels, 200, seed=3)
  np.testing.assert_array_equal(np.bincount(subset_labels), [20] * 10)


def test_matched_mlp_has_about_the_cnn_parameter_count():
  cnn = priors.parameter_count("cnn", priors.SMALL_CNN)
  mlp = priors.parameter_count("mlp", {"widths": (priors.matched_mlp_width(),)})
  assert abs(mlp - cnn) / cnn < 0.05


def test_report_only_runs_nothing(tmp_path, monkeypatch):
  config = tiny_config()
  monkeypatch.setattr(augmentation, "execute", lambda *args: pytest.fail("a run was executed"))
  assert sweep.run_sweep(config, str(tmp_path), report_only=True) == {}
  readme = open(os.path.join(tmp_path, "report", "README.md")).read()
  assert "augmentation 0/1" in readme and "No finished runs." in readme


def test_report_only_rewrites_the_report_from_exported_results(tmp_path, monkeypatch):
  """The per-run JSON beside a report is enough to rewrite it and its figures: no training."""
  config = tiny_config()
  config.augmentation.seeds = (0, 1)
  accuracies = iter([0.25, 0.5])
  monkeypatch.setattr(augmentation, "execute", lambda run, config, digits: dict(
      FAKE_METRICS, clean_accuracy=next(accuracies)))
  monkeypatch.setattr(sweep, "load_dataset", lambda name, data_dir: None)
  report_dir = str(tmp_path / "results")
  sweep.run_sweep(config, str(tmp_path / "work"), report_dir=report_dir)
  readme_path = os.path.join(report_dir, "README.md")
  first = open(readme_path).read()
  figures = sorted(name for name in os.listdir(report_dir) if name.endswith(".png"))
  assert figures and sorted(os.listdir(os.path.join(report_dir, "runs"))) == [
      "augmentation.json", "config.json"]
  for name in figures + ["README.md"]:
    os.remove(os.path.join(report_dir, name))

  def no_training(*args):
    raise AssertionError("report_only trained")

  monkeypatch.setattr(augmentation, "execute", no_training)
  sweep.report.report_from_exported(report_dir, sweep.EXPERIMENTS)
  second = open(readme_path).read()
  without_date = lambda text: [line for line in text.splitlines()
                               if not line.startswith("Generated ")]
  assert without_date(second) == without_date(first)
  assert "| mlp | none | 2 | 0.03 | 0.375 ± 0.177 [-1.213, 1.963] |" in second
  assert sorted(name for name in os.listdir(report_dir) if name.endswith(".png")) == figures


def test_import_results_copies_the_planned_exported_runs_only(tmp_path, monkeypatch, caplog):
  """A sweep extended from exported results reruns none of them, runs what the config adds,
  and says which config fields differ from the exported one."""
  config = tiny_config()
  config.augmentation.seeds = (0,)
  monkeypatch.setattr(augmentation, "execute", lambda run, config, digits: dict(FAKE_METRICS))
  monkeypatch.setattr(sweep, "load_dataset", lambda name, data_dir: None)
  report_dir = str(tmp_path / "results")
  sweep.run_sweep(config, str(tmp_path / "first"), report_dir=report_dir)
  sweep.record_timing(str(tmp_path / "first"), 1.0, 1, 1, 1, 0.0)
  sweep.report.export_results(*sweep.report.load_exported(report_dir), report_dir,
                              timing=sweep.report.load_timing(str(tmp_path / "first")))

  config.augmentation.seeds = (0, 1)
  workdir = str(tmp_path / "second")
  with caplog.at_level("WARNING"):
    assert sweep.import_results(config, workdir, report_dir) == 1
  assert "augmentation.seeds" in caplog.text
  first, second = sweep.plan_sweep(config)
  assert sweep.is_finished(workdir, first) and not sweep.is_finished(workdir, second)
  assert sweep.report.load_timing(workdir)["invocations"][0]["wall_seconds"] == 1.0
  assert sweep.import_results(config, workdir, report_dir) == 0  # finished runs are kept
  # A run of the same name with other options is another run: not imported.
  path = os.path.join(report_dir, "runs", "augmentation.json")
  with open(path) as file:
    exported = json.load(file)
  exported[0]["run"]["options"]["changed"] = True
  with open(path, "w") as file:
    json.dump(exported, file)
  assert sweep.import_results(config, str(tmp_path / "third"), report_dir) == 0
  executed = []
  monkeypatch.setattr(augmentation, "execute",
                      lambda run, config, digits: executed.append(run.name) or dict(FAKE_METRICS))
  sweep.run_sweep(config, workdir)
  assert executed == [second.name]


def test_import_results_from_a_directory_without_results_says_so(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"--import_results .* has no exported results"):
    sweep.import_results(tiny_config(), str(tmp_path / "work"), str(tmp_path))


def test_report_only_without_exported_results_says_so(tmp_path):
  with pytest.raises(FileNotFoundError, match="has no exported results"):
    sweep.report.report_from_exported(str(tmp_path), sweep.EXPERIMENTS)


def test_dose_response_plans_each_range_once_and_reports_it(tmp_path, monkeypatch):
  config = tiny_config()
  config.augmentation.seeds = (0, 1)
  config.augmentation.dose_models = ("mlp",)
  config.augmentation.translation_ranges = (0, 2, 3)  # 0: the grid's 'none'; 3: 'translate'
  config.augmentation.rotation_ranges = (0.0, 90.0)
  names = [run.name for run in augmentation.plan(config) if run.seed == 0]
  assert names == ["mlp_none_seed0", "mlp_translate2_seed0", "mlp_translate_seed0",
                   "mlp_rotate90_seed0"]
  assert augmentation.augmentation_spec("translate2", config) == "crop=2"
  assert augmentation.augmentation_spec("rotate90", config) == "rotate=90"
  monkeypatch.setattr(augmentation, "execute", lambda run, config, digits: dict(FAKE_METRICS))
  monkeypatch.setattr(sweep, "load_dataset", lambda name, data_dir: None)
  sweep.run_sweep(config, str(tmp_path))
  readme = open(os.path.join(tmp_path, "report", "README.md")).read()
  assert "### Dose-response" in readme and "| mlp | translate | ±2px | 2 |" in readme
  assert "| mlp | rotate | ±90° | 2 |" in readme
  assert os.path.exists(os.path.join(tmp_path, "report", "dose_response.png"))


def test_budget_cut_models_get_only_the_first_augmentation():
  full, gpu = exp_sweep.get_config(), exp_sweep.get_config("gpu")
  seed0 = lambda config: [run.name for run in augmentation.plan(config) if run.seed == 0]
  assert "cnn_blur_none_seed0" in seed0(full) and "cnn_blur_rotate_seed0" not in seed0(full)
  assert "cnn_blur_rotate_seed0" in seed0(gpu) and "cnn_rotate_seed0" in seed0(full)
  # The ResNets: on the canvas only (its padding contrasts), on the digits too in 'gpu'.
  assert "mnist_canvas_resnet20_circular_none_seed0" in seed0(full)
  assert "resnet20_none_seed0" not in seed0(full) and "resnet20_rotate_seed0" in seed0(gpu)
  assert len(gpu.augmentation.seeds) >= len(full.augmentation.seeds) >= 5


@pytest.mark.slow  # redraws every figure of the committed report (about a minute)
def test_the_committed_report_is_regenerated_from_its_committed_results(tmp_path):
  """`make report`: experiments/results/README.md follows from experiments/results/runs/*.json."""
  import shutil
  committed = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "results")
  report_dir = str(tmp_path / "results")
  shutil.copytree(os.path.join(committed, "runs"), os.path.join(report_dir, "runs"))
  sweep.report.report_from_exported(report_dir, sweep.EXPERIMENTS)
  without_date = lambda path: [line for line in open(path).read().splitlines()
                               if not line.startswith("Generated ")]
  assert without_date(os.path.join(report_dir, "README.md")) == without_date(
      os.path.join(committed, "README.md"))
  committed_figures = sorted(name for name in os.listdir(committed) if name.endswith(".png"))
  assert sorted(name for name in os.listdir(report_dir) if name.endswith(".png")) == (
      committed_figures)


def test_the_timed_invocations_reach_the_report_and_its_exported_results(tmp_path, monkeypatch):
  config = tiny_config()
  monkeypatch.setattr(augmentation, "execute", lambda run, config, digits: dict(FAKE_METRICS))
  monkeypatch.setattr(sweep, "load_dataset", lambda name, data_dir: None)
  workdir, report_dir = str(tmp_path / "work"), str(tmp_path / "results")
  sweep.run_sweep(config, workdir, worker="token")
  timing = sweep.record_timing(workdir, 180.0, 1, 1, 2, 0.5)
  sweep.run_sweep(config, workdir, report_only=True, report_dir=report_dir)
  sentence = ("the sweep invocation that ran the runs: 3 min for 1 of 1 planned runs (2 worker "
              "processes on")
  assert sentence in open(os.path.join(report_dir, "README.md")).read()
  # A second invocation adds to the history; the header states both and their sum.
  timing = sweep.record_timing(workdir, 420.0, 1, 1, 2, 0.5)
  assert [r["wall_seconds"] for r in timing["invocations"]] == [180.0, 420.0]
  sweep.run_sweep(config, workdir, report_only=True, report_dir=report_dir)
  sentence = "the 2 sweep invocations that ran runs in this workdir, in order: 3 min for 1 of 1"
  text = open(os.path.join(report_dir, "README.md")).read()
  assert sentence in text and ": 10 min in all" in text
  with open(os.path.join(report_dir, "runs", sweep.report.TIMING_FILE)) as file:
    assert json.load(file) == timing
  os.remove(os.path.join(report_dir, "README.md"))
  sweep.report.report_from_exported(report_dir, sweep.EXPERIMENTS)
  assert sentence in open(os.path.join(report_dir, "README.md")).read()


def test_a_timing_file_of_one_record_reads_as_a_history_of_one(tmp_path):
  record = {"wall_seconds": 60.0, "runs_run": 2, "runs_planned": 2, "processes": 1,
            "processor": "cpu", "cpu_count": 2, "load_average_at_start": 0.0,
            "finished": "2026-01-01 00:00 UTC"}
  with open(tmp_path / sweep.report.TIMING_FILE, "w") as file:
    json.dump(record, file)
  assert sweep.report.load_timing(str(tmp_path)) == {"invocations": [record]}


def test_workers_share_the_cores_among_their_openmp_teams_unless_told(monkeypatch):
  monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
  monkeypatch.setattr(sweep.os, "cpu_count", lambda: 8)
  assert sweep.worker_environment(2)["OMP_NUM_THREADS"] == "4"
  assert sweep.worker_environment(16)["OMP_NUM_THREADS"] == "1"
  monkeypatch.setenv("OMP_NUM_THREADS", "3")
  assert sweep.worker_environment(2)["OMP_NUM_THREADS"] == "3"


@pytest.mark.parametrize("dataset", ["mnist_offline", "mnist_canvas"])
def test_the_stopping_rule_trains_cells_for_half_as_long_and_listed_ones_longer(dataset):
  config = exp_sweep.get_config()
  settings = config.augmentation.canvas if dataset == "mnist_canvas" else config.augmentation
  half = settings.num_epochs / 2
  runs = [run for run in augmentation.plan(config) if run.options["dataset"] == dataset]
  other = [run for run in runs if "epochs" in run.options]
  full = {run.name: run for run in runs if "epochs" not in run.options}
  for run in other:
    twin = full[run.name.replace(f"_e{run.options['epochs']:g}_", "_")]
    assert {k: v for k, v in run.options.items() if k != "epochs"} == twin.options
    assert run.seed == twin.seed
  checks = [run for run in other if run.options["epochs"] == half]
  assert {run.options["model"] for run in checks} == set(settings.half_length_models)
  # Every run of those models on the dataset, the dose-response's included.
  assert len(checks) == sum(run.options["model"] in settings.half_length_models
                            for run in full.values())
  longer = {(f"{run.options['model']}_{run.options['augmentation']}", run.options["epochs"])
            for run in other if run.options["epochs"] != half}
  assert longer == {(cell, epochs) for cell, lengths in settings.schedule_epochs.items()
                    for epochs in lengths}
  assert len(other) == len(checks) + len(longer) * len(config.augmentation.seeds)
  steps = lambda epochs: augmentation.num_steps(config, dataset, 3600, epochs)
  assert steps(7.5) == math.ceil(7.5 * 3600 / 64)
  assert steps(None) == math.ceil(settings.num_epochs * 3600 / 64)


def test_the_stopping_rule_leaves_cifar10_at_its_steps(monkeypatch):
  config = exp_sweep.get_config()
  config.augmentation.canvas.half_length_models = ()
  monkeypatch.setattr(augmentation, "absent_datasets", lambda config: ())
  runs = augmentation.plan(config)
  assert any(run.options["dataset"] == "cifar10" for run in runs)
  assert not any(run.options["dataset"] == "cifar10" and "epochs" in run.options for run in runs)
  assert "mnist_canvas_cnn_none_e24_seed4" in {run.name for run in runs}
  assert "cnn_rotate90_e7.5_seed4" in {run.name for run in runs}


@pytest.mark.parametrize("cells, message", [
    ({"cnn_flip": (30.0,)}, "keys must be '<model>_<augmentation>' cells .* got 'cnn_flip'"),
    ({"cnn_translate": (15.0,)}, r"cnn_translate must be numbers of epochs > 0 other than "
                                 r"num_epochs \(15\)"),
])
def test_bad_schedule_epochs_are_rejected(cells, message):
  config = exp_sweep.get_config()
  config.augmentation.schedule_epochs = cells
  with pytest.raises(ValueError, match=message):
    augmentation.validate(config)


@pytest.mark.parametrize("cells, message", [
    ({"cnn_rotate": (12.0,)}, r"canvas.schedule_epochs keys must be .* of the canvas grid, got "
                              "'cnn_rotate'"),
    ({"cnn_none": (6.0,)}, r"canvas.schedule_epochs.cnn_none must be numbers of epochs > 0 "
                           r"other than num_epochs \(6\)"),
])
def test_bad_canvas_schedule_epochs_are_rejected(cells, message):
  config = exp_sweep.get_config()
  config.augmentation.canvas.schedule_epochs = cells
  with pytest.raises(ValueError, match=message):
    augmentation.validate(config)


def test_the_report_gives_each_cell_at_its_plateau_length_and_says_which_are_not(tmp_path,
                                                                                 monkeypatch):
  config = tiny_config()
  config.augmentation.seeds = (0, 1, 2)
  config.augmentation.augmentations = ("none", "translate", "rotate")
  config.augmentation.half_length_models = ("mlp",)
  config.augmentation.schedule_epochs = {"mlp_rotate": (2 * config.augmentation.num_epochs,)}
  # The canvas: checked the same way ('none' at its plateau at its length).
  config.augmentation.datasets = ("mnist_offline", "mnist_canvas")
  config.augmentation.canvas.models = ("mlp",)
  config.augmentation.canvas.augmentations = ("none",)
  config.augmentation.canvas.num_epochs = config.augmentation.num_epochs
  config.augmentation.canvas.half_length_models = ("mlp",)
  full = config.augmentation.num_epochs
  # Final validation accuracy by (augmentation, length in units of num_epochs): 'none' is at its
  # plateau at num_epochs (+0.001), 'translate' still rises at its longest (+0.1), 'rotate'
  # rises to num_epochs (+0.1) and is at its plateau at twice that (+0.002).
  final = {("none", 0.5): 0.399, ("none", 1): 0.40, ("translate", 0.5): 0.80,
           ("translate", 1): 0.90, ("rotate", 0.5): 0.70, ("rotate", 1): 0.80,
           ("rotate", 2): 0.802}

  def execute(run, config, digits):
    length = run.options.get("epochs", full) / full
    return dict(FAKE_METRICS, clean_accuracy=0.1 * length + 0.3 * (run.options["augmentation"]
                                                                   == "rotate"),
                validation_accuracy=[0.1, final[(run.options["augmentation"], length)]
                                     + 0.001 * run.seed])

  monkeypatch.setattr(augmentation, "execute", execute)
  monkeypatch.setattr(sweep, "load_dataset", lambda name, data_dir: None)
  sweep.run_sweep(config, str(tmp_path))
  readme = open(os.path.join(tmp_path, "report", "README.md")).read()
  # The tables hold each cell at its reported length only (3 seeds each).
  assert f"| mlp | none | 3 | {full:g} | 0.100 ± 0.000 [0.100, 0.100] |" in readme
  assert f"| mlp | translate | 3 | {full:g} | 0.100 ± 0.000 [0.100, 0.100] |" in readme
  assert f"| mlp | rotate | 3 | {2 * full:g} | 0.500 ± 0.000 [0.500, 0.500] |" in readme
  assert "| +0.0010 (" in readme and "| **+0.1000** (" in readme and "| +0.0020 (" in readme
  assert ("2 of 3 checked cells reached it; **not at their plateau**: mlp translate at "
          f"{full:g} epochs (+0.1000 from {full / 2:g}, p ") in readme
  canvas = readme[readme.index("### Offline MNIST digits on a 40 x 40 canvas"):]
  assert f"| mlp | none | 3 | {full:g} | 0.100 ± 0.000 [0.100, 0.100] |" in canvas
  assert "1 of 1 checked cells reached it." in canvas


def test_the_report_states_the_budget_cuts_and_the_sections_they_leave_out(tmp_path):
  config = exp_sweep.get_config()
  config.experiments = tuple(name for name in config.experiments if name != "depth")
  path = sweep.report.write_report({}, config, str(tmp_path), sweep.EXPERIMENTS)
  readme = open(path).read()
  assert (f"Budget cuts (to fit the sweep into {config.budget_hours:g} hours on 2 CPU cores;"
          in readme)
  assert f"- 5. Depth: plain vs residual: {config.budget_cuts.depth}." in readme
  # A cut experiment left out of the sweep gets its section, saying so.
  assert "## 5. Depth: plain vs residual\n\nNot run in this sweep (budget cuts above)." in readme
  gpu = sweep.report.write_report({}, exp_sweep.get_config("gpu"), str(tmp_path / "gpu"),
                                  sweep.EXPERIMENTS)
  assert "Budget cuts" not in open(gpu).read()


COMMITTED_RESULTS = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "results")


def test_a_lengths_from_report_drops_the_runs_it_trained_but_did_not_report(tmp_path):
  """`config.lengths_from`: each cell the report has trains only at its reported length; cells
  it lacks and experiments without lengths keep every run."""
  from types import SimpleNamespace
  from experiments.runs import Run
  run = lambda experiment, name: Run(experiment, name, 0, {})
  result = lambda name, experiment="timed": {"run": run(experiment, name)._asdict(),
                                             "metrics": {"wall_time_seconds": 60.0}}
  exported = {"timed": [result("a_e40_seed0"), result("a_seed0"), result("b_e160_seed0"),
                        result("b_seed0")],
              "untimed": [result("c_seed0", "untimed")]}
  experiments = {  # the report kept a at its first length and b at 160 epochs
      "timed": SimpleNamespace(reported_runs=lambda results, config: [
          r for r in results if r["run"]["name"] in ("a_e40_seed0", "b_e160_seed0")]),
      "untimed": SimpleNamespace()}
  config = exp_sweep.get_config()
  config.experiments = ("timed", "untimed")
  sweep.report.export_results(exported, config, str(tmp_path))
  planned = [run("timed", name) for name in ("a_e40_seed0", "a_seed0", "b_e160_seed0",
                                             "b_seed0", "new_seed0")] + [run("untimed", "c_seed0")]
  kept = sweep.report.at_reported_lengths(planned, str(tmp_path), experiments)
  assert [r.name for r in kept] == ["a_e40_seed0", "b_e160_seed0", "new_seed0", "c_seed0"]
  wall_seconds = sweep.report.reported_wall_seconds(
      *sweep.report.load_exported(str(tmp_path)), experiments)
  assert set(wall_seconds) == {("timed", "a_e40_seed0"), ("timed", "b_e160_seed0"),
                               ("untimed", "c_seed0")}
  assert sweep.report.packed_minutes(kept, wall_seconds) == 3.0  # new_seed0 not exported
  # Two workers: a_e40 and b_e160 side by side, then c_seed0 on the first free one.
  assert sweep.report.packed_minutes(kept, wall_seconds, workers=2) == 2.0


def test_the_two_hour_sweep_trains_each_cell_once_within_two_hours_of_the_committed_runs():
  """'two_hours' (`make sweep-2h`): every planned run is one of the committed report's reported
  runs, each cell at one length, and their committed wall times fit 2 hours on 2 workers."""
  config = exp_sweep.get_config("two_hours")
  sweep.validate_sweep(config)
  assert config.budget_hours == 2 and "depth" not in config.experiments
  planned = sweep.plan_sweep(config)
  reported = sweep.report.reported_wall_seconds(*sweep.report.load_exported(COMMITTED_RESULTS),
                                                sweep.EXPERIMENTS)
  assert {(r.experiment, r.name) for r in planned} <= set(reported)  # the estimate covers all
  cells = [(r.experiment, r.seed, json.dumps({k: v for k, v in r.options.items()
                                              if k not in ("epochs", "length")}, sort_keys=True))
           for r in planned]
  assert len(cells) == len(set(cells))
  by_experiment = {name: {r.name for r in planned if r.experiment == name}
                   for name in config.experiments}
  assert "cnn_bn_rotate_seed0" not in by_experiment["rotation"]  # 80 epochs: not its plateau
  assert len(by_experiment["rotation"]) == 4 * len(config.rotation.seeds)
  wall_minutes = sweep.report.packed_minutes(planned, reported, workers=2)
  assert wall_minutes <= 60 * config.budget_hours * 0.95  # a margin for startup and loading


def test_the_two_hour_report_says_where_its_lengths_come_from(tmp_path):
  config = exp_sweep.get_config("two_hours")
  path = sweep.report.write_report({}, config, str(tmp_path), sweep.EXPERIMENTS)
  readme = open(path).read()
  assert ("Each cell trained once, at the length the report in `experiments/results` reported "
          "it at" in readme)
  assert "Budget cuts (to fit the sweep into 2 hours on 2 CPU cores;" in readme
  # What the cuts leave out, and the budget the whole report at its lengths would need.
  left_out = re.search(r"What the budget cuts leave out of that report's reported runs took "
                       r"(\d+) min of compute there \(depth (\d+), .*\): training every one of "
                       r"its cells once at its reported length takes (\d+) compute-min", readme)
  assert left_out and int(left_out[1]) >= int(left_out[2]) > 0
  assert int(left_out[3]) > 2 * 60 * config.budget_hours  # why the cuts
  assert "## 5. Depth: plain vs residual\n\nNot run in this sweep (budget cuts above)." in readme


def test_a_lengths_from_report_says_which_runs_reproduce_the_reference_exactly():
  """Every number of a run (nested curves included, timings aside) against the reference's run
  of the same name: identical runs count, the largest relative difference is named."""
  reference = {"a": [{"run": {"name": "x_seed0"},
                      "metrics": {"clean_accuracy": 0.9, "curve": {"loss": [1.0, 0.5]},
                                  "wall_time_seconds": 10.0}},
                     {"run": {"name": "y_seed0"}, "metrics": {"clean_accuracy": 0.8}}]}
  same = {"a": [{"run": {"name": "x_seed0"},
                 "metrics": {"clean_accuracy": 0.9, "curve": {"loss": [1.0, 0.5]},
                             "wall_time_seconds": 7.0}},
                {"run": {"name": "new_seed0"}, "metrics": {"clean_accuracy": 0.1}}]}
  assert sweep.report.reproduction_sentence(same, reference) == (
      " Of the 1 finished runs that report also has, 1 reproduce every number it recorded for "
      "them exactly (timings aside).")
  changed = {"a": [{"run": {"name": "x_seed0"},
                    "metrics": {"clean_accuracy": 0.9, "curve": {"loss": [1.0, 0.4]}}},
                   {"run": {"name": "y_seed0"}, "metrics": {"clean_accuracy": 0.8}}]}
  assert sweep.report.reproduction_sentence(changed, reference) == (
      " Of the 2 finished runs that report also has, 1 reproduce every number it recorded for "
      "them exactly (timings aside); the largest relative difference of any number is 0.2, in "
      "a/x_seed0 curve.loss.1: 0.5 there, 0.4 here.")
  assert sweep.report.relative_difference(math.nan, math.nan) == 0.0
  assert sweep.report.relative_difference(1.0, math.nan) == math.inf
