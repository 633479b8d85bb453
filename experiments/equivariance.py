"""Experiment 3: equivariance by construction, measured at random initialization.

No training is needed: equivariance is a property of the architecture, so it holds for every
value of the weights, random ones included. The CNN of `cnn_jax.models` at 8-16 channels in five
variants, applied to real test digits, per-layer errors under circular shifts
(`cnn_jax.analysis.layer_equivariance_errors`):

  conv_circular      stride-1 convolutions, circular padding, global average pooling: every
                     layer equivariant, the pooled features invariant (to float precision).
  conv_zero_padding  the same with zero ('same') padding: the border breaks equivariance.
  pool_circular      + 2x2 max pooling (stride 2) after each conv: exact only on the subsampled
                     grid (shifts that are multiples of the cumulative stride).
  blurpool_circular  + Zhang's blur pooling: the off-grid error is smaller.
  pool_zero_padding  max pooling with zero padding, the usual CNN.
"""

from __future__ import annotations

import os

import jax
from matplotlib.figure import Figure
import numpy as np

from cnn_jax import models
from cnn_jax.analysis import layer_equivariance_errors, shift_consistency
from cnn_jax.analysis.intermediates import model_features_fn
from cnn_jax.data import get_dataset_info
from cnn_jax.train.preprocess import normalize, to_unit_interval
from experiments.in_memory_training import InMemoryDataset, evaluation_subset, prng_key
from experiments.model_zoo import check_seeds
from experiments.report_tables import by_option, cell, markdown_table, mean_std
from experiments.runs import Run

NAME = "equivariance"

_BASE = {"features": (8, 16), "kernel_sizes": (3, 3), "hidden": (), "dropout_rates": (0.0,),
         "head": "global_avg"}
VARIANTS = {
    "conv_circular": {**_BASE, "pool_after": (False, False), "padding": "circular"},
    "conv_zero_padding": {**_BASE, "pool_after": (False, False), "padding": "same"},
    "pool_circular": {**_BASE, "pool_after": (True, True), "padding": "circular"},
    "blurpool_circular": {**_BASE, "pool_after": (True, True), "padding": "circular",
                          "blur": True},
    "pool_zero_padding": {**_BASE, "pool_after": (True, True), "padding": "same"},
}


def validate(config) -> None:
  check_seeds(f"config.{NAME}.seeds", config.equivariance.seeds)
  shifts = tuple(tuple(shift) for shift in config.equivariance.shifts)
  if not shifts or any(len(shift) != 2 for shift in shifts):
    raise ValueError(f"config.{NAME}.shifts must be a non-empty list of (dy, dx) pairs, got "
                     f"{config.equivariance.shifts!r}")


def plan(config) -> list[Run]:
  return [Run(NAME, f"{variant}_seed{seed}", seed, {"variant": variant})
          for seed in config.equivariance.seeds for variant in VARIANTS]


def execute(run: Run, config, digits: InMemoryDataset) -> dict:
  info = get_dataset_info("mnist_offline")
  model = models.get_model("cnn", num_classes=info.num_classes, **VARIANTS[run.options["variant"]])
  images = to_unit_interval(evaluation_subset(digits, config.layer_images)[0])
  variables = jax.jit(lambda key: model.init(key, images[:1], train=False))(
      prng_key(run.seed))
  features_fn = model_features_fn(model, variables)
  unit_features_fn = lambda x: features_fn(normalize(x, info.mean, info.std))
  shifts = [tuple(shift) for shift in config.equivariance.shifts]
  layers = layer_equivariance_errors(unit_features_fn, images, shifts)
  apply_fn = jax.jit(lambda x: model.apply(variables, normalize(x, info.mean, info.std),
                                           train=False))
  consistency = shift_consistency(apply_fn, images, prng_key(run.seed), max_shift=4,
                                  mode="circular", num_passes=3)
  return {
      "layers": [{"name": layer.name, "stride": layer.stride, "on_grid": layer.on_grid_error,
                  "off_grid": layer.off_grid_error} for layer in layers],
      "circular_consistency": consistency,
  }


def _layer_values(results: list[dict], layer: str, kind: str) -> list[float]:
  return [entry[kind] for result in results for entry in result["metrics"]["layers"]
          if entry["name"] == layer]


