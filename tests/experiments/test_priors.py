"""`experiments/priors.py`: the data-size curve's plan and stopping rule, the phase-randomized
control, a smoke run of each kind, and the report's contrasts from fixture results."""

import math
import os

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from experiments import priors
from experiments.configs import exp_sweep
from experiments.in_memory_training import load_digits


@pytest.mark.parametrize("field, value, message", [
    ("train_sizes", (100, 4000), r"config.priors.train_sizes must be .* \[10, 3600\] .* 4000\)"),
    ("train_sizes", (), "config.priors.train_sizes must be a non-empty list"),
    ("permuted_train_sizes", (100, 250, 3600),
     r"permuted_train_sizes must be a subset of train_sizes .* \(not in train_sizes: \[250\]\)"),
    ("min_steps", 0, "config.priors.min_steps must be an int >= 1, got 0"),
    ("control_draws", 0, "config.priors.control_draws must be an int >= 1, got 0"),
    ("seeds", (1, 1), "config.priors.seeds must be a non-empty list of distinct ints"),
])
def test_bad_priors_settings_are_rejected(field, value, message):
  config = exp_sweep.get_config()
  config.priors.train_sizes = (100, 1000, 3600)
  config.priors[field] = value
  with pytest.raises(ValueError, match=message):
    priors.validate(config)


def test_epochs_must_be_given_for_each_architecture():
  config = exp_sweep.get_config()
  del config.priors.num_epochs["mlp"]
  with pytest.raises(ValueError, match=r"num_epochs must map each of \('cnn', 'mlp'\)"):
    priors.validate(config)


def test_training_digits_per_class_match_the_offline_digits():
  digits = load_digits()
  np.testing.assert_array_equal(np.bincount(digits.train_labels),
                                [priors.TRAIN_DIGITS_PER_CLASS] * 10)


@pytest.mark.parametrize("arg", ["", "two_hours", "gpu", "smoke"])
def test_sweep_configs_are_valid(arg):
  priors.validate(exp_sweep.get_config(arg))


def test_plan_permutes_pixels_only_at_the_permuted_sizes():
  config = exp_sweep.get_config()
  runs = priors.plan(config)
  training = [run for run in runs if run.options["kind"] == "training"]
  sizes = lambda pixels: {run.options["train_size"] for run in training
                          if run.options["pixels"] == pixels}
  assert sizes("natural") == set(config.priors.train_sizes)
  assert sizes("permuted") == set(config.priors.permuted_train_sizes)
  assert len(config.priors.train_sizes) >= 6 and len(config.priors.seeds) >= 5
  assert min(config.priors.train_sizes) == 100 and max(config.priors.train_sizes) == 3600
  assert len({run.name for run in runs}) == len(runs)
  assert [run.options["kind"] for run in runs].count("self_similarity") == 1
  gpu = priors.plan(exp_sweep.get_config("gpu"))
  assert {run.options["train_size"] for run in gpu
          if run.options.get("pixels") == "permuted"} == set(config.priors.train_sizes)


def test_stopping_rule_has_a_floor_of_steps_and_counts_epochs_above_it():
  config = exp_sweep.get_config()
  config.priors.min_steps = 150
  config.priors.num_epochs.cnn = 10.0
  assert priors.training_steps(config, "cnn", 100) == 150  # 10 epochs would be 16 steps
  assert priors.training_steps(config, "cnn", 3600) == math.ceil(10 * 3600 / config.batch_size)


def test_training_digits_are_balanced_and_never_validation_digits():
  labels = np.repeat(np.arange(10), 400)
  indices = np.arange(len(labels))
  (train, train_labels), (validation, _) = priors.training_and_validation(
      indices, labels, 3600, seed=1, validation_fraction=0.1)
  np.testing.assert_array_equal(np.bincount(train_labels), [360] * 10)
  assert len(validation) == 400 and not set(train) & set(validation)
  (other_seed, _), (same_validation, _) = priors.training_and_validation(
      indices, labels, 500, seed=2, validation_fraction=0.1)
  np.testing.assert_array_equal(same_validation, validation)  # one split for every run
  assert not set(other_seed) & set(validation)


