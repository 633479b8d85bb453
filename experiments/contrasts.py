"""The claims the report tests against the papers, and the section that tests them.

A `Contrast` names two cells of the sweep (an experiment, the run options that select the cell,
and a per-run metric), the direction the paper predicts for b - a, and the test to use. The
report's "agreement with the papers" section is
`contrast_section(results, contrasts_for(config))`: per contrast the two cells (mean ± std
[95% interval]), the difference, the test's p value and the verdict computed by
`experiments.seed_statistics.verdict`. Nothing in it is typed by hand; a contrast whose cells
did not run says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from experiments import seed_statistics
from experiments.report_tables import markdown_table

TESTS = {"welch": seed_statistics.welch_test, "paired": seed_statistics.paired_test,
         "permutation": seed_statistics.bootstrap_test}


class Cell(NamedTuple):
  """The runs of `experiment` whose options include `options`; one value per run from `metric`
  (a key of the run's metrics, or a function of them)."""
  experiment: str
  options: dict
  metric: str | Callable[[dict], float]
  label: str


class Contrast(NamedTuple):
  """A paper's claim that `b` differs from `a` in the direction `expected_sign` (of b - a)."""
  claim: str
  source: str
  a: Cell
  b: Cell
  expected_sign: int
  test: str = "welch"


def untrained_location_accuracy(metrics: dict) -> float:
  """Mean accuracy over every canvas location but the trained one (offset (0, 0))."""
  return float(np.mean(np.delete(np.asarray(metrics["accuracy"], np.float64).ravel(), 0)))


def final_train_loss(metrics: dict) -> float:
  """Mean of the last three recorded training losses (one record is noisy)."""
  return float(np.mean(metrics["train_loss"][-3:]))


def _augmentation(model: str, augmentation: str, metric: str, label: str) -> Cell:
  """A digits cell of experiment 1; the report passes each cell's runs at its reported length
  (`augmentation.reported_runs`), so the cell names no length."""
  return Cell("augmentation", {"dataset": "mnist_offline", "model": model,
                               "augmentation": augmentation}, metric, label)


def _learned_invariance(condition: str, classes: int, label: str) -> Cell:
  return Cell("learned_invariance", {"condition": condition, "pretrain_classes": classes},
              untrained_location_accuracy, f"{label} ({classes} classes)")


def circular_minus_crop_consistency(metrics: dict) -> float:
  """Shift consistency under circular shifts minus under crop shifts (zeros entering)."""
  return metrics["consistency_circular"] - metrics["consistency_crop"]


def _canvas(model: str, augmentation: str, metric, label: str) -> Cell:
  """A canvas cell of experiment 1, at its reported length as `_augmentation`'s."""
  return Cell("augmentation", {"dataset": "mnist_canvas", "model": model,
                               "augmentation": augmentation}, metric, f"{label} (canvas)")


def canvas_contrasts() -> tuple[Contrast, ...]:
  """Boundary handling on the 40 x 40 canvas ('mnist_canvas'), where the digits' ink reaches
  the border: circular padding makes the ResNet equivariant to circular shifts (on its stride
  grid) and so more consistent under them, under them than under crop shifts, and by more than
  the zero-padded ResNet (whose crop and circular consistency the padding does not separate)."""
  return (
      Contrast("On the canvas, circular padding raises consistency under circular shifts",
               "Chaman & Dokmanić 2021",
               _canvas("resnet20", "none", "consistency_circular", "ResNet-20"),
               _canvas("resnet20_circular", "none", "consistency_circular",
                       "ResNet-20 circular"), +1),
      Contrast("On the canvas, the circular ResNet is more consistent under circular than "
               "under crop shifts", "Chaman & Dokmanić 2021 (construction)",
               _canvas("resnet20_circular", "none", "consistency_crop",
                       "ResNet-20 circular, crop shifts"),
               _canvas("resnet20_circular", "none", "consistency_circular",
                       "ResNet-20 circular, circular shifts"), +1, test="paired"),
      Contrast("On the canvas, circular padding widens the circular - crop consistency gap",
               "Chaman & Dokmanić 2021 (construction)",
               _canvas("resnet20", "none", circular_minus_crop_consistency,
                       "ResNet-20, circular - crop"),
               _canvas("resnet20_circular", "none", circular_minus_crop_consistency,
                       "ResNet-20 circular, circular - crop"), +1),
      Contrast("On the canvas, translation augmentation raises shift consistency",
               "seed notes; Biscione & Bowers 2021",
               _canvas("cnn", "none", "consistency_crop", "CNN"),
               _canvas("cnn", "translate", "consistency_crop", "CNN + translate"), +1),
  )


def pooling_contrasts() -> tuple[Contrast, ...]:
  """Pooling vs stride on the digits (issue 18): the small CNN with 2x2 max pooling, average
  pooling or stride-2 convolutions in their place, the same parameters, no augmentation."""
  return (
      Contrast("A stride-2 conv in place of max pooling, same parameters, costs accuracy (the "
               "seed notes: pooling can be fully replaced by a stride; 'not supported' would "
               "agree)",
               "Springenberg et al. 2015", _augmentation("cnn", "none", "clean_accuracy", "CNN"),
               _augmentation("cnn_stride", "none", "clean_accuracy", "CNN, stride 2"), -1),
      Contrast("Without pooling's local max, shift consistency drops", "seed notes (pooling)",
               _augmentation("cnn", "none", "consistency_crop", "CNN"),
               _augmentation("cnn_stride", "none", "consistency_crop", "CNN, stride 2"), -1),
      Contrast("Average pooling (a box blur before subsampling) is more shift-consistent than "
               "max pooling", "Zhang 2019",
               _augmentation("cnn", "none", "consistency_crop", "CNN"),
               _augmentation("cnn_avg", "none", "consistency_crop", "CNN, average pooling"), +1),
  )


def contrasts_for(config) -> tuple[Contrast, ...]:
  """The report's contrasts for a sweep config: learned invariance at its headline number of
  pretraining classes, the priors at its largest training set, the canvas's where experiment 1
  runs on it, the depth contrasts between its shallowest and deepest nets."""
  classes = config.learned_invariance.headline_classes
  size = max(config.priors.train_sizes)
  shallow, deep = min(config.depth.depths), max(config.depth.depths)
  contrasts = (
      Contrast("Blur before subsampling raises shift consistency",
               "Zhang 2019", _augmentation("cnn", "none", "consistency_crop", "CNN"),
               _augmentation("cnn_blur", "none", "consistency_crop", "CNN + blur"), +1),
      Contrast("Blur before subsampling lowers P(top-1 change) under 1-px shifts",
               "Zhang 2019; Azulay & Weiss 2019",
               _augmentation("cnn", "none", "p_top1_change", "CNN"),
               _augmentation("cnn_blur", "none", "p_top1_change", "CNN + blur"), -1),
      Contrast("Translation augmentation raises shift consistency",
               "seed notes; Biscione & Bowers 2021",
               _augmentation("cnn", "none", "consistency_crop", "CNN"),
               _augmentation("cnn", "translate", "consistency_crop", "CNN + translate"), +1),
      Contrast("Pretraining across the canvas gives invariance at untrained locations",
               "Biscione & Bowers 2021",
               _learned_invariance("scratch", classes, "from scratch"),
               _learned_invariance("pretrained", classes, "pretrained at random locations"), +1),
      Contrast("Pretraining at random locations, not at one, gives that invariance",
               "Biscione & Bowers 2021",
               _learned_invariance("fixed_pretrained", classes, "pretrained at one location"),
               _learned_invariance("pretrained", classes, "pretrained at random locations"), +1),
      Contrast("A CNN beats an MLP of matched size on natural digits (locality prior)",
               "seed notes (priors)",
               Cell("priors", {"kind": "training", "architecture": "mlp", "pixels": "natural",
                               "train_size": size}, "test_accuracy", f"MLP, {size} digits"),
               Cell("priors", {"kind": "training", "architecture": "cnn", "pixels": "natural",
                               "train_size": size}, "test_accuracy", f"CNN, {size} digits"), +1),
      Contrast("Permuting pixels hurts the CNN (its prior is spatial)", "seed notes (priors)",
               Cell("priors", {"kind": "training", "architecture": "cnn", "pixels": "natural",
                               "train_size": size}, "test_accuracy", "CNN natural"),
               Cell("priors", {"kind": "training", "architecture": "cnn", "pixels": "permuted",
                               "train_size": size}, "test_accuracy", "CNN permuted"), -1),
  )
  if {"resnet20", "resnet20_circular"} <= set(config.augmentation.models):
    contrasts += (Contrast("Circular padding raises consistency under circular shifts",
                           "Chaman & Dokmanić 2021",
                           _augmentation("resnet20", "none", "consistency_circular", "ResNet-20"),
                           _augmentation("resnet20_circular", "none", "consistency_circular",
                                         "ResNet-20 circular"), +1),)
  if {"cnn_stride", "cnn_avg"} <= set(config.augmentation.models):
    contrasts += pooling_contrasts()
  if "mnist_canvas" in config.augmentation.datasets:
    contrasts += canvas_contrasts()
  if shallow == deep or "depth" not in config.experiments:
    return contrasts
  # The plain nets at their chosen rates, each cell at its reported length
  # (`depth.reported_runs`); a run at the sweep's rate has no 'learning_rate' option (None
  # matches its absence), a run at another rate names it.
  rates = dict(zip(config.depth.depths, config.depth.chosen_plain_rates))
  plain = lambda depth: Cell(
      "depth", {"kind": "plain", "depth": depth,
                "learning_rate": None if rates[depth] == config.learning_rate else rates[depth]},
      final_train_loss, f"plain-{depth} (rate {rates[depth]:g})")
  plain_shallow, plain_deep = plain(shallow), plain(deep)
  residual_deep = Cell("depth", {"kind": "residual", "depth": deep, "learning_rate": None},
                       final_train_loss, f"residual-{deep}")
  return contrasts + (
      Contrast("Degradation: the deeper plain net has the higher training loss",
               "He et al. 2016", plain_shallow, plain_deep, +1),
      Contrast("Residual connections lower the deep net's training loss", "He et al. 2016",
               plain_deep, residual_deep, -1),
  )


def cell_values(results: dict[str, list[dict]], cell: Cell) -> list[float]:
  """The cell's per-run values, ordered by seed (so paired tests pair the same seed)."""
  runs = [r for r in results.get(cell.experiment, [])
          if all(r["run"]["options"].get(k) == v for k, v in cell.options.items())]
  runs.sort(key=lambda r: r["run"]["seed"])
  metric = cell.metric
  return [float(metric(r["metrics"]) if callable(metric) else r["metrics"][metric]) for r in runs]


def evaluate_contrast(results: dict[str, list[dict]], contrast: Contrast,
                      alpha: float = 0.05) -> dict | None:
  """The contrast's summaries, test and verdict; None when a cell has fewer than 2 values."""
  a, b = cell_values(results, contrast.a), cell_values(results, contrast.b)
  summaries = seed_statistics.summarize(a), seed_statistics.summarize(b)
  if min(summary.n for summary in summaries) < 2:
    return None
  comparison = TESTS[contrast.test](a, b)
  return {"a": summaries[0], "b": summaries[1], "comparison": comparison,
          "verdict": seed_statistics.verdict(contrast.expected_sign, comparison, alpha)}


def contrast_section(results: dict[str, list[dict]], contrasts: Sequence[Contrast],
                     alpha: float = 0.05) -> str:
  """The Markdown table of every contrast, tested on `results` (by experiment name)."""
  rows = []
  for contrast in contrasts:
    tested = evaluate_contrast(results, contrast, alpha)
    expected = "b > a" if contrast.expected_sign > 0 else "b < a"
    if tested is None:
      rows.append([contrast.claim, contrast.source, contrast.a.label, contrast.b.label, expected,
                   "–", "–", "–", "not run (fewer than 2 seeds per cell)"])
      continue
    comparison = tested["comparison"]
    rows.append([contrast.claim, contrast.source,
                 f"{contrast.a.label}: {seed_statistics.format_summary(tested['a'])}",
                 f"{contrast.b.label}: {seed_statistics.format_summary(tested['b'])}", expected,
                 f"{comparison.difference:+.4f}", comparison.method,
                 seed_statistics.format_p(comparison.p_value), tested["verdict"]])
  header = ("claim", "source", "a", "b", "paper", "b - a", "test", "p", "verdict")
  return (f"Each claim is tested on the per-seed values (mean ± sample std [95% t interval]); "
          f"'supported' means the difference is significant at alpha = {alpha:g} in the "
          f"paper's direction, 'opposite' significant the other way, 'not supported' not "
          f"significant.\n\n" + markdown_table(header, rows))
