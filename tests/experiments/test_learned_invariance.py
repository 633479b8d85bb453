import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from experiments import contrasts, learned_invariance
from experiments.configs import exp_sweep
from experiments.in_memory_training import load_digits
from experiments.runs import Run


@pytest.mark.parametrize("field, value, message", [
    ("pretrain_class_counts", (2, 9), "pretrain_class_counts"),
    ("pretrain_class_counts", (5, 5), "pretrain_class_counts"),
    ("headline_classes", 3, "headline_classes"),
    ("conv_features", (8,), "conv_features"),
    ("conditions", ("scratch", "finetuned"), "conditions"),
    ("class_sweep_seeds", (), "class_sweep_seeds"),
    ("class_sweep_conditions", ("random_features",), "class_sweep_conditions"),
    ("canvas", 20, "canvas"),
    ("learning_rate", 0.0, "learning_rate"),
    ("learning_rate", -0.1, "learning_rate"),
])
def test_bad_settings_are_rejected(field, value, message):
  config = exp_sweep.get_config()
  config.learned_invariance[field] = value
  with pytest.raises(ValueError, match=message):
    learned_invariance.validate(config)


def test_default_and_gpu_configs_are_valid():
  for arg in ("", "two_hours", "smoke", "gpu"):
    learned_invariance.validate(exp_sweep.get_config(arg))


def test_plan_runs_every_condition_at_the_headline_and_the_sweep_on_its_seeds():
  config = exp_sweep.get_config()
  settings = config.learned_invariance
  runs = [run for run in learned_invariance.plan(config) if "length" not in run.options]
  assert len({run.name for run in runs}) == len(runs)
  cells = {(r.options["condition"], r.options["pretrain_classes"], r.seed) for r in runs}
  assert {cell for cell in cells if cell[1] == settings.headline_classes} == {
      (c, settings.headline_classes, s) for c in settings.conditions for s in settings.seeds}
  other = [k for k in settings.pretrain_class_counts if k != settings.headline_classes]
  expected_other = {(c, k, s) for c in settings.class_sweep_conditions for k in other
                    for s in settings.class_sweep_seeds}
  assert {cell for cell in cells if cell[1] != settings.headline_classes} == expected_other
  assert [r.seed for r in runs] == sorted(r.seed for r in runs)  # seed by seed (resumable)


def test_plan_checks_every_run_at_half_length_and_listed_cells_longer():
  config = exp_sweep.get_config()
  config.learned_invariance.schedule_lengths = {"pretrained_classes2": (2.0,)}
  runs = learned_invariance.plan(config)
  assert len({run.name for run in runs}) == len(runs)
  rule = {run.name: run for run in runs if "length" not in run.options}
  other = [run for run in runs if "length" in run.options]
  for run in other:
    twin = rule[run.name.replace(f"_x{run.options['length']:g}_", "_")]
    assert {k: v for k, v in run.options.items() if k != "length"} == twin.options
  assert sum(run.options["length"] == 0.5 for run in other) == len(rule)
  assert {run.name for run in other if run.options["length"] == 2.0} == {
      f"pretrained_classes2_x2_seed{seed}" for seed in config.learned_invariance.class_sweep_seeds}
  assert learned_invariance.scaled_steps(600, 0.5) == 300
  assert learned_invariance.scaled_steps(5, 0.5) == 3
  assert learned_invariance.scaled_steps(1, 0.1) == 1


def test_bad_schedule_lengths_are_rejected():
  config = exp_sweep.get_config()
  config.learned_invariance.schedule_lengths = {"pretrained_classes4": (2.0,)}
  with pytest.raises(ValueError, match=r"schedule_lengths keys must be '<condition>_classes<k>' "
                                       r"cells of the plan, got 'pretrained_classes4'"):
    learned_invariance.validate(config)


def test_class_split_covers_every_digit_once():
  for k in (2, 5, 8):
    old, new = learned_invariance.class_split(k)
    assert len(old) == k and sorted(old + new) == list(range(10))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.1, 10.0))