@settings(deadline=None, max_examples=25)
@given(height=st.integers(2, 33), width=st.integers(2, 33), seed=st.integers(0, 2**31))
def test_phase_randomization_keeps_the_power_spectrum_and_the_mean(height, width, seed):
  image = np.random.default_rng(seed).random((height, width))
  control = priors.phase_randomized(image, np.random.default_rng(seed + 1))
  assert control.shape == image.shape and control.dtype == np.float64
  # float64 FFTs of <= 33x33 images: rounding ~1e-15 relative; 1e-9 leaves a wide margin.
  np.testing.assert_allclose(np.abs(np.fft.fft2(control)), np.abs(np.fft.fft2(image)),
                             rtol=1e-9, atol=1e-9 * np.abs(image).sum())
  np.testing.assert_allclose(control.mean(), image.mean(), rtol=1e-9)


@settings(deadline=None, max_examples=25)
@given(height=st.integers(2, 33), width=st.integers(2, 33), seed=st.integers(0, 2**31))
def test_random_phases_give_a_real_image(height, width, seed):
  """The phases are antisymmetric under k -> -k, so any symmetric amplitude (here that of a
  real image) gives a Hermitian spectrum: its inverse FFT has no imaginary part."""
  rng = np.random.default_rng(seed)
  amplitude = np.abs(np.fft.fft2(rng.random((height, width))))
  phases = priors.random_phases((height, width), rng)
  inverse = np.fft.ifft2(amplitude * np.exp(1j * phases))
  # Rounding of float64 FFTs: ~1e-16 of the real part's scale; 1e-10 is a wide margin.
  assert np.max(np.abs(inverse.imag)) <= 1e-10 * np.max(np.abs(inverse.real))


def test_phase_randomization_moves_the_structure():
  image = np.zeros((16, 16))
  image[4:8, 4:8] = 1.0
  control = priors.phase_randomized(image, np.random.default_rng(0))
  assert np.max(np.abs(control - image)) > 0.1


def test_smoke_runs_train_with_a_validation_curve_and_measure_self_similarity():
  config = exp_sweep.get_config("smoke")
  digits = load_digits()
  runs = priors.plan(config)
  training = next(run for run in runs if run.options.get("pixels") == "permuted"
                  and run.options["architecture"] == "mlp")
  metrics = priors.execute(training, config, digits)
  assert metrics["train_steps"] == config.priors.min_steps
  assert metrics["epochs"] == pytest.approx(metrics["train_steps"] * config.batch_size / 100)
  assert len(metrics["record_steps"]) == len(metrics["validation_accuracy"]) >= 1
  assert all(0.0 <= a <= 1.0 for a in metrics["validation_accuracy"])
  assert 0.0 <= metrics["test_accuracy"] <= 1.0 and math.isfinite(metrics["final_train_loss"])
  cnn_parameters = priors.parameter_count("cnn", priors.SMALL_CNN)
  assert abs(metrics["parameters"] - cnn_parameters) / cnn_parameters < 0.01  # matched MLP
  similarity = priors.execute(runs[-1], config, digits)
  assert set(similarity["ratios"]) == set(priors.PHOTOS)
  for values in similarity["ratios"].values():
    assert set(values) == set(priors.IMAGE_KINDS)
    assert all(0.0 < v <= 1.0 for v in values.values())


def _training_result(arch, pixels, size, seed, accuracy, length=None, final=0.8):
  options = {"kind": "training", "architecture": arch, "pixels": pixels, "train_size": size}
  return {"run": {"experiment": "priors", "name": f"{arch}_{pixels}_{size}_seed{seed}",
                  "seed": seed,
                  "options": options if length is None else {**options, "length": length}},
          "metrics": {"test_accuracy": accuracy, "final_train_loss": 0.5, "parameters": 1000,
                      "train_steps": 8 if length is None else math.ceil(8 * length),
                      "epochs": 5.0, "record_steps": [2, 4, 6, 8],
                      "train_loss": [1.0, 0.8, 0.6, 0.5],
                      "validation_accuracy": [0.5, 0.7, 0.8, final],
                      "validation_loss": [1.5, 1.0, 0.8, 0.8], "plateau_gain": 0.0,
                      "wall_time_seconds": 1.0}}


