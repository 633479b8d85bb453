"""Experiment 1's figures, drawn from fixture results (no training): layer names on per-model
panels, on-grid and off-grid errors apart, legends only for drawn artists, exact zeros at 0."""

import copy
import math

from matplotlib.container import BarContainer
from matplotlib.figure import Figure
import pytest

from experiments import augmentation
from experiments.configs import exp_sweep
from test_sweep import FAKE_METRICS  # the metric format of augmentation.execute

CNN_LAYERS = [("conv1", 1, 0.0, math.nan), ("pool1", 2, 0.0, 0.4), ("fc1", None, 0.2, math.nan),
              ("logits", None, 0.1, math.nan)]


def fixture_results(config) -> list[dict]:
  """Two seeds of every planned digits run: the MLP as in FAKE_METRICS, the others with conv
  layers whose on-grid error is exactly 0."""
  results = []
  for seed in (0, 1):
    for run in augmentation.plan(config):
      metrics = copy.deepcopy(FAKE_METRICS)
      metrics["clean_accuracy"] += 0.01 * seed
      if run.options["model"] != "mlp":
        metrics["layers"] = [{"name": name, "stride": stride, "on_grid": on_grid,
                              "off_grid": off_grid} for name, stride, on_grid, off_grid in
                             CNN_LAYERS]
        metrics["layer_lie_translation"] = [{"name": name, "relative_norm": 0.1 + 0.01 * seed}
                                            for name, *_ in CNN_LAYERS]
        metrics["lie_attribution"] = {kind: [{"name": name, "norm": 1.0, "share": 0.25}
                                             for name, *_ in CNN_LAYERS]
                                      for kind in ("translation_horizontal", "rotation")}
      results.append({"run": {**run._asdict(), "seed": seed}, "metrics": metrics})
  return results


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
  """The report's text and every Figure it drew, by file name."""
  drawn = {}

  class RecordingFigure(Figure):
    def savefig(self, path, **kwargs):
      drawn[str(path).rsplit("/", 1)[-1]] = self
      super().savefig(path, **kwargs)

  config = exp_sweep.get_config()
  config.augmentation.datasets = ("mnist_offline",)
  config.augmentation.seeds = (0, 1)
  config.augmentation.models = ("mlp", "cnn")
  config.augmentation.dose_models = ("cnn",)
  config.augmentation.translation_ranges = (0, 3)
  config.augmentation.rotation_ranges = (0.0, 30.0)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(augmentation, "Figure", RecordingFigure)
    text = augmentation.report(fixture_results(config), config,
                               str(tmp_path_factory.mktemp("report")))
  return text, drawn


def _drawn_labels(axis) -> set[str]:
  labels = {artist.get_label() for artist in [*axis.lines, *axis.collections, *axis.patches,
                                              *axis.containers]}
  return {label for label in labels if not label.startswith("_")}


def test_every_figure_is_drawn_and_referenced_from_the_text(figures):
  text, drawn = figures
  assert set(drawn) == {"accuracy_vs_shift.png", "accuracy_vs_angle.png", "consistency.png",
                        "layer_equivariance.png", "dose_response.png"}
  for name in drawn:
    assert f"`{name}`" in text and f"({name})" in text  # described, then shown


def test_legends_name_only_drawn_artists(figures):
  _, drawn = figures
  for name, figure in drawn.items():
    drawn_labels = set().union(*(_drawn_labels(axis) for axis in figure.axes))
    legends = [axis.get_legend() for axis in figure.axes] + list(figure.legends)
    for legend in filter(None, legends):
      entries = {text.get_text() for text in legend.get_texts()}
      assert entries <= drawn_labels, (name, entries - drawn_labels)


def test_layer_panels_name_each_models_layers_and_keep_zeros_at_zero(figures):
  _, drawn = figures
  axes = drawn["layer_equivariance.png"].axes
  assert len(axes) == 4  # (error, Lie derivative) x (mlp, cnn)
  ticks = lambda axis: [label.get_text() for label in axis.get_xticklabels()]
  assert ticks(axes[0]) == ["fc1"]
  assert ticks(axes[2]) == [name for name, *_ in CNN_LAYERS]
  cnn_errors = axes[2]
  assert cnn_errors.get_yscale() == "symlog" and cnn_errors.get_ylim()[0] == 0.0
  # One series per kind that has values: on grid (conv1, pool1), off grid (pool1), invariance
  # (fc1, logits), each for the four augmentations.
  assert len(cnn_errors.containers) == 3 * 4


def test_consistency_bars_carry_sample_std_error_bars(figures):
  _, drawn = figures
  crop = drawn["consistency.png"].axes[0]
  assert [label.get_text() for label in crop.get_xticklabels()] == ["mlp", "cnn"]
  assert crop.get_ylim() == (0.0, 1.0)
  bars = [c for c in crop.containers if isinstance(c, BarContainer)]
  assert len(bars) == 4 and all(c.errorbar is not None for c in bars)
