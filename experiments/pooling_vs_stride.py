"""Report section: pooling vs stride (the seed notes' "pooling can be fully replaced by a stride
greater than one"; Springenberg et al. 2015).

No runs of its own: the variants are models of experiment 1's grid on the digits, trained without
augmentation (`experiments.augmentation`), so this section reads that experiment's results. The
variants differ only in how each of the small CNN's two stages halves the resolution:

  cnn          2x2 max pooling after the conv (the baseline)
  cnn_avg      2x2 average pooling
  cnn_blur     max pooling densely, then a blur and subsampling (Zhang 2019)
  cnn_stride   no pooling: the conv itself at stride 2 (Springenberg et al.'s Strided-CNN)
  cnn_allconv  no pooling: a 3x3 conv of the same width at stride 2 in its place (their All-CNN)

Per variant: clean accuracy, final training loss, plateau gain, shift consistency, P(top-1
change), and the equivariance error of the layer where each stage's downsampling ends ("the first
layer at cumulative stride 2 / 4": pool1 for a pooled CNN, conv1 for the Strided-CNN, down1 for
the All-CNN). Each variant is tested against max pooling (Welch), and the direction of the
accuracy change is compared with Springenberg et al.'s Table 3.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure

from experiments import augmentation, model_zoo, priors, published, report_figures, seed_statistics
from experiments.report_tables import by_option, cell, markdown_table

BASELINE = "cnn"
VARIANTS = {  # model name -> how it downsamples
    "cnn": "2x2 max pooling",
    "cnn_avg": "2x2 average pooling",
    "cnn_blur": "max pooling + blur (Zhang 2019)",
    "cnn_stride": "conv at stride 2, no pooling (Strided-CNN)",
    "cnn_allconv": "3x3 stride-2 conv in place of the pool (All-CNN)",
}
# Our variant -> (Springenberg et al.'s model of the same construction, its baseline), published
# test errors on CIFAR-10 (Table 3, model C, no augmentation).
PAPER_COUNTERPARTS = {
    "cnn_stride": ("springenberg_strided_cnn_c_error", "springenberg_model_c_error"),
    "cnn_allconv": ("springenberg_all_cnn_c_error", "springenberg_model_c_error"),
}
COMPARED_METRICS = (("clean_accuracy", "clean accuracy"),
                    ("consistency_crop", "consistency (crop shifts)"),
                    ("p_top1_change", "P(top-1 change)"))
DOWNSAMPLING_STRIDES = (2, 4)
FIGURE = "pooling_vs_stride.png"
DATASET = "mnist_offline"


def variants_in(config) -> tuple[str, ...]:
  """The pooling variants that experiment 1's config trains (the baseline first)."""
  return tuple(name for name in VARIANTS if name in config.augmentation.models)


def downsampling_layer(layers: list[dict], stride: int) -> dict | None:
  """The first layer entry at cumulative stride `stride` (where that downsampling ends)."""
  return next((entry for entry in layers if entry["stride"] == stride), None)


def _groups(results: list[dict], variants) -> dict[str, list[dict]]:
  groups = by_option([r for r in results if r["run"]["options"].get("dataset") == DATASET
                      and r["run"]["options"]["augmentation"] == "none"], "model")
  return {name: sorted(groups[(name,)], key=lambda r: r["run"]["seed"])
          for name in variants if (name,) in groups}


def _values(group: list[dict], metric: str) -> list[float]:
  return [float(r["metrics"][metric]) for r in group]


def _layer_values(group: list[dict], stride: int | None, kind: str) -> list[float]:
  """Per seed: the error of kind 'on_grid'/'off_grid' at the layer ending the downsampling to
  `stride`, or (stride None) the logits' invariance error."""
  values = []
  for result in group:
    layers = result["metrics"]["layers"]
    entry = (next(e for e in layers if e["name"] == "logits") if stride is None
             else downsampling_layer(layers, stride))
    values.append(float("nan") if entry is None else float(entry[kind]))
  return values


def _layer_names(group: list[dict]) -> str:
  layers = group[0]["metrics"]["layers"]
  return ", ".join(entry["name"] for entry in (downsampling_layer(layers, s)
                                               for s in DOWNSAMPLING_STRIDES) if entry)


def paper_agreement(ours: seed_statistics.Comparison, paper_difference: float,
                    alpha: float = 0.05) -> str:
  """Whether our difference has the paper's sign: 'agrees' / 'opposite' when significant at
  `alpha`, else 'same sign, not significant' / 'opposite sign, not significant'."""
  same = np.sign(ours.difference) == np.sign(paper_difference)
  if ours.p_value < alpha:
    return "agrees" if same else "opposite"
  return ("same sign" if same else "opposite sign") + ", not significant"