def fixture_results():
  """CNN above the MLP on natural pixels at both sizes; the CNN loses its advantage when
  permuted at 3,600 but not at 100 (where it is made equal: 'not supported'); the MLP is the
  same on both pixel orders."""
  accuracy = {("cnn", "natural", 100): 0.90, ("mlp", "natural", 100): 0.80,
              ("cnn", "natural", 3600): 0.98, ("mlp", "natural", 3600): 0.95,
              ("cnn", "permuted", 3600): 0.90, ("mlp", "permuted", 3600): 0.95,
              ("cnn", "permuted", 100): 0.90}
  results = [_training_result(*key, seed, value + 0.01 * (seed - 1))  # std 0.01
             for key, value in accuracy.items() for seed in range(3)]
  ratios = {name: {"photo": 0.3 + 0.01 * i, "phase_randomized": 0.4 + 0.02 * i,
                   "shuffled": 0.75, "gaussian": 0.76 - 0.001 * i}
            for i, name in enumerate(priors.PHOTOS[:4])}
  results.append({"run": {"experiment": "priors", "name": "self_similarity", "seed": 0,
                          "options": {"kind": "self_similarity"}},
                  "metrics": {"ratios": ratios, "control_draws": 2, "wall_time_seconds": 1.0}})
  return results


def test_training_contrasts_are_tested_and_their_verdicts_computed():
  results = [r for r in fixture_results() if r["run"]["options"]["kind"] == "training"]
  groups = priors.by_option(results, "architecture", "pixels", "train_size")
  rows = {(row["contrast"], row["size"]): row for row in priors.training_contrasts(groups)}
  assert set(rows) == {("CNN vs MLP, natural pixels", 100), ("CNN vs MLP, natural pixels", 3600),
                       ("CNN: permuted vs natural pixels", 100),
                       ("CNN: permuted vs natural pixels", 3600),
                       ("MLP: permuted vs natural pixels", 3600)}
  assert rows[("CNN vs MLP, natural pixels", 3600)]["verdict"] == "supported"
  assert rows[("CNN vs MLP, natural pixels", 3600)]["comparison"].difference == pytest.approx(0.03)
  assert rows[("CNN: permuted vs natural pixels", 3600)]["verdict"] == "supported"
  assert rows[("CNN: permuted vs natural pixels", 100)]["verdict"] == "not supported"
  assert rows[("MLP: permuted vs natural pixels", 3600)]["verdict"] == (
      "no significant difference (as predicted)")
  flipped = [_training_result("cnn", "natural", 500, seed, 0.7 + 0.01 * seed) for seed in range(3)]
  flipped += [_training_result("mlp", "natural", 500, seed, 0.9 + 0.01 * seed) for seed in range(3)]
  (row,) = priors.training_contrasts(
      priors.by_option(flipped, "architecture", "pixels", "train_size"))
  assert row["verdict"] == "opposite" and row["comparison"].p_value < 0.05


def test_similarity_contrasts_are_paired_over_photos():
  ratios = fixture_results()[-1]["metrics"]["ratios"]
  rows = {row["control"]: row for row in priors.similarity_contrasts(ratios)}
  assert list(rows) == list(priors.IMAGE_KINDS[1:])
  assert all(row["verdict"] == "supported" for row in rows.values())
  assert rows["phase_randomized"]["comparison"].method == "paired t"
  assert rows["phase_randomized"]["comparison"].difference == pytest.approx(-0.1 - 0.01 * 1.5)
  swapped = {name: {**values, "photo": values["phase_randomized"] + 0.1 + 0.01 * i}
             for i, (name, values) in enumerate(ratios.items())}
  assert {row["control"]: row["verdict"] for row in priors.similarity_contrasts(swapped)}[
      "phase_randomized"] == "opposite"


def test_report_draws_the_curves_and_tables_from_fixture_results(tmp_path):
  config = exp_sweep.get_config()
  config.priors.train_sizes = (100, 3600)
  text = priors.report(fixture_results(), config, str(tmp_path))
  for figure in ("priors_data_size.png", "priors_validation_curves.png",
                 "priors_self_similarity.png"):
    assert os.path.getsize(tmp_path / figure) > 0 and f"]({figure})" in text
  assert "| cnn | natural | 3600 | 1000 | 8 | 5 | 1 | 3 | 0.980 ± 0.010" in text
  assert "| CNN vs MLP, natural pixels | 3600 |" in text and "| supported |" in text
  assert "phases randomized" in text and "| MLP: permuted vs natural pixels | 3600 |" in text
  assert "Budget cut" not in text  # the permuted sizes cover the fixture's train sizes
  config.priors.train_sizes = (100, 1000, 3600)
  assert "Budget cut: permuted pixels only at 100, 3600 digits" in priors.report(
      fixture_results(), config, str(tmp_path))