def test_cosine_similarity_is_one_for_a_rescaled_vector_and_bounded(seed, scale):
  a, b = jax.random.normal(jax.random.PRNGKey(seed), (2, 4, 16))
  # float32 dot products of 16 terms: a few ulps of 1.
  np.testing.assert_allclose(learned_invariance.cosine_similarity(a, scale * a), 1.0, rtol=1e-5)
  similarity = learned_invariance.cosine_similarity(a, b)
  assert bool(jnp.all(jnp.abs(similarity) <= 1.0 + 1e-6))


def test_cosine_similarity_of_a_zero_vector_is_zero():
  a = jnp.array([[0.0, 0.0], [1.0, 0.0]])
  b = jnp.array([[1.0, 2.0], [0.0, 3.0]])
  np.testing.assert_array_equal(learned_invariance.cosine_similarity(a, b), [0.0, 0.0])


def test_randomly_placed_digits_stay_whole():
  digits = np.full((6, 28, 28, 1), 7, np.uint8)
  canvases = learned_invariance.randomly_placed(digits, 40, seed=0)
  assert canvases.shape == (6, 40, 40, 1) and canvases.dtype == np.uint8
  np.testing.assert_array_equal(canvases.sum(axis=(1, 2, 3)), 7 * 28 * 28)


def test_transfer_ratio_is_chance_corrected():
  metrics = {"accuracy": [[0.9, 0.5], [0.5, 0.5]], "chance": 0.1}
  assert learned_invariance.transfer_ratio(metrics) == pytest.approx(0.4 / 0.8)
  assert math.isnan(learned_invariance.transfer_ratio({"accuracy": [[0.1, 0.1]], "chance": 0.2}))


def test_new_class_predictions_ignore_the_pretraining_classes():
  logits = jnp.array([[9.0, 0, 1, 0, 0, 0, 0, 0, 0, 2], [0, 0, 0, 0, 0, 0, 0, 0, 3.0, 0]])
  np.testing.assert_array_equal(
      learned_invariance.new_class_predictions(logits, (2, 3, 4, 5, 6, 7, 8, 9)), [9, 8])


@pytest.mark.slow  # pretraining + fine-tuning on the 32x32 smoke canvas: ~20 s idle
def test_fixed_location_pretraining_runs_on_the_smoke_config():
  config = exp_sweep.get_config("smoke")
  run = Run(learned_invariance.NAME, "x", 0, {"condition": "fixed_pretrained",
                                              "pretrain_classes": 8})
  metrics = learned_invariance.execute(run, config, load_digits())
  offsets = learned_invariance.test_offsets(config)
  assert np.shape(metrics["accuracy"]) == np.shape(metrics["feature_similarity"]) == (
      len(offsets), len(offsets))
  assert metrics["chance"] == 0.5 and metrics["clean_accuracy"] == metrics["accuracy"][0][0]
  # The same digit at the same place: similarity 1, or 0 where its features are all zero (a
  # dead ReLU layer), so the mean is a whole count of digits over test_digits (float32 rounding).
  count = metrics["feature_similarity"][0][0] * metrics["test_digits"]
  assert count == pytest.approx(round(count), abs=1e-3) and count >= 1
  for prefix in ("", "pretrain_"):
    assert len(metrics[f"{prefix}validation_accuracy"]) == len(metrics[f"{prefix}record_steps"])
    assert f"{prefix}plateau_gain" in metrics
  assert 0.0 <= metrics["pretrain_clean_accuracy"] <= 1.0


class _Stop(Exception):
  pass


def test_both_phases_train_at_the_experiments_own_rate(monkeypatch):
  config = exp_sweep.get_config("smoke")
  config.learned_invariance.learning_rate = 0.0375
  assert config.learning_rate != 0.0375
  rates = []

  def recording(training, *args, **kwargs):
    rates.append(training.learning_rate)
    if len(rates) == 2:
      raise _Stop
    return original(training, *args, **kwargs)

  original = learned_invariance.train_classifier
  monkeypatch.setattr(learned_invariance, "train_classifier", recording)
  run = Run(learned_invariance.NAME, "x", 0, {"condition": "pretrained", "pretrain_classes": 5})
  with pytest.raises(_Stop):
    learned_invariance.execute(run, config, load_digits())
  assert rates == [0.0375, 0.0375]


