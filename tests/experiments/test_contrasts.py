import numpy as np
import pytest

from experiments import contrasts
from experiments import depth as depth_experiment
from experiments.configs import exp_sweep
from experiments.contrasts import Cell, Contrast


def _result(experiment, seed, options, metrics):
  return {"run": {"experiment": experiment, "name": f"x_seed{seed}", "seed": seed,
                  "options": options}, "metrics": metrics}


CONFIG = exp_sweep.get_config()
SHALLOW, DEEP = min(CONFIG.depth.depths), max(CONFIG.depth.depths)


def _depth_results(plain8, plain20):
  """Depth runs of the shallowest and deepest plain nets (at their chosen rates) whose training
  losses end at the given per-seed values."""
  rates = dict(zip(CONFIG.depth.depths, CONFIG.depth.chosen_plain_rates))
  results = []
  for depth, losses in ((SHALLOW, plain8), (DEEP, plain20)):
    options = depth_experiment.run_options("plain", depth, rates[depth], CONFIG)
    for seed, loss in enumerate(losses):
      results.append(_result("depth", seed, options, {"train_loss": [2.0, loss, loss, loss]}))
  return {"depth": results}


CONTRASTS = contrasts.contrasts_for(CONFIG)
DEGRADATION = next(c for c in CONTRASTS if c.claim.startswith("Degradation"))


@pytest.mark.parametrize("plain8, plain20, expected", [
    ([0.10, 0.11, 0.12, 0.10, 0.11], [0.30, 0.31, 0.29, 0.30, 0.32], "supported"),
    ([0.30, 0.31, 0.29, 0.30, 0.32], [0.10, 0.11, 0.12, 0.10, 0.11], "opposite"),
    ([0.10, 0.30, 0.20, 0.15, 0.25], [0.12, 0.28, 0.22, 0.14, 0.26], "not supported"),
])
def test_verdict_is_computed_from_the_runs(plain8, plain20, expected):
  tested = contrasts.evaluate_contrast(_depth_results(plain8, plain20), DEGRADATION)
  assert tested["verdict"] == expected
  assert tested["a"].n == tested["b"].n == 5
  assert tested["comparison"].difference == pytest.approx(np.mean(plain20) - np.mean(plain8))


def test_the_depth_cells_take_the_reported_runs_not_the_half_length_ones():
  results = _depth_results([0.10, 0.11, 0.12], [0.30, 0.31, 0.29])
  rates = dict(zip(CONFIG.depth.depths, CONFIG.depth.chosen_plain_rates))
  half = CONFIG.depth.num_epochs / 2
  results["depth"] += [_result("depth", seed, depth_experiment.run_options(
      "plain", DEEP, rates[DEEP], CONFIG, half), {"train_loss": [2.0, 5.0, 5.0, 5.0]})
                       for seed in range(3)]
  reported = {"depth": depth_experiment.reported_runs(results["depth"], CONFIG)}
  assert contrasts.cell_values(reported, DEGRADATION.b) == pytest.approx([0.30, 0.31, 0.29])


def test_cells_select_by_options_and_order_by_seed():
  results = {"e": [_result("e", 2, {"m": "a"}, {"v": 2.0}),
                   _result("e", 0, {"m": "a"}, {"v": 0.0}),
                   _result("e", 1, {"m": "b"}, {"v": 9.0})]}
  assert contrasts.cell_values(results, Cell("e", {"m": "a"}, "v", "a")) == [0.0, 2.0]
  assert contrasts.cell_values(results, Cell("e", {"m": "c"}, "v", "c")) == []


def test_section_tests_every_contrast_and_marks_missing_cells():
  section = contrasts.contrast_section(_depth_results([0.1, 0.11, 0.12], [0.3, 0.31, 0.29]),
                                       CONTRASTS)
  table = [line for line in section.splitlines() if line.startswith("| ")][1:]
  assert len(table) == len(CONTRASTS)
  degradation = next(line for line in table if line.startswith("| Degradation"))
  assert "Welch t" in degradation and degradation.rstrip(" |").endswith("supported")
  assert sum("not run" in line for line in table) == len(CONTRASTS) - 1  # no residual runs


def test_untrained_location_accuracy_leaves_out_the_trained_location():
  assert contrasts.untrained_location_accuracy({"accuracy": [[1.0, 0.5], [0.3, 0.2]]}) == \
      pytest.approx((0.5 + 0.3 + 0.2) / 3)


def test_paired_contrast_uses_the_paired_test():
  results = {"e": [_result("e", s, {"m": m}, {"v": s + (0.01 * (1 + 0.1 * s) if m == "b" else 0)})
                   for s in range(5) for m in ("a", "b")]}
  contrast = Contrast("b above a", "test", Cell("e", {"m": "a"}, "v", "a"),
                      Cell("e", {"m": "b"}, "v", "b"), +1, test="paired")
  tested = contrasts.evaluate_contrast(results, contrast)
  assert tested["comparison"].method == "paired t" and tested["verdict"] == "supported"


def test_one_depth_or_no_depth_experiment_has_no_depth_contrasts():
  without_depth = exp_sweep.get_config()
  without_depth.experiments = tuple(n for n in without_depth.experiments if n != "depth")
  for config in (exp_sweep.get_config("smoke"), without_depth):
    assert not any(c.a.experiment == "depth" for c in contrasts.contrasts_for(config))
  assert any(c.a.experiment == "depth" for c in contrasts.contrasts_for(exp_sweep.get_config()))


def test_the_augmentation_cells_read_each_cell_at_its_reported_length():
  from experiments import augmentation
  options = {"dataset": "mnist_offline", "model": "cnn", "augmentation": "translate"}
  # Final validation accuracy 0.80 at 7.5 epochs, 0.90 at 15 (still rising), 0.901 at 30.
  results = [_result("augmentation", seed, options | extra,
                     {"clean_accuracy": accuracy, "validation_accuracy": [0.1, final]})
             for seed in range(3)
             for extra, accuracy, final in (({"epochs": 7.5}, 0.5, 0.80), ({}, 0.6, 0.90),
                                            ({"epochs": 30.0}, 0.7, 0.901))]
  reported = {"augmentation": augmentation.reported_runs(results, CONFIG)}
  assert contrasts.cell_values(reported, contrasts._augmentation(
      "cnn", "translate", "clean_accuracy", "CNN")) == [0.7] * 3


def test_the_digits_resnet_contrast_comes_with_the_digits_resnets():
  claim = "Circular padding raises consistency under circular shifts"
  assert claim in [c.claim for c in contrasts.contrasts_for(exp_sweep.get_config("gpu"))]
  assert claim not in [c.claim for c in contrasts.contrasts_for(exp_sweep.get_config())]


def test_pooling_contrasts_come_with_the_pooling_variants_of_the_grid():
  config = exp_sweep.get_config()
  claims = [contrast.source for contrast in contrasts.contrasts_for(config)]
  assert "Springenberg et al. 2015" in claims
  with config.unlocked():
    config.augmentation.models = ("mlp", "cnn")
  assert "Springenberg et al. 2015" not in [
      contrast.source for contrast in contrasts.contrasts_for(config)]


def test_the_pooling_variants_have_the_cnns_parameters():
  from experiments import model_zoo, priors
  counts = {name: priors.parameter_count(*model_zoo.MODELS[name])
            for name in ("cnn", "cnn_avg", "cnn_stride", "cnn_blur")}
  assert len(set(counts.values())) == 1, counts

