import os

import numpy as np
import pytest

from experiments import pooling_vs_stride, seed_statistics
from experiments.configs import exp_sweep

# The layers each variant records (name, cumulative stride), in forward order.
LAYERS = {
    "cnn": (("conv1", 1), ("pool1", 2), ("conv2", 2), ("pool2", 4), ("fc1", None),
            ("logits", None)),
    "cnn_stride": (("conv1", 2), ("conv2", 4), ("fc1", None), ("logits", None)),
    "cnn_allconv": (("conv1", 1), ("down1", 2), ("conv2", 2), ("down2", 4), ("fc1", None),
                    ("logits", None)),
}


def _results(accuracy: dict[str, list[float]], off_grid: float = 0.5) -> list[dict]:
  results = []
  for model, values in accuracy.items():
    for seed, value in enumerate(values):
      layers = [{"name": name, "stride": stride, "on_grid": 0.1 * (index + 1),
                 "off_grid": off_grid + 0.01 * index if stride else float("nan")}
                for index, (name, stride) in enumerate(LAYERS[model])]
      metrics = {"clean_accuracy": value, "final_train_loss": 0.6, "plateau_gain": 0.0,
                 "consistency_crop": 0.7 - (0.2 if model == "cnn_stride" else 0.0),
                 "p_top1_change": 0.25, "layers": layers}
      results.append({"run": {"experiment": "augmentation", "name": f"{model}_none_seed{seed}",
                              "seed": seed, "options": {"model": model, "augmentation": "none",
                                                        "dataset": "mnist_offline"}},
                      "metrics": metrics})
  return results


def test_the_downsampling_layer_is_the_first_at_each_cumulative_stride():
  as_entries = lambda model: [{"name": n, "stride": s} for n, s in LAYERS[model]]
  names = {model: [pooling_vs_stride.downsampling_layer(as_entries(model), stride)["name"]
                   for stride in (2, 4)] for model in LAYERS}
  assert names == {"cnn": ["pool1", "pool2"], "cnn_stride": ["conv1", "conv2"],
                   "cnn_allconv": ["down1", "down2"]}
  assert pooling_vs_stride.downsampling_layer(as_entries("cnn"), 8) is None


@pytest.mark.parametrize("difference, p_value, paper, expected", [
    (+0.01, 0.001, +0.0045, "agrees"), (-0.01, 0.001, +0.0045, "opposite"),
    (+0.01, 0.2, +0.0045, "same sign, not significant"),
    (+0.01, 0.2, -0.0066, "opposite sign, not significant")])
def test_paper_agreement_needs_the_papers_sign_and_significance(difference, p_value, paper,
                                                                expected):
  comparison = seed_statistics.Comparison(difference, p_value, "welch")
  assert pooling_vs_stride.paper_agreement(comparison, paper) == expected


def test_the_section_tests_each_variant_against_max_pooling_and_draws_its_figure(tmp_path):
  accuracy = {"cnn": [0.975, 0.977, 0.974, 0.976, 0.978],
              "cnn_stride": [0.962, 0.965, 0.960, 0.966, 0.963],  # clearly lower
              "cnn_allconv": [0.976, 0.974, 0.977, 0.975, 0.976]}  # the same
  text = pooling_vs_stride.report(_results(accuracy), exp_sweep.get_config(), str(tmp_path))
  rows = {}  # the variant table's row of each variant (the first table)
  for line in text.splitlines():
    if line.startswith("| cnn"):
      rows.setdefault(line.split(" | ")[0].strip("| "), line)
  assert "| 215,370 |" in rows["cnn"] and "| 226,938 |" in rows["cnn_allconv"]
  assert "conv1, conv2" in rows["cnn_stride"] and "down1, down2" in rows["cnn_allconv"]
  lines = text.splitlines()
  result_of = lambda variant, metric: next(
      line for line in lines if line.startswith(f"| {variant} | {metric} |")).split(" | ")[-1]
  assert result_of("cnn_stride", "clean accuracy").startswith("differs")
  assert result_of("cnn_allconv", "clean accuracy").startswith("no significant difference")
  stride_error = np.mean([1 - a for a in accuracy["cnn_stride"]]) - np.mean(
      [1 - a for a in accuracy["cnn"]])
  paper_row = next(line for line in lines if line.startswith("| cnn_stride − cnn"))
  assert f"{100 * stride_error:+.2f} pt" in paper_row and paper_row.endswith("| agrees |")
  assert "+0.45 pt" in paper_row  # Strided-CNN-C 10.19% - Model C 9.74%
  assert os.path.exists(tmp_path / pooling_vs_stride.FIGURE)


def test_without_the_baseline_the_section_says_so(tmp_path):
  text = pooling_vs_stride.report(_results({"cnn_stride": [0.96, 0.97]}),
                                  exp_sweep.get_config(), str(tmp_path))
  assert text.startswith("No finished runs")