def _fixture_results(transfer: dict, seeds=(0, 1, 2, 3, 4), counts=(2, 5, 8), length=None,
                     final=(0.9, 0.9)):
  """Results with untrained-location accuracy `transfer[condition] + seed noise`, at `length`
  (None: the configured steps) with final validation accuracies `final` (pretraining, new
  classes) plus 0.001 x seed."""
  results = []
  for k in counts:
    for condition, level in transfer.items():
      for seed in seeds:
        if condition == "random_features" and k != 5:
          continue
        chance = 1 / (10 - k)
        if condition == "pretrained":  # chance-corrected transfer `level` at k = 5, rising with k
          elsewhere = chance + (level + 0.1 * (k - 5) / 3 + 0.01 * seed) * (0.95 - chance)
        else:
          elsewhere = level + 0.01 * seed
        grid = [[0.95, elsewhere, elsewhere], [elsewhere, elsewhere, elsewhere],
                [elsewhere, elsewhere, elsewhere]]
        metrics = {"offsets": [0, 4, 8], "accuracy": grid, "feature_similarity": grid,
                   "different_digit_similarity": 0.3, "clean_accuracy": 0.95,
                   "chance": chance, "test_digits": 50, "final_train_loss": 0.5,
                   "plateau_gain": 0.0, "record_steps": [1, 2],
                   "validation_accuracy": [0.9, final[1] + 0.001 * seed],
                   "validation_loss": [0.4, 0.4]}
        if condition in learned_invariance.PRETRAINED_CONDITIONS:
          metrics.update(pretrain_clean_accuracy=0.97, pretrain_final_train_loss=0.6,
                         pretrain_plateau_gain=0.001,
                         pretrain_validation_accuracy=[0.8, final[0] + 0.001 * seed])
        options = {"condition": condition, "pretrain_classes": k}
        results.append({"run": {"experiment": learned_invariance.NAME, "seed": seed,
                                "name": f"{condition}_classes{k}_seed{seed}",
                                "options": options if length is None else {**options,
                                                                           "length": length}},
                        "metrics": metrics})
  return results


def test_report_computes_the_contrasts_and_draws_the_figures(tmp_path):
  config = exp_sweep.get_config()
  config.learned_invariance.class_sweep_seeds = (0, 1, 2, 3, 4)
  config.learned_invariance.class_sweep_conditions = learned_invariance.SWEEP_CONDITIONS
  results = _fixture_results({"scratch": 0.2, "pretrained": 0.7, "fixed_pretrained": 0.25,
                              "random_features": 0.2})
  text = learned_invariance.report(results, config, str(tmp_path))
  for figure in ("location_heatmap.png", "class_count_transfer.png", "feature_similarity.png"):
    assert os.path.getsize(tmp_path / figure) > 0 and f"({figure})" in text
  assert "Their central finding reproduces" in text
  tested = learned_invariance.computed_contrasts(results, config)
  assert [t["verdict"] for t in tested] == ["supported"] * len(tested) and len(tested) == 5
  assert "Budget cut" not in text


def test_report_checks_each_phase_and_gives_each_cell_at_its_plateau_length(tmp_path):
  config = exp_sweep.get_config()
  config.learned_invariance.pretrain_class_counts = (5,)
  transfer = {"scratch": 0.2, "pretrained": 0.7, "fixed_pretrained": 0.25}
  rule = _fixture_results(transfer, counts=(5,))
  # Half length: scratch and fixed_pretrained at their plateau (0.9 in each phase, seeds 0.002
  # apart from the rule's); pretrained's pretraining 0.1 lower (not at its plateau) and its
  # transfer from the half-length runs (0.1) different from the rule's.
  half = _fixture_results({"scratch": 0.2, "fixed_pretrained": 0.25}, counts=(5,), length=0.5,
                          final=(0.898, 0.898))
  half += _fixture_results({"pretrained": 0.1}, counts=(5,), length=0.5, final=(0.8, 0.9))
  text = learned_invariance.report(rule + half, config, str(tmp_path))
  assert "| scratch | 5 | 5 | 0 | 1 | – | – | – | – | 0.950 ± 0.000" in text
  assert "| **+0.1000** (" in text and text.count("| +0.0020 (") == 3
  assert ("Stopping-rule check: 2 of 3 checked cells reached it; **not at their plateau**: "
          "pretrained, 5 classes at 1x (pretraining +0.1000, p ") in text
  reported = learned_invariance.reported_runs(rule + half, config)
  assert sorted(r["run"]["name"] for r in reported) == sorted(r["run"]["name"] for r in rule)
  assert all("length" not in r["run"]["options"] for r in reported)
  # Scratch at its plateau at half length: reported there.
  only_scratch = [r for r in rule + half if r["run"]["options"]["condition"] == "scratch"]
  half_only = _fixture_results({"scratch": 0.2}, counts=(5,), length=0.25, final=(0.898, 0.898))
  lengths = {r["run"]["options"].get("length", 1.0)
             for r in learned_invariance.reported_runs(only_scratch + half_only, config)}
  assert lengths == {0.5}


