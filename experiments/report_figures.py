"""Figure pieces the experiment reports share: per-x mean ± sample std over seeds as error bars,
and a log-like value axis on which exact zeros stay at 0.

Errors and derivatives that are exactly 0 by construction (a circular conv stack on its grid)
cannot be drawn on a log axis; flooring them at an arbitrary small value would look like a
measurement. `zero_aware_log_scale` uses matplotlib's symmetric log scale instead: linear on
[0, t], logarithmic above, with t the decade below the smallest positive value drawn, so a 0 sits
on the tick labelled 0 and every positive value on its true decade.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from experiments.seed_statistics import summarize


def seed_summary(values_per_x: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
  """Means and sample stds (ddof=1; 0 where one seed, NaN mean where none) of each x's values."""
  summaries = [summarize(values) for values in values_per_x]
  means = np.array([summary.mean for summary in summaries], np.float64)
  stds = np.array([0.0 if math.isnan(summary.std) else summary.std for summary in summaries],
                  np.float64)
  return means, stds


def errorbar_over_seeds(axis, x: Sequence[float], values_per_x: Sequence[Sequence[float]], *,
                        clip_at_zero: bool = False, **style) -> list[float]:
  """Draws mean ± sample std over seeds at each x where some value is finite; nothing (and no
  legend entry) when there is none. With `clip_at_zero` (non-negative quantities) a lower bar
  stops at 0. Returns the finite means drawn."""
  means, stds = seed_summary(values_per_x)
  finite = np.isfinite(means)
  if not finite.any():
    return []
  x = np.asarray(x, np.float64)[finite]
  means, stds = means[finite], stds[finite]
  lower = np.minimum(stds, means) if clip_at_zero else stds
  axis.errorbar(x, means, yerr=np.stack([lower, stds]), capsize=3, **style)
  return [float(v) for v in means]


def zero_aware_log_scale(axis, values: Sequence[float]) -> None:
  """A symmetric log y scale for non-negative `values` (the ones drawn): linear on [0, t] with t
  the decade at or below the smallest positive value, logarithmic above; y starts at 0, so
  exact zeros are drawn at the tick labelled 0. A linear scale when nothing is positive."""
  values = np.asarray([v for v in values if np.isfinite(v)], np.float64)
  positive = values[values > 0]
  if positive.size == 0:
    axis.set_ylim(bottom=0.0)
    return
  threshold = 10.0 ** math.floor(math.log10(float(positive.min())))
  axis.set_yscale("symlog", linthresh=threshold, linscale=0.5)
  axis.set_ylim(0.0, 10.0 ** math.ceil(math.log10(float(positive.max()) * 1.5)))


def layer_ticks(axis, names: Sequence[str]) -> None:
  """Layer names as x tick labels at 0, 1, ..., rotated so long names stay readable."""
  axis.set_xticks(np.arange(len(names)), list(names), rotation=30, ha="right", fontsize=8)
  axis.set_xlim(-0.5, len(names) - 0.5)
