"""The sweep's stopping-rule check: has a fixed training length reached the plateau?

A condition trained for E epochs has reached its plateau when the same condition trained for
E / 2 epochs (its schedule stretched to each length, the same seeds) ended with a final
validation accuracy at most `PLATEAU_TOLERANCE` lower, the seeds paired. One run's own curve
cannot tell: under a cosine schedule the last stretch of any run gains as the rate anneals.

`lengths` below is one condition's runs by length, `{epochs: [result, ...]}`, each result
`{'run': {'seed', ...}, 'metrics': {'validation_accuracy': [..., final], ...}}`.
"""

from __future__ import annotations

from experiments.seed_statistics import Comparison, format_p, paired_test

PLATEAU_TOLERANCE = 0.005
# Accuracies are fractions of a finite split (multiples of 1 / 360 on the digits' validation
# split), so a mean gain can equal the tolerance exactly; the float32 rounding of the stored
# accuracies (about 1e-8) must not decide the verdict.
_ROUNDING = 1e-6


def check_lengths(field: str, lengths, num_epochs: float) -> None:
  """Raises a ValueError naming config `field` unless `lengths` are numbers of epochs > 0 other
  than the configured `num_epochs` (a schedule's other lengths)."""
  lengths = tuple(lengths)
  if not lengths or any(not isinstance(e, (int, float)) or isinstance(e, bool) or e <= 0
                        or e == num_epochs for e in lengths):
    raise ValueError(f"{field} must be numbers of epochs > 0 other than num_epochs "
                     f"({num_epochs:g}), got {lengths!r}")


def by_length(results: list[dict], key, num_epochs: float) -> dict:
  """`{key(result): {epochs: results}}`, lengths in increasing order; a run's length is its
  'epochs' option, else `num_epochs`."""
  lengths = {}
  for result in results:
    epochs = float(result["run"]["options"].get("epochs", num_epochs))
    lengths.setdefault(key(result), {}).setdefault(epochs, []).append(result)
  return {cell: dict(sorted(by_epochs.items())) for cell, by_epochs in lengths.items()}


def reached_plateau(gain: Comparison) -> bool:
  """Whether a doubling gain is within `PLATEAU_TOLERANCE`."""
  return gain.difference <= PLATEAU_TOLERANCE + _ROUNDING


def final_validation_accuracy(metrics: dict) -> float:
  return metrics["validation_accuracy"][-1]


def doubling_gain(lengths: dict[float, list[dict]], epochs: float) -> Comparison | None:
  """The change of the final validation accuracy from `epochs / 2` to `epochs` epochs, paired
  by seed, or None without both lengths on at least 2 common seeds."""
  half, full = lengths.get(epochs / 2), lengths.get(epochs)
  if not (half and full):
    return None
  half_by_seed = {r["run"]["seed"]: r for r in half}
  pairs = [(final_validation_accuracy(half_by_seed[r["run"]["seed"]]["metrics"]),
            final_validation_accuracy(r["metrics"])) for r in full
           if r["run"]["seed"] in half_by_seed]
  if len(pairs) < 2:
    return None
  return paired_test(*zip(*pairs))


def plateau_length(lengths: dict[float, list[dict]]) -> float | None:
  """The shortest trained length E at which the condition is at its plateau (`doubling_gain`
  from E / 2 at most `PLATEAU_TOLERANCE`), or None where no length is."""
  for epochs in sorted(lengths):
    gain = doubling_gain(lengths, epochs)
    if gain is not None and reached_plateau(gain):
      return epochs
  return None


def reported_length(lengths: dict[float, list[dict]]) -> float:
  """The length a condition is reported at: the shortest at which it reached its plateau
  (`plateau_length`), else the longest it trained for."""
  return plateau_length(lengths) or max(lengths)


def plateau_verdict(lengths: dict[float, list[dict]], epochs: float) -> str:
  """Where the condition reached its plateau (`doubling_gain` <= `PLATEAU_TOLERANCE`), from
  `epochs` on: at `epochs`, at a longer length, not by the longest, or 'not checked'."""
  checked = [(e, doubling_gain(lengths, e)) for e in lengths if e >= epochs]
  checked = [(e, gain) for e, gain in checked if gain is not None]
  if not checked:
    return f"not checked (no run at {epochs / 2:g} epochs)"
  describe = lambda e, gain: (f"{e / 2:g} -> {e:g} epochs: {gain.difference:+.4f}, "
                              f"p {format_p(gain.p_value)}")
  for e, gain in checked:
    if reached_plateau(gain):
      prefix = "" if e == epochs else f"not at {epochs:g} epochs; "
      return f"{prefix}at its plateau by {e:g} epochs ({describe(e, gain)})"
  return (f"**not at its plateau** by {checked[-1][0]:g} epochs, the longest trained ("
          + "; ".join(describe(e, gain) for e, gain in checked) + ")")