def report(results: list[dict], config, out_dir: str) -> str:
  groups = by_option(results, "variant")
  rows = []
  for (variant,), group in groups.items():
    for entry in group[0]["metrics"]["layers"]:
      rows.append([variant, entry["name"], entry["stride"] or "–",
                   cell(_layer_values(group, entry["name"], "on_grid"), 2, scientific=True),
                   cell(_layer_values(group, entry["name"], "off_grid"), 2, scientific=True)])
  figure = Figure(figsize=(8, 4))
  axes = figure.subplots()
  for (variant,), group in groups.items():
    names = [entry["name"] for entry in group[0]["metrics"]["layers"]]
    for kind, style in (("on_grid", "-o"), ("off_grid", "--x")):
      values = [mean_std(_layer_values(group, name, kind))[0] for name in names]
      axes.plot(range(len(names)), np.maximum(values, 1e-9), style,
                label=f"{variant} ({kind.replace('_', '-')})")
  axes.set_yscale("log")
  axes.set_xlabel("layer (forward order; see table)")
  axes.set_ylabel("||f(Tx) - T'f(x)|| / ||f(x)||")
  axes.set_title("Equivariance error at random init (circular shifts; floor 1e-9)")
  axes.legend(fontsize=6)
  figure.tight_layout()
  figure.savefig(os.path.join(out_dir, "equivariance_by_construction.png"), dpi=110)

  def worst(variant, kind, layers=None):
    values = [entry[kind] for result in groups.get((variant,), [])
              for entry in result["metrics"]["layers"]
              if (layers is None or entry["name"] in layers) and not np.isnan(entry[kind])]
    return max(values) if values else float("nan")

  def mean_of(variant, kind, layer):
    return mean_std(_layer_values(groups.get((variant,), []), layer, kind))[0]

  consistency = {variant: cell([r["metrics"]["circular_consistency"] for r in group])
                 for (variant,), group in groups.items()}
  claims = [
      f"- Stride-1 circular conv stack: the largest error over all layers, shifts and seeds is "
      f"**{worst('conv_circular', 'on_grid'):.1e}** (float32 precision: equivariant by "
      f"construction); after global pooling the features are invariant (error "
      f"{mean_of('conv_circular', 'on_grid', 'global_pool'):.1e}) and the top-1 consistency "
      f"under circular shifts is {consistency.get('conv_circular', '–')}.",
      f"- Zero padding instead: error {mean_of('conv_zero_padding', 'on_grid', 'conv2'):.1e} at "
      f"conv2 — the border breaks exact equivariance.",
      f"- With 2x2 max pooling (stride 2, circular): on the subsampled grid the error stays at "
      f"{worst('pool_circular', 'on_grid', ('pool1', 'pool2', 'conv2')):.1e}; off the grid it is "
      f"{mean_of('pool_circular', 'off_grid', 'pool1'):.2f} at pool1 and "
      f"{mean_of('pool_circular', 'off_grid', 'pool2'):.2f} at pool2; the pooled features are "
      f"no longer invariant ({mean_of('pool_circular', 'on_grid', 'global_pool'):.2f}); "
      f"consistency {consistency.get('pool_circular', '–')}.",
      f"- Blur pooling reduces the off-grid error to "
      f"{mean_of('blurpool_circular', 'off_grid', 'pool1'):.2f} (pool1) and "
      f"{mean_of('blurpool_circular', 'off_grid', 'pool2'):.2f} (pool2), the invariance error "
      f"of the pooled features to {mean_of('blurpool_circular', 'on_grid', 'global_pool'):.2f};"
      f" consistency {consistency.get('blurpool_circular', '–')}.",
  ]
  return "\n".join([
      "Random initialization (no training: equivariance is a property of the architecture, "
      f"true for all weights), {config.layer_images} test digits, circular shifts "
      f"{[tuple(s) for s in config.equivariance.shifts]}, seeds "
      f"{tuple(config.equivariance.seeds)}. Error "
      "`||f_l(Tx) - T' f_l(x)|| / ||f_l(x)||` with T' the shift divided by the layer's "
      "cumulative stride; 'off grid' = shifts that are not multiples of it, compared with the "
      "best neighbouring grid shift; layers without spatial axes are compared with T' = "
      "identity (invariance).", "", *claims, "",
      markdown_table(["variant", "layer", "stride", "error on grid", "error off grid"], rows),
      "", "![equivariance](equivariance_by_construction.png)"])
