"""Experiment 3: equivariance by construction, measured at random initialization.

No training is needed: equivariance is a property of the architecture, so it holds for every
value of the weights, random ones included. The CNN of `cnn_jax.models` at 8-16 channels,
applied to real test digits (on the [0, 1] scale, black background 0, then normalized
`x = (u - mean) / std` as in training), per-layer errors under circular shifts
(`cnn_jax.analysis.layer_equivariance_errors`) and the invariance error of the logits:

  conv_circular            stride-1 convolutions, circular padding, global average pooling: every
                           layer equivariant, the pooled features invariant (to float precision).
  conv_zero_padding        the same with zero ('same') padding: the border breaks equivariance.
  conv_background_padding  the same weights, the input padded with the background value instead
                           of 0 (the control: normalized, the black background is
                           b = -mean / std, about -0.42, so a zero pad draws a grey frame around
                           the digit that moves relative to it under a circular shift).
  pool_circular            + 2x2 max pooling (stride 2) after each conv: exact only on the
                           subsampled grid (shifts that are multiples of the cumulative stride).
  blurpool_circular        + Zhang's blur pooling: the off-grid error is smaller.
  pool_zero_padding        max pooling with zero padding, the usual CNN.
  pool_background_padding  its input padded with the background value (the control).

Variants of one family have the same parameter shapes, so at a given seed they share their random
weights: the report's contrasts are paired over seeds.

The background padding needs no new model: for a 'same' convolution with kernel W and bias c,
padding with a constant b instead of 0 is `conv(pad_b(x)) = conv(pad_0(x - b)) + b sum_{k,l,i} W`,
so the zero-padded model with its first bias raised by `b sum W` (`background_padding_variables`)
applied to `x - b` (= u / std: background 0) is the model whose input is padded with b. Hidden
layers still pad with 0.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
from matplotlib.figure import Figure
import numpy as np

from cnn_jax import models
from cnn_jax.analysis import layer_equivariance_errors
from cnn_jax.analysis.intermediates import model_features_fn
from cnn_jax.data import get_dataset_info
from cnn_jax.train.preprocess import normalize, to_unit_interval
from experiments import report_figures, seed_statistics
from experiments.contrasts import Cell, Contrast, evaluate_contrast
from experiments.in_memory_training import InMemoryDataset, evaluation_subset, prng_key
from experiments.model_zoo import check_seeds
from experiments.report_tables import by_option, cell, markdown_table
from experiments.runs import Run

NAME = "equivariance"
FIGURE = "equivariance_by_construction.png"
# Errors below this are float32 rounding (the figure then marks float32's epsilon).
FLOAT32_SCALE = 1e-5


class Variant(NamedTuple):
  """A network of the experiment: `get_model('cnn')` fields, and whether its input is padded
  with the background value (else with 0, or circularly for 'circular' padding)."""
  model: dict
  background_padding: bool = False


_BASE = {"features": (8, 16), "kernel_sizes": (3, 3), "hidden": (), "dropout_rates": (0.0,),
         "head": "global_avg"}
_CONV = {**_BASE, "pool_after": (False, False)}
_POOL = {**_BASE, "pool_after": (True, True)}
VARIANTS = {
    "conv_circular": Variant({**_CONV, "padding": "circular"}),
    "conv_zero_padding": Variant({**_CONV, "padding": "same"}),
    "conv_background_padding": Variant({**_CONV, "padding": "same"}, background_padding=True),
    "pool_circular": Variant({**_POOL, "padding": "circular"}),
    "blurpool_circular": Variant({**_POOL, "padding": "circular", "blur": True}),
    "pool_zero_padding": Variant({**_POOL, "padding": "same"}),
    "pool_background_padding": Variant({**_POOL, "padding": "same"}, background_padding=True),
}


def _logits(kind: str):
  return lambda metrics: metrics["logit_invariance"][kind]


def _layer(name: str, kind: str):
  return lambda metrics: next(entry[kind] for entry in metrics["layers"] if entry["name"] == name)


def _cell(variant: str, kind: str = "on_grid") -> Cell:
  label = f"{variant} ({kind.replace('_', '-')})"
  return Cell(NAME, {"variant": variant}, _logits(kind), label)


# The report's contrasts (the logits' relative invariance error, but the first: conv1's); paired
# t tests (the variants of a pair share their weights at each seed).
CONTRASTS = (
    Contrast("Padding with the background value lowers the first layer's error (stride 1)",
             "normalization artefact",
             Cell(NAME, {"variant": "conv_zero_padding"}, _layer("conv1", "on_grid"),
                  "conv_zero_padding conv1"),
             Cell(NAME, {"variant": "conv_background_padding"}, _layer("conv1", "on_grid"),
                  "conv_background_padding conv1"), -1, "paired"),
    Contrast("Zero padding breaks the invariance of the stride-1 circular stack",
             "border effect", _cell("conv_circular"), _cell("conv_zero_padding"), +1, "paired"),
    Contrast("Padding with the background value lowers the zero-padded error (stride 1)",
             "normalization artefact", _cell("conv_zero_padding"),
             _cell("conv_background_padding"), -1, "paired"),
    Contrast("Background padding still breaks invariance (hidden layers pad with 0)",
             "border effect", _cell("conv_circular"), _cell("conv_background_padding"), +1,
             "paired"),
    Contrast("Padding with the background value lowers the zero-padded error (pooled, on grid)",
             "normalization artefact", _cell("pool_zero_padding"),
             _cell("pool_background_padding"), -1, "paired"),
    Contrast("Max pooling is invariant on its grid only", "Chaman & Dokmanić 2021",
             _cell("pool_circular"), _cell("pool_circular", "off_grid"), +1, "paired"),
    Contrast("Blur pooling lowers the off-grid error of max pooling", "Zhang 2019",
             _cell("pool_circular", "off_grid"), _cell("blurpool_circular", "off_grid"), -1,
             "paired"),
)


def validate(config) -> None:
  check_seeds(f"config.{NAME}.seeds", config.equivariance.seeds)
  shifts = tuple(tuple(shift) for shift in config.equivariance.shifts)
  if not shifts or any(len(shift) != 2 for shift in shifts):
    raise ValueError(f"config.{NAME}.shifts must be a non-empty list of (dy, dx) pairs, got "
                     f"{config.equivariance.shifts!r}")


def plan(config) -> list[Run]:
  return [Run(NAME, f"{variant}_seed{seed}", seed, {"variant": variant})
          for seed in config.equivariance.seeds for variant in VARIANTS]


def background_padding_variables(variables: dict, background: jax.Array,
                                 first_conv: str = "Conv1") -> dict:
  """Variables of a 'same'-padded model that, applied to `x - background`, compute what it
  computes on `x` with the input padded with `background` (per channel, `[C]`) instead of 0.

  `conv(pad_b(x)) = conv(pad_0(x - b)) + sum_{k, l, i} b_i W[k, l, i, o]`: the bias of
  `first_conv` (kernel `[KH, KW, C, O]`) grows by `b . sum_{k, l} W`.
  """
  params = variables["params"]
  conv = params[first_conv]
  bias = conv["bias"] + jnp.einsum("klio,i->o", conv["kernel"], jnp.asarray(background))
  return {**variables, "params": {**params, first_conv: {**conv, "bias": bias}}}


def network_stride(layers) -> int:
  """The cumulative stride of the last spatial layer: the shifts a pooled feature is invariant
  to are its multiples."""
  return max([layer.stride for layer in layers if layer.stride is not None] or [1])


def execute(run: Run, config, digits: InMemoryDataset) -> dict:
  """Per-shift relative errors of every layer at the run's random initialization."""
  info = get_dataset_info("mnist_offline")
  variant = VARIANTS[run.options["variant"]]
  model = models.get_model("cnn", num_classes=info.num_classes, **variant.model)
  images = to_unit_interval(evaluation_subset(digits, config.layer_images)[0])
  variables = jax.jit(lambda key: model.init(key, images[:1], train=False))(prng_key(run.seed))
  # The digits' background is black (0 on the [0, 1] scale).
  background = normalize(jnp.zeros(images.shape[-1]), info.mean, info.std)
  if variant.background_padding:
    variables = background_padding_variables(variables, background)
    model_input = lambda u: normalize(u, info.mean, info.std) - background
  else:
    model_input = lambda u: normalize(u, info.mean, info.std)
  features_fn = model_features_fn(model, variables)
  unit_features_fn = lambda u: features_fn(model_input(u))
  shifts = [tuple(int(v) for v in shift) for shift in config.equivariance.shifts]
  per_shift = [layer_equivariance_errors(unit_features_fn, images, [shift]) for shift in shifts]
  stride = network_stride(per_shift[0])
  layers = []
  for index, layer in enumerate(per_shift[0]):
    # Spatial layers: on their own grid. Invariant layers: on the grid of the last spatial one.
    grid = layer.stride or stride
    errors = [results[index].on_grid_error if math.isnan(results[index].off_grid_error)
              else results[index].off_grid_error for results in per_shift]
    on_grid = [error for shift, error in zip(shifts, errors) if _on_grid(shift, grid)]
    off_grid = [error for shift, error in zip(shifts, errors) if not _on_grid(shift, grid)]
    layers.append({"name": layer.name, "stride": layer.stride, "grid": grid,
                   "on_grid": _mean(on_grid), "off_grid": _mean(off_grid),
                   "per_shift": [float(error) for error in errors]})
  logits = layers[-1]
  return {"shifts": [list(shift) for shift in shifts], "network_stride": stride,
          "background": float(background[0]), "layers": layers,
          "logit_invariance": {"on_grid": logits["on_grid"], "off_grid": logits["off_grid"]}}


