"""The sweep's stopping-rule check: has a fixed training length reached the plateau?

A condition trained for E epochs has reached its plateau when the same condition trained for
E / 2 epochs (its schedule stretched to each length, the same seeds) ended with a final
validation accuracy at most `PLATEAU_TOLERANCE` lower, the seeds paired. One run's own curve
cannot tell: under a cosine schedule the last stretch of any run gains as the rate anneals.

`lengths` below is one condition's runs by length, `{epochs: [result, ...]}`, each result
`{'run': {'seed', ...}, 'metrics': {'validation_accuracy': [..., final], ...}}`. A length may
also be relative to an experiment's own rule (option 'length': 1 = the rule, 0.5 = half its
steps); the arithmetic is the same.
"""

from __future__ import annotations

from experiments.runs import Run
from experiments.seed_statistics import Comparison, format_p, paired_test, summarize

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


def check_schedule(field: str, schedule, cells, keys: str, num_epochs: float) -> None:
  """Raises a ValueError naming config `field` unless every key of `schedule` (a cell name:
  its other lengths) is one of `cells` (described by `keys`) and its lengths pass
  `check_lengths`."""
  for name, lengths in schedule.items():
    if name not in cells:
      raise ValueError(f"{field} keys must be {keys}, got {name!r}")
    check_lengths(f"{field}.{name}", lengths, num_epochs)


def runs_at_lengths(runs: list[Run], lengths, option: str, tag: str) -> list[Run]:
  """Each run again at each of `lengths(run)`: option `option` set to it, named
  `<name less _seed<s>>_<tag><length>_seed<s>` (e.g. `cnn_translate_e7.5_seed3`)."""
  return [Run(run.experiment, f"{run.name.removesuffix(f'_seed{run.seed}')}_{tag}{length:g}"
                              f"_seed{run.seed}", run.seed, {**run.options, option: float(length)})
          for run in runs for length in lengths(run)]


def by_length(results: list[dict], key, num_epochs: float, option: str = "epochs") -> dict:
  """`{key(result): {epochs: results}}`, lengths in increasing order; a run's length is its
  `option` ('epochs', or 'length' relative to a rule), else `num_epochs`."""
  lengths = {}
  for result in results:
    epochs = float(result["run"]["options"].get(option, num_epochs))
    lengths.setdefault(key(result), {}).setdefault(epochs, []).append(result)
  return {cell: dict(sorted(by_epochs.items())) for cell, by_epochs in lengths.items()}


def reached_plateau(gain: Comparison) -> bool:
  """Whether a doubling gain is within `PLATEAU_TOLERANCE`."""
  return gain.difference <= PLATEAU_TOLERANCE + _ROUNDING


def gain_cell(gain: Comparison | None) -> str:
  """A table cell: a doubling gain and its p value, bold where it exceeds the tolerance (not at
  the plateau), '–' where there is none (not checked)."""
  if gain is None:
    return "–"
  value = f"{gain.difference:+.4f}"
  return f"{value if reached_plateau(gain) else f'**{value}**'} ({format_p(gain.p_value)})"


def checked_count(rising: list[str], checked: int) -> str:
  """'k of n checked cells reached it', naming the `rising` ones (not at their plateau)."""
  return (f"{checked - len(rising)} of {checked} checked cells reached it"
          + ("; **not at their plateau**: " + "; ".join(rising) + "." if rising else "."))


def final_validation_accuracy(metrics: dict) -> float:
  return metrics["validation_accuracy"][-1]


def doubling_pairs(lengths: dict[float, list[dict]], epochs: float,
                   accuracy=final_validation_accuracy) -> list[tuple[float, float]]:
  """`(accuracy at epochs / 2, accuracy at epochs)` of each seed trained at both lengths."""
  half, full = lengths.get(epochs / 2) or [], lengths.get(epochs) or []
  half_by_seed = {r["run"]["seed"]: r for r in half}
  return [(accuracy(half_by_seed[r["run"]["seed"]]["metrics"]), accuracy(r["metrics"]))
          for r in full if r["run"]["seed"] in half_by_seed]


def doubling_gain(lengths: dict[float, list[dict]], epochs: float,
                  accuracy=final_validation_accuracy) -> Comparison | None:
  """The change of `accuracy(metrics)` (default: the final validation accuracy) from
  `epochs / 2` to `epochs` epochs, paired by seed, or None without both lengths on at least 2
  common seeds."""
  pairs = doubling_pairs(lengths, epochs, accuracy)
  if len(pairs) < 2:
    return None
  return paired_test(*zip(*pairs))


def undecided_sentence(lengths: dict[float, list[dict]], epochs: float) -> str:
  """Whether the doubling gain to `epochs` is still rising or undecided: its 95% t interval
  over the paired seeds lies above `PLATEAU_TOLERANCE`, or contains it (more seeds would
  decide)."""
  pairs = doubling_pairs(lengths, epochs)
  gains = summarize([full - half for half, full in pairs])
  interval = f"[{gains.low:+.4f}, {gains.high:+.4f}]"
  if gains.low > PLATEAU_TOLERANCE:
    return (f"; the last gain's 95% interval over {gains.n} seeds, {interval}, lies above the "
            f"{PLATEAU_TOLERANCE:g} tolerance: still rising")
  return (f"; the last gain's 95% interval over {gains.n} seeds, {interval}, contains the "
          f"{PLATEAU_TOLERANCE:g} tolerance: undecided at this seed count")


def plateau_length(lengths: dict[float, list[dict]],
                   accuracies=(final_validation_accuracy,)) -> float | None:
  """The shortest trained length E at which the condition is at its plateau (`doubling_gain`
  from E / 2 at most `PLATEAU_TOLERANCE`, of each of `accuracies`: a run in phases checks each
  phase's curve), or None where no length is."""
  for epochs in sorted(lengths):
    gains = [doubling_gain(lengths, epochs, accuracy) for accuracy in accuracies]
    if all(gain is not None and reached_plateau(gain) for gain in gains):
      return epochs
  return None


def reported_length(lengths: dict[float, list[dict]],
                    accuracies=(final_validation_accuracy,)) -> float:
  """The length a condition is reported at: the shortest at which it reached its plateau
  (`plateau_length`), else the longest it trained for."""
  return plateau_length(lengths, accuracies) or max(lengths)


def plateau_verdict(lengths: dict[float, list[dict]], epochs: float) -> str:
  """Where the condition reached its plateau (`doubling_gain` <= `PLATEAU_TOLERANCE`), from
  `epochs` on: at `epochs`, at a longer length, not by the longest, or 'not checked'."""
  checked = [(e, doubling_gain(lengths, e)) for e in lengths if e >= epochs]
  checked = [(e, gain) for e, gain in checked if gain is not None]
  if not checked:
    halves = ", ".join(f"{e / 2:g}" for e in sorted(lengths) if e >= epochs) or f"{epochs / 2:g}"
    return f"not checked (no run at {halves} epochs)"
  describe = lambda e, gain: (f"{e / 2:g} -> {e:g} epochs: {gain.difference:+.4f}, "
                              f"p {format_p(gain.p_value)}")
  for e, gain in checked:
    if reached_plateau(gain):
      prefix = "" if e == epochs else f"not at {epochs:g} epochs; "
      return f"{prefix}at its plateau by {e:g} epochs ({describe(e, gain)})"
  return (f"**not at its plateau** by {checked[-1][0]:g} epochs, the longest trained ("
          + "; ".join(describe(e, gain) for e, gain in checked) + ")"
          + undecided_sentence(lengths, checked[-1][0]))