def test_plan_checks_every_training_run_at_half_length_and_listed_cells_longer():
  config = exp_sweep.get_config()
  config.priors.schedule_lengths = {"mlp_natural_250": (2.0, 4.0)}
  runs = priors.plan(config)
  rule = {run.name: run for run in runs if "length" not in run.options}
  other = [run for run in runs if "length" in run.options]
  for run in other:
    twin = rule[run.name.replace(f"_x{run.options['length']:g}_", "_")]
    assert {k: v for k, v in run.options.items() if k != "length"} == twin.options
  assert sum(run.options["length"] == 0.5 for run in other) == len(rule) - 1  # self-similarity
  assert {(priors.cell_name(run), run.options["length"]) for run in other
          if run.options["length"] > 1} == {("mlp_natural_250", 2.0), ("mlp_natural_250", 4.0)}
  assert "cnn_permuted_3600_x0.5_seed4" in {run.name for run in other}
  assert priors.training_steps(config, "cnn", 3600, 0.5) == math.ceil(
      priors.training_steps(config, "cnn", 3600) / 2)
  assert priors.training_steps(config, "cnn", 100, 2.0) == 2 * config.priors.min_steps


@pytest.mark.parametrize("cells, message", [
    ({"cnn_natural_150": (2.0,)}, r"schedule_lengths keys must be .* got 'cnn_natural_150'"),
    ({"cnn_natural_100": (1.0,)}, r"schedule_lengths.cnn_natural_100 must be numbers .* other "
                                  r"than num_epochs \(1\)"),
])
def test_bad_schedule_lengths_are_rejected(cells, message):
  config = exp_sweep.get_config()
  config.priors.schedule_lengths = cells
  with pytest.raises(ValueError, match=message):
    priors.validate(config)


def test_report_gives_each_cell_at_its_plateau_length_and_names_those_still_rising(tmp_path):
  config = exp_sweep.get_config()
  config.priors.train_sizes = (100, 3600)
  # Final validation accuracy 0.8 at the rule everywhere. cnn 100: 0.799 on average at half
  # (at its plateau at 1); cnn 3600: 0.702 at half, 0.801 at 2x with test accuracy 0.99 (at its
  # plateau at 2); mlp 3600: 0.702 at half (still rising at 1, its longest).
  checks = [_training_result("cnn", "natural", 100, seed, 0.5, 0.5, final=0.8 - 0.001 * seed)
            for seed in range(3)]
  checks += [_training_result(arch, "natural", 3600, seed, 0.5, 0.5, final=0.7 + 0.002 * seed)
             for arch in ("cnn", "mlp") for seed in range(3)]
  checks += [_training_result("cnn", "natural", 3600, seed, 0.99 + 0.005 * (seed - 1), 2.0,
                              final=0.8 + 0.001 * seed)
             for seed in range(3)]
  results = fixture_results() + checks
  text = priors.report(results, config, str(tmp_path))
  assert "| cnn | natural | 100 | 1000 | 8 | 5 | 1 | 3 | 0.900 ± 0.010" in text
  assert "| cnn | natural | 3600 | 1000 | 16 | 5 | 2 | 3 | 0.990 ± 0.005" in text
  assert text.count("| +0.0010 (") == 2 and "| **+0.0980** (" in text
  assert ("Stopping-rule check: 2 of 3 checked cells reached it; **not at their plateau**: mlp "
          "natural 3600 at 1x the rule (+0.0980 from half, p ") in text
  reported = priors.reported_runs(results, config)
  assert len(reported) == len(fixture_results())
  assert {r["run"]["options"].get("length") for r in reported
          if r["run"]["options"].get("train_size") == 3600
          and r["run"]["options"]["architecture"] == "cnn"
          and r["run"]["options"]["pixels"] == "natural"} == {2.0}


def test_report_with_one_seed_per_cell_tests_nothing_and_says_so(tmp_path):
  one_seed = [r for r in fixture_results() if r["run"]["seed"] == 0]
  text = priors.report(one_seed, exp_sweep.get_config(), str(tmp_path))
  assert "None tested: no contrast has 2 or more seeds in both cells." in text
