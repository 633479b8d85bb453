"""Small helpers the experiments' report sections share: mean ± std [interval] cells, Markdown
tables."""

from __future__ import annotations

from collections.abc import Sequence

from experiments.seed_statistics import format_summary, summarize


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (ddof=1) over seeds, ignoring NaN and None; (nan, nan)
  if none, (mean, nan) for one value."""
  summary = summarize(values)
  return summary.mean, summary.std


def cell(values: Sequence[float], digits: int = 3, scientific: bool = False) -> str:
  """'mean ± std [95% t interval]' over seeds; 'mean' alone for one seed; '–' for none."""
  return format_summary(summarize(values), digits, scientific)


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