def _on_grid(shift: tuple[int, int], stride: int) -> bool:
  return all(v % stride == 0 for v in shift)


def _mean(values: list[float]) -> float:
  return float(np.mean(values)) if values else math.nan


def _layer_values(group: list[dict], layer: str, kind: str) -> list[float]:
  return [entry[kind] for result in group for entry in result["metrics"]["layers"]
          if entry["name"] == layer]


def _layer_names(group: list[dict]) -> tuple[str, ...]:
  return tuple(entry["name"] for entry in group[0]["metrics"]["layers"])


def _shifts_of(group: list[dict], on_grid: bool) -> list[tuple[int, int]]:
  metrics = group[0]["metrics"]
  return [tuple(shift) for shift in metrics["shifts"]
          if _on_grid(shift, metrics["network_stride"]) == on_grid]


def _contrast_rows(results: list[dict]) -> list[list[str]]:
  rows = []
  for contrast in CONTRASTS:
    tested = evaluate_contrast({NAME: results}, contrast)
    expected = "b > a" if contrast.expected_sign > 0 else "b < a"
    if tested is None:
      rows.append([contrast.claim, contrast.a.label, contrast.b.label, expected, "–", "–",
                   "not run (fewer than 2 seeds per cell)"])
      continue
    comparison = tested["comparison"]
    rows.append([contrast.claim,
                 f"{contrast.a.label}: {seed_statistics.format_summary(tested['a'], 2, True)}",
                 f"{contrast.b.label}: {seed_statistics.format_summary(tested['b'], 2, True)}",
                 expected, f"{comparison.difference:+.2e}",
                 seed_statistics.format_p(comparison.p_value), tested["verdict"]])
  return rows