def _figure(groups: dict[str, list[dict]], path: str) -> None:
  """Accuracy, consistency, and the off-grid error after each downsampling, per variant."""
  names = list(groups)
  figure = Figure(figsize=(13, 4.2))
  axes = figure.subplots(1, 3)
  x = np.arange(len(names))
  for axis, (metric, label) in zip(axes[:2], COMPARED_METRICS[:2]):
    per_variant = [_values(groups[name], metric) for name in names]
    means = [np.mean(v) for v in per_variant]
    stds = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in per_variant]
    axis.errorbar(x, means, yerr=stds, fmt="o", capsize=4, color="C0", markersize=6)
    for index, values in enumerate(per_variant):  # the seeds beside their mean
      axis.plot(np.full(len(values), x[index] + 0.15), values, ".", color="gray", markersize=4)
    low = min(min(v) for v in per_variant)
    axis.set_ylim(max(0.0, low - 0.05), min(1.0, max(max(v) for v in per_variant) + 0.02))
    axis.set_xticks(x, names, rotation=20, fontsize=8)
    axis.set_ylabel(f"{label} (fraction)")
    axis.set_title(f"{label}: mean ± sample std (grey: seeds)", fontsize=9)
    axis.grid(axis="y", alpha=0.3)
  stage_axis = axes[2]
  stages = [f"after downsampling {i + 1}\n(stride {s})" for i, s in
            enumerate(DOWNSAMPLING_STRIDES)] + ["logits\n(invariance)"]
  drawn = []
  for index, name in enumerate(names):
    per_stage = [_layer_values(groups[name], s, "off_grid") for s in DOWNSAMPLING_STRIDES]
    per_stage.append(_layer_values(groups[name], None, "on_grid"))
    offset = 0.08 * (index - (len(names) - 1) / 2)
    drawn += report_figures.errorbar_over_seeds(
        stage_axis, np.arange(len(stages)) + offset, per_stage, clip_at_zero=True, fmt="-o",
        color=f"C{index}", markersize=4, label=f"{name} ({_layer_names(groups[name])})")
  stage_axis.set_xticks(np.arange(len(stages)), stages, fontsize=8)
  stage_axis.set_ylabel("‖f(Tx) − T'f(x)‖ / ‖f(x)‖")
  stage_axis.set_title("Equivariance error off the layer's grid\n(circular shifts; logits: "
                       "invariance error)", fontsize=9)
  stage_axis.grid(alpha=0.3)
  if drawn:
    stage_axis.legend(fontsize=7, title="variant (its downsampling layers)", title_fontsize=7)
  figure.suptitle("Pooling vs stride on the digits, trained without augmentation", fontsize=10)
  figure.tight_layout()
  figure.savefig(path, dpi=100)


def report(results: list[dict], config, out_dir: str) -> str:
  """The section's Markdown (and `FIGURE` in `out_dir`) from experiment 1's results."""
  gains = augmentation.doubling_gains(results, config)
  groups = _groups(augmentation.reported_runs(results, config), variants_in(config))
  if BASELINE not in groups or len(groups) < 2:
    return "No finished runs of the pooling variants (experiment 1, no augmentation)."
  rows = []
  for name, group in groups.items():
    rows.append([
        name, VARIANTS[name], f"{priors.parameter_count(*model_zoo.MODELS[name]):,}",
        len(group), cell(_values(group, "clean_accuracy")),
        cell(_values(group, "final_train_loss")), cell(_values(group, "plateau_gain")),
        augmentation.gain_cell(gains, (DATASET, name, "none")),
        cell(_values(group, "consistency_crop")), cell(_values(group, "p_top1_change")),
        _layer_names(group),
        *(cell(_layer_values(group, s, "off_grid")) for s in DOWNSAMPLING_STRIDES),
        cell(_layer_values(group, None, "on_grid"))])
  header = ("variant", "downsampling", "parameters", "seeds", "clean accuracy",
            "final training loss", "plateau gain",
            "gain from E / 2 (p)",
            "consistency (crop shifts)",
            "P(top-1 change)", "downsampling layers", "off-grid error, stride 2",
            "off-grid error, stride 4", "logits invariance error")
  tests = []
  for name, group in groups.items():
    if name == BASELINE:
      continue
    for metric, label in COMPARED_METRICS:
      comparison = seed_statistics.welch_test(_values(groups[BASELINE], metric),
                                              _values(group, metric))
      significant = comparison.p_value < 0.05
      tests.append([name, label, f"{comparison.difference:+.4f}",
                    seed_statistics.format_p(comparison.p_value),
                    ("differs" if significant else "no significant difference")])
  paper_rows = []
  for name, (variant_key, baseline_key) in PAPER_COUNTERPARTS.items():
    if name not in groups:
      continue
    variant, baseline = published.PUBLISHED[variant_key], published.PUBLISHED[baseline_key]
    paper_difference = variant.value - baseline.value
    ours = seed_statistics.welch_test([1 - v for v in _values(groups[BASELINE], "clean_accuracy")],
                                      [1 - v for v in _values(groups[name], "clean_accuracy")])
    paper_rows.append([
        f"{name} − {BASELINE}", f"{variant.quantity} − {baseline.quantity}",
        f"{100 * paper_difference:+.2f} pt", f"{100 * ours.difference:+.2f} pt",
        seed_statistics.format_p(ours.p_value), paper_agreement(ours, paper_difference)])
  _figure(groups, os.path.join(out_dir, FIGURE))
  counterparts = sorted({key for pair in PAPER_COUNTERPARTS.values() for key in pair})
  return "\n".join([
      f"The small CNN of experiment 1 with each of its two downsampling stages built "
      f"{len(groups)} ways, "
      f"trained on the digits without augmentation ({len(groups[BASELINE])} seeds per variant, "
      f"the recipe and stopping rule of experiment 1: its plateau gain and half-length gain "
      f"columns). The equivariance "
      f"errors are those of experiment 1's per-layer table, read at the layer where each "
      f"downsampling ends; 'off grid' means shifts that are not multiples of that layer's "
      f"cumulative stride.", "",
      markdown_table(header, rows), "",
      f"![pooling vs stride]({FIGURE})", "",
      f"Each variant against {BASELINE} (b − a = variant − {BASELINE}; Welch's t test, "
      "two-sided, alpha = 0.05):", "",
      markdown_table(("variant", "metric", "b − a", "p", "result"), tests), "",
      "Against Springenberg et al. 2015 (CIFAR-10, their model C, no augmentation: a different "
      "dataset, deeper networks and their own training schedule, so only the sign of the "
      "test-error change is compared; 'agrees' needs our difference to be significant):", "",
      markdown_table(("difference in test error", "published", "paper", "ours", "p",
                      "agreement"), paper_rows), "",
      published.published_table(tuple(counterparts)),
  ])
