"""Statistics over seeds for the experiment reports: summaries, tests and computed verdicts.

A cell of a report is a set of per-seed values x_1..x_n (one per independently trained model).

- `summarize`: mean, sample standard deviation s = sqrt(sum (x_i - mean)^2 / (n - 1)) (ddof=1)
  and the Student t interval mean ± t_{(1+c)/2, n-1} s / sqrt(n) at confidence c (0.95).
- `welch_test`: two cells with possibly different variances (Welch's unequal-variance t test,
  two-sided); the default for conditions trained from different seeds.
- `paired_test`: two cells measured on the same seeds (the same trained model under two
  evaluations); paired t test of the differences, two-sided.
- `bootstrap_test`: the difference of means with a percentile bootstrap interval and a two-sided
  permutation p value, for cells whose values are far from normal (e.g. accuracies at 1.0).
- `verdict`: the paper predicts the sign of `b - a`; "supported" when the test rejects equality
  at level alpha in that direction, "opposite" when it rejects in the other direction, "not
  supported" otherwise (no significant difference: a negative result, reported as such).

NaN and None values (runs where a metric does not apply) are dropped before anything is computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats

VERDICTS = ("supported", "not supported", "opposite")


class Summary(NamedTuple):
  """A cell over seeds: n values, their mean, sample std (ddof=1) and t interval [low, high]."""
  n: int
  mean: float
  std: float
  low: float
  high: float


class Comparison(NamedTuple):
  """A test of b against a: difference of means (b - a), its p value and the test's name."""
  difference: float
  p_value: float
  method: str


def finite_values(values: Sequence[float | None]) -> np.ndarray:
  """The values that are neither None nor NaN, as a float64 array."""
  return np.asarray([v for v in values if v is not None and not math.isnan(v)], np.float64)


def _check_confidence(confidence: float) -> None:
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def summarize(values: Sequence[float | None], confidence: float = 0.95) -> Summary:
  """Mean, sample std (ddof=1) and Student t interval of the finite values.

  n = 0 gives all NaN; n = 1 gives the value as mean and NaN std and interval (one seed says
  nothing about spread); identical values give a zero-width interval.
  """
  _check_confidence(confidence)
  x = finite_values(values)
  n = len(x)
  if n == 0:
    return Summary(0, math.nan, math.nan, math.nan, math.nan)
  mean = float(np.mean(x))
  if n == 1:
    return Summary(1, mean, math.nan, math.nan, math.nan)
  std = float(np.std(x, ddof=1))
  half = float(stats.t.ppf((1.0 + confidence) / 2.0, n - 1)) * std / math.sqrt(n)
  return Summary(n, mean, std, mean - half, mean + half)


def _two_cells(a, b, minimum: int = 2) -> tuple[np.ndarray, np.ndarray]:
  x, y = finite_values(a), finite_values(b)
  if len(x) < minimum or len(y) < minimum:
    raise ValueError(f"each cell needs at least {minimum} finite values, got {len(x)} and "
                     f"{len(y)}")
  return x, y


def welch_test(a: Sequence[float], b: Sequence[float]) -> Comparison:
  """Welch's two-sided t test of mean(b) = mean(a); NaN p value when both cells are constant
  and equal (nothing to test), 0 when constant and different."""
  x, y = _two_cells(a, b)
  difference = float(np.mean(y) - np.mean(x))
  if np.ptp(x) == 0 and np.ptp(y) == 0:
    return Comparison(difference, math.nan if difference == 0 else 0.0, "Welch t")
  return Comparison(difference, float(stats.ttest_ind(y, x, equal_var=False).pvalue), "Welch t")


def paired_test(a: Sequence[float], b: Sequence[float]) -> Comparison:
  """Paired two-sided t test of mean(b - a) = 0; a[i] and b[i] come from the same seed."""
  if len(a) != len(b):
    raise ValueError(f"paired cells need equal lengths, got {len(a)} and {len(b)}")
  pairs = [(u, v) for u, v in zip(a, b)
           if u is not None and v is not None and not (math.isnan(u) or math.isnan(v))]
  if len(pairs) < 2:
    raise ValueError(f"a paired test needs at least 2 finite pairs, got {len(pairs)}")
  x, y = np.asarray(pairs, np.float64).T
  differences = y - x
  difference = float(np.mean(differences))
  if np.ptp(differences) == 0:
    return Comparison(difference, math.nan if difference == 0 else 0.0, "paired t")
  return Comparison(difference, float(stats.ttest_rel(y, x).pvalue), "paired t")


def bootstrap_test(a: Sequence[float], b: Sequence[float], *, resamples: int = 9999,
                   seed: int = 0) -> Comparison:
  """Two-sided permutation test of the difference of means (b - a), `resamples` random
  relabelings (exact when there are fewer distinct ones); no normality assumption."""
  x, y = _two_cells(a, b, minimum=1)
  if resamples < 1:
    raise ValueError(f"resamples must be >= 1, got {resamples!r}")
  result = stats.permutation_test(
      (y, x), lambda u, v, axis: np.mean(u, axis=axis) - np.mean(v, axis=axis),
      vectorized=True, n_resamples=resamples, alternative="two-sided",
      rng=np.random.default_rng(seed))
  return Comparison(float(np.mean(y) - np.mean(x)), float(result.pvalue), "permutation")


def difference_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95, *,
                        resamples: int = 9999, seed: int = 0) -> tuple[float, float]:
  """Percentile bootstrap interval of mean(b) - mean(a), each cell resampled independently."""
  _check_confidence(confidence)
  x, y = _two_cells(a, b)
  result = stats.bootstrap(
      (y, x), lambda u, v, axis: np.mean(u, axis=axis) - np.mean(v, axis=axis),
      vectorized=True, n_resamples=resamples, confidence_level=confidence,
      method="percentile", rng=np.random.default_rng(seed))
  return float(result.confidence_interval.low), float(result.confidence_interval.high)


def verdict(expected_sign: int, comparison: Comparison, alpha: float = 0.05) -> str:
  """'supported', 'not supported' or 'opposite' for a predicted sign of (b - a).

  Args:
    expected_sign: +1 if the paper predicts b > a, -1 if b < a.
    comparison: the test's result (difference b - a and two-sided p value).
    alpha: the test's level.
  """
  if expected_sign not in (1, -1):
    raise ValueError(f"expected_sign must be 1 or -1, got {expected_sign!r}")
  if not 0.0 < alpha < 1.0:
    raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
  if math.isnan(comparison.p_value) or comparison.p_value >= alpha or comparison.difference == 0:
    return "not supported"
  return "supported" if np.sign(comparison.difference) == expected_sign else "opposite"


def format_summary(summary: Summary, digits: int = 3, scientific: bool = False) -> str:
  """'mean ± std [low, high]' (ddof=1 std, t interval); 'mean' for one value, '–' for none."""
  if summary.n == 0:
    return "–"
  number = (lambda v: f"{v:.{digits - 1}e}") if scientific else (lambda v: f"{v:.{digits}f}")
  if summary.n == 1:
    return number(summary.mean)
  return (f"{number(summary.mean)} ± {number(summary.std)} "
          f"[{number(summary.low)}, {number(summary.high)}]")


def format_p(p_value: float) -> str:
  """A p value for a table: 3 significant digits, '< 1e-4' below that, '–' when undefined."""
  if math.isnan(p_value):
    return "–"
  return "< 1e-4" if p_value < 1e-4 else f"{p_value:.3g}"