def _figure(groups: dict, path: str) -> None:
  """One row per family of variants with the same layers; columns: on-grid, off-grid shifts."""
  families = {}
  for (variant,), group in groups.items():
    families.setdefault(_layer_names(group), []).append(variant)
  kinds = ("on_grid", "off_grid")
  figure = Figure(figsize=(12, 3.6 * len(families)))
  axes = figure.subplots(len(families), 2, squeeze=False)
  for row, (names, variants) in zip(axes, families.items()):
    for axis, kind in zip(row, kinds):
      drawn = []
      for offset, variant in enumerate(variants):
        group = groups[(variant,)]
        x = np.arange(len(names)) + 0.08 * (offset - (len(variants) - 1) / 2)
        drawn += report_figures.errorbar_over_seeds(
            axis, x, [_layer_values(group, name, kind) for name in names], clip_at_zero=True,
            fmt="-o", markersize=4, label=variant)
      shift_kind = "on-grid" if kind == "on_grid" else "off-grid"
      if not drawn:
        axis.set_axis_off()
        axis.text(0.5, 0.5, f"no {shift_kind} shifts for these layers\n(cumulative stride 1)",
                  ha="center", va="center", transform=axis.transAxes, fontsize=9)
        continue
      if min(drawn) < FLOAT32_SCALE:
        axis.axhline(np.finfo(np.float32).eps, color="gray", linestyle=":", linewidth=1,
                     label="float32 ε (rounding)")
      report_figures.layer_ticks(axis, names)
      report_figures.zero_aware_log_scale(axis, drawn)
      axis.grid(alpha=0.3)
      axis.set_xlabel("layer (forward order)")
      axis.set_ylabel("relative error (0 = exact)")
      axis.set_title(f"{shift_kind} circular shifts: ‖f(Tx) − T'f(x)‖ / ‖f(x)‖", fontsize=9)
      axis.legend(fontsize=7)
  figure.suptitle("Per-layer equivariance error at random initialization (mean ± sample std "
                  "over seeds; symmetric log scale)", fontsize=10)
  figure.tight_layout()
  figure.savefig(path, dpi=100)