def test_collapsed_pretraining_runs_are_counted_and_left_out(tmp_path):
  config = exp_sweep.get_config()
  config.learned_invariance.pretrain_class_counts = (5,)
  results = _fixture_results({"scratch": 0.2, "pretrained": 0.7, "fixed_pretrained": 0.25},
                             counts=(5,))
  # Seed 4's pretraining at random locations ended at chance among 5 classes (0.2).
  failed = next(r for r in results if r["run"]["name"] == "pretrained_classes5_seed4")
  failed["metrics"]["pretrain_validation_accuracy"] = [0.2, 0.2]
  failed["metrics"]["accuracy"] = [[0.2] * 3] * 3
  assert learned_invariance.collapsed(failed)
  assert not any(learned_invariance.collapsed(r) for r in results if r is not failed)
  reported = learned_invariance.reported_runs(results, config)
  assert failed not in reported and len(reported) == len(results) - 1
  text = learned_invariance.report(results, config, str(tmp_path))
  assert "| pretrained | 5 | 4 | 1 | 1 | 0.970 ± 0.000" in text
  # So does a new-class training that ended at chance (1 / 5 new classes).
  scratch = next(r for r in results if r["run"]["name"] == "scratch_classes5_seed0")
  assert not learned_invariance.collapsed(scratch)
  scratch["metrics"]["validation_accuracy"] = [0.2, 0.21]
  assert learned_invariance.collapsed(scratch)
  # And one that diverged on the way (down to chance, then partly back), but not a first record
  # at chance.
  scratch["metrics"]["validation_accuracy"] = [0.9, 0.2, 0.6]
  assert learned_invariance.collapsed(scratch)
  scratch["metrics"]["validation_accuracy"] = [0.2, 0.6, 0.9]
  assert not learned_invariance.collapsed(scratch)
  # The contrasts use the four that trained (untrained-location accuracy as without it).
  named = [c for c in contrasts.contrasts_for(config) if c.a.experiment == learned_invariance.NAME]
  values = contrasts.cell_values({learned_invariance.NAME: reported}, named[0].b)
  assert len(values) == 4 and min(values) > 0.5


def test_no_difference_is_reported_as_not_reproduced(tmp_path):
  config = exp_sweep.get_config()
  # Chance-corrected transfer 0.4 / 3 at chance 0.2 is accuracy 0.3, as the others.
  results = _fixture_results({"scratch": 0.3, "pretrained": 0.4 / 3, "fixed_pretrained": 0.3},
                             counts=(5,))
  config.learned_invariance.pretrain_class_counts = (5,)
  text = learned_invariance.report(results, config, str(tmp_path))
  assert "does not reproduce" in text and "'not supported'" in text


def test_sweep_contrasts_select_the_headline_class_count():
  config = exp_sweep.get_config()
  results = {learned_invariance.NAME: _fixture_results(
      {"scratch": 0.2, "pretrained": 0.7, "fixed_pretrained": 0.25})}
  named = [c for c in contrasts.contrasts_for(config) if c.a.experiment == learned_invariance.NAME]
  assert {c.a.options["condition"] for c in named} == {"scratch", "fixed_pretrained"}
  for contrast in named:
    assert contrast.b.options == {"condition": "pretrained", "pretrain_classes": 5}
    assert len(contrasts.cell_values(results, contrast.a)) == 5
    assert contrasts.evaluate_contrast(results, contrast)["verdict"] == "supported"
