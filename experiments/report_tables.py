"""Small helpers the experiments' report sections share: mean ± std cells, Markdown tables."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and (population) standard deviation over seeds, ignoring NaN; (nan, nan) if none."""
  finite = [value for value in values if value is not None and not math.isnan(value)]
  if not finite:
    return math.nan, math.nan
  return float(np.mean(finite)), float(np.std(finite))


def cell(values: Sequence[float], digits: int = 3, scientific: bool = False) -> str:
  """'mean ± std (n)' over seeds; 'mean' alone for one seed; '–' for none."""
  mean, std = mean_std(values)
  if math.isnan(mean):
    return "–"
  number = (lambda v: f"{v:.{digits - 1}e}") if scientific else (lambda v: f"{v:.{digits}f}")
  count = sum(1 for value in values if value is not None and not math.isnan(value))
  return number(mean) if count == 1 else f"{number(mean)} ± {number(std)}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(item) for item in row) + " |" for row in rows]
  return "\n".join(lines)


def by_option(results: Sequence[dict], *names: str) -> dict[tuple, list[dict]]:
  """Groups results by the values of run options `names` (over seeds), in first-seen order."""
  groups = {}
  for result in results:
    key = tuple(result["run"]["options"][name] for name in names)
    groups.setdefault(key, []).append(result)
  return groups