def report(results: list[dict], config, out_dir: str) -> str:
  groups = by_option(results, "variant")
  _figure(groups, os.path.join(out_dir, FIGURE))
  layer_rows, logit_rows = [], []
  for (variant,), group in groups.items():
    for name in _layer_names(group):
      entry = next(e for e in group[0]["metrics"]["layers"] if e["name"] == name)
      layer_rows.append([variant, name, entry["stride"] or "– (invariance)", entry["grid"],
                         cell(_layer_values(group, name, "on_grid"), 2, scientific=True),
                         cell(_layer_values(group, name, "off_grid"), 2, scientific=True)])
    logit_rows.append([variant, len(group), group[0]["metrics"]["network_stride"],
                       cell([r["metrics"]["logit_invariance"]["on_grid"] for r in group], 2, True),
                       str(_shifts_of(group, True)) or "–",
                       cell([r["metrics"]["logit_invariance"]["off_grid"] for r in group], 2,
                            True),
                       str(_shifts_of(group, False)) if _shifts_of(group, False) else "–"])
  background = results[0]["metrics"]["background"]
  return "\n".join([
      "Random initialization (no training: equivariance is a property of the architecture, "
      f"true for all weights), {config.layer_images} test digits, circular shifts "
      f"{[tuple(s) for s in config.equivariance.shifts]}, seeds "
      f"{tuple(config.equivariance.seeds)}. Error `‖f_l(Tx) − T' f_l(x)‖ / ‖f_l(x)‖` with T' the "
      "shift divided by the layer's cumulative stride; 'on grid' = shifts that are multiples "
      "of it, 'off grid' = the others, compared with the best neighbouring grid shift; layers "
      "without spatial axes (global_pool, logits) are compared with T' = identity (invariance), "
      "their grid being the last spatial layer's. Shift consistency is not measured here: at "
      "random initialization a network predicts nearly one class for every digit, which makes "
      f"it vacuous. The normalized black background is {background:.3f}: zero padding pads "
      "with a value the image does not have, the '*_background_padding' controls pad the input "
      "with the background (hidden layers still pad with 0).", "",
      "Relative invariance error of the logits `‖f(Tx) − f(x)‖ / ‖f(x)‖` (mean ± sample std "
      "[95% t interval] over seeds):", "",
      markdown_table(["variant", "seeds", "network stride", "on grid", "on-grid shifts",
                      "off grid", "off-grid shifts"], logit_rows), "",
      "Contrasts (paired t tests over seeds: the variants of a pair share their random "
      "weights; verdict 'supported' = significant at alpha = 0.05 in the expected "
      "direction, 'opposite' = significant the other way, 'not supported' = not significant):",
      "",
      markdown_table(["claim", "a", "b", "expected", "b − a", "p", "verdict"],
                     _contrast_rows(results)), "",
      f"Per layer (figure `{FIGURE}` below: one row per family of variants with the same "
      "layers, on-grid and off-grid shifts in separate panels, exact zeros at 0):", "",
      markdown_table(["variant", "layer", "stride", "grid", "error on grid", "error off grid"],
                     layer_rows), "",
      f"![per-layer equivariance error at random initialization]({FIGURE})"])
