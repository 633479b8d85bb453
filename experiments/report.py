"""The sweep's report: `<report_dir>/README.md` with one section per experiment, and PNGs.

Beside them, `<report_dir>/runs/` keeps what the report was made from: every finished run's
result (`<experiment>.json`, a list of `{'run': ..., 'metrics': ...}`) and the sweep's config
(`config.json`), small enough to commit, so `report_from_exported(report_dir)` rewrites the report
and its figures without retraining.
"""

from __future__ import annotations

import json
import math
import os
import time

import ml_collections

from cnn_jax.train import optim

from experiments import contrasts, pooling_vs_stride, published
from experiments.runs import Run

SECTION_TITLES = {  # in the report's order
    "augmentation": "1. Augmentation x model grid",
    "learned_invariance": "2. Learned translation invariance (Biscione & Bowers 2021)",
    "equivariance": "3. Equivariance by construction (random init)",
    "priors": "4. Priors: locality, self-similarity and data size",
    "depth": "5. Depth: plain vs residual",
    "rotation": "6. Rotation: equivariance by construction (P4CNN) vs augmentation",
}
POOLING_TITLE = "7. Pooling vs stride (Springenberg et al. 2015)"
# The sweep's record of its last timed invocation, in its workdir and beside exported results.
TIMING_FILE = "sweep_timing.json"
# What a config's relative paths (`lengths_from`) are relative to.
REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_report(results: dict[str, list[dict]], config, report_dir: str,
                 experiments: dict, timing: dict | None = None) -> str:
  """Writes README.md (and each section's figures) into `report_dir`; returns its path.

  Args:
    results: finished results by experiment name (see `experiments.runs.save_result`).
    config: the sweep config.
    report_dir: created if needed.
    experiments: experiment name -> module with `report(results, config, out_dir) -> markdown`.
    timing: the sweep's `TIMING_FILE` record (`experiments.sweep.record_timing`), if any.
  """
  os.makedirs(report_dir, exist_ok=True)
  export_results(results, config, report_dir, timing)
  minutes = {name: sum(result["metrics"]["wall_time_seconds"] for result in group) / 60
             for name, group in results.items()}
  planned = planned_runs(config, experiments)
  planned_counts = {name: 0 for name in config.experiments}
  for run in planned:
    planned_counts[run.experiment] += 1
  lines = [
      "# cnn-jax experiments: invariance, equivariance, priors, depth", "",
      f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from "
      f"{sum(len(group) for group in results.values())} finished runs (compute "
      f"{sum(minutes.values()):.1f} min in total: about {sum(minutes.values()) / 2:.0f} min of "
      "wall time for 2 worker processes, as the make targets run it). Runs per experiment "
      "(finished / planned): "
      + ", ".join(f"{name} {len(results.get(name, []))}/{count}"
                  for name, count in planned_counts.items())
      + ". Compute per experiment (the runs' wall times summed): "
      + ", ".join(f"{name} {value:.1f} min" for name, value in minutes.items())
      + "." + timing_sentence(timing) + lengths_sentence(config, planned, experiments, results),
      "Tables give mean ± sample std (ddof=1) over seeds and, with 2 or more seeds, the 95% "
      "Student t interval in brackets. Data: the 5,000 offline MNIST digits "
      "('mnist_offline', 4,000 train / 1,000 test); experiment 1 also CIFAR-10 where it is "
      "prepared (see its section). Every model is trained by "
      "`cnn_jax.train`'s data-parallel step and loop (SGD with Nesterov momentum, cosine "
      "schedule, weight decay 5e-4 on kernels, label smoothing 0.1, "
      f"batch {config.batch_size}, peak rate "
      f"{optim.peak_learning_rate(config):g} = {config.learning_rate:g} per 256 "
      "examples, where a section states no rate of its own).", ""]
  if config.budget_cuts:
    lines += [f"Budget cuts (to fit the sweep into {config.budget_hours:g} hours on 2 CPU cores; "
              "the config "
              "`experiments/configs/exp_sweep.py:gpu` undoes each):", ""]
    lines += [f"- {SECTION_TITLES[name]}: {config.budget_cuts[name]}."
              for name in SECTION_TITLES if name in config.budget_cuts]
    lines.append("")
  for name in SECTION_TITLES:
    if name not in config.experiments:
      if name in config.budget_cuts:
        lines += [f"## {SECTION_TITLES[name]}", "", "Not run in this sweep (budget cuts above).",
                  ""]
      continue
    lines += [f"## {SECTION_TITLES[name]}", ""]
    if results.get(name):
      lines.append(experiments[name].report(results[name], config, report_dir))
    else:
      lines.append("No finished runs.")
    lines.append("")
  if results.get("augmentation") and len(pooling_vs_stride.variants_in(config)) > 1:
    lines += [f"## {POOLING_TITLE}", "",
              pooling_vs_stride.report(results["augmentation"], config, report_dir), ""]
  # Each cell at its reported length, as in its tables.
  reported = {name: reported_runs(experiments, name, runs, config)
              for name, runs in results.items()}
  lines += ["## Agreement with the papers (computed)", "",
            contrasts.contrast_section(reported, contrasts.contrasts_for(config)), "",
            "Published numbers these experiments are compared with (other datasets and scales: "
            "the contrasts above test the direction of each effect, not its size):", "",
            published.published_table(), ""]
  path = os.path.join(report_dir, "README.md")
  with open(path, "w") as file:
    file.write("\n".join(lines))
  return path


def reported_runs(experiments: dict, name: str, results: list[dict], config) -> list[dict]:
  """Experiment `name`'s runs of each cell at its reported length (its module's `reported_runs`:
  the stopping rule, where it trains cells at several lengths), else all of `results`."""
  module = experiments.get(name)
  return module.reported_runs(results, config) if hasattr(module, "reported_runs") else results


def resolve(path: str) -> str:
  """A config's path, relative to the repository's root unless absolute."""
  return os.path.join(REPOSITORY_ROOT, path)


def at_reported_lengths(runs: list[Run], report_dir: str, experiments: dict) -> list[Run]:
  """`runs` less those that the report exported in `report_dir` trained but did not report.

  So each cell that report has trains only at the length it was reported at there (the
  shortest that reached its plateau by its stopping-rule check, else its longest), not at the
  lengths that check tried; runs that report does not have are kept. Runs are matched by
  experiment and name (a name records the run's options).
  """
  exported, exported_config = load_exported(report_dir, field="config.lengths_from")
  trained = {(name, result["run"]["name"]) for name, group in exported.items() for result in group}
  kept = reported_wall_seconds(exported, exported_config, experiments)
  return [run for run in runs
          if (run.experiment, run.name) not in trained or (run.experiment, run.name) in kept]


def planned_runs(config, experiments: dict) -> list[Run]:
  """Every run of the config's experiments, ordered seed by seed, then experiment by experiment
  (the order the sweep's workers take them); where `config.lengths_from` names a report, only
  the runs `at_reported_lengths` keeps."""
  runs = [run for name in config.experiments for run in experiments[name].plan(config)]
  if config.get("lengths_from"):
    runs = at_reported_lengths(runs, resolve(config.lengths_from), experiments)
  seeds = sorted({run.seed for run in runs})
  return sorted(runs, key=lambda run: seeds.index(run.seed))


def reported_wall_seconds(exported: dict[str, list[dict]], exported_config,
                          experiments: dict) -> dict[tuple[str, str], float]:
  """The wall time in seconds of each run that an exported report (`load_exported`'s results
  and config) reported (each cell at its reported length, `reported_runs`), by (experiment, run
  name)."""
  return {(name, result["run"]["name"]): result["metrics"]["wall_time_seconds"]
          for name, group in exported.items()
          for result in reported_runs(experiments, name, group, exported_config)}


def packed_minutes(runs: list[Run], wall_seconds: dict[tuple[str, str], float],
                   workers: int = 1) -> float:
  """Minutes that those of `runs` with a time in `wall_seconds` (`reported_wall_seconds`) take:
  their compute (summed wall times) for one worker; for more, the wall time of `workers`
  processes that each take the next run in `runs`' order as they come free (`--processes`)."""
  busy_until = [0.0] * workers
  for run in runs:
    if (run.experiment, run.name) in wall_seconds:
      free = busy_until.index(min(busy_until))
      busy_until[free] += wall_seconds[run.experiment, run.name]
  return max(busy_until) / 60


def lengths_sentence(config, planned: list[Run], experiments: dict,
                     results: dict[str, list[dict]]) -> str:
  """The header's sentences on a sweep with `config.lengths_from`: where it took its lengths,
  what its planned runs (`planned_runs`: the only ones of that report's it trains are reported
  ones) took there, what that report's reported runs it leaves out took, and how its finished
  `results` compare with the same runs there (`reproduction_sentence`)."""
  if not config.get("lengths_from"):
    return ""
  reference, reference_config = load_exported(resolve(config.lengths_from),
                                               field="config.lengths_from")
  wall_seconds = reported_wall_seconds(reference, reference_config, experiments)
  kept = {(run.experiment, run.name) for run in planned}
  left_out = {}
  for (name, run_name), seconds in wall_seconds.items():
    if (name, run_name) not in kept:
      left_out[name] = left_out.get(name, 0.0) + seconds / 60
  total = sum(wall_seconds.values()) / 60
  return (f" Each cell trained once, at the length the report in `{config.lengths_from}` "
          "reported it at: the shortest that reached its plateau by that report's stopping-rule "
          "check, which is not repeated here (so this report's gains from half the length read '–' "
          "or 'not checked'). "
          f"These runs took {packed_minutes(planned, wall_seconds):.0f} min of compute there: "
          f"{packed_minutes(planned, wall_seconds, workers=2):.0f} min of wall time for 2 "
          "workers taking them in the sweep's order. What the budget cuts leave out of that "
          f"report's reported runs took {sum(left_out.values()):.0f} min of compute there ("
          + ", ".join(f"{name} {minutes:.0f}" for name, minutes in sorted(
              left_out.items(), key=lambda item: -item[1]))
          + f"): training every one of its cells once at its reported length takes "
          f"{total:.0f} compute-min, about {total / 2:.0f} min for 2 workers."
          + reproduction_sentence(results, reference))


def metric_leaves(metrics, path: tuple = ()):
  """(path, value) of every number in a run's metrics (nested dicts and lists), timings
  (keys ending in '_seconds') left out: what two runs of the same options should reproduce."""
  if isinstance(metrics, dict):
    for key, value in metrics.items():
      if not key.endswith("_seconds"):
        yield from metric_leaves(value, path + (key,))
  elif isinstance(metrics, (list, tuple)):
    for index, value in enumerate(metrics):
      yield from metric_leaves(value, path + (str(index),))
  elif isinstance(metrics, (int, float)):
    yield path, float(metrics)


def relative_difference(a: float, b: float) -> float:
  """|a - b| / max(|a|, |b|): 0 for equal numbers (two NaNs included), inf against one NaN."""
  if a == b or (math.isnan(a) and math.isnan(b)):
    return 0.0
  if math.isnan(a) or math.isnan(b):
    return math.inf
  return abs(a - b) / max(abs(a), abs(b))


def reproduction_sentence(results: dict[str, list[dict]],
                          reference: dict[str, list[dict]]) -> str:
  """The header's sentence on the runs of `results` that `reference` (another report's results)
  also has: how many agree with it in every recorded number (`metric_leaves`: timings aside),
  and the largest relative difference of any number, where."""
  reference_metrics = {(name, result["run"]["name"]): result["metrics"]
                       for name, group in reference.items() for result in group}
  compared, identical, largest = 0, 0, (0.0, "")
  for name, group in results.items():
    for result in group:
      other = reference_metrics.get((name, result["run"]["name"]))
      if other is None:
        continue
      compared += 1
      mine, theirs = dict(metric_leaves(result["metrics"])), dict(metric_leaves(other))
      run_name = f"{name}/{result['run']['name']}"
      if mine.keys() != theirs.keys():
        difference, where = math.inf, f"{run_name} (other metrics recorded)"
      elif mine:
        differences = {path: relative_difference(mine[path], theirs[path]) for path in mine}
        path = max(differences, key=differences.get)
        difference, where = differences[path], (f"{run_name} {'.'.join(path)}: "
                                                 f"{theirs[path]:.6g} there, {mine[path]:.6g} here")
      else:
        difference, where = 0.0, ""
      identical += difference == 0
      largest = max(largest, (difference, where), key=lambda item: item[0])
  if not compared:
    return ""
  return (f" Of the {compared} finished runs that report also has, {identical} reproduce every "
          "number it recorded for them exactly (timings aside)"
          + (f"; the largest relative difference of any number is {largest[0]:.2g}, in "
             f"{largest[1]}." if largest[0] else "."))


def timing_sentence(timing: dict | None) -> str:
  """The header's sentence on the wall time of the sweep invocations that ran the runs."""
  if not timing:
    return ""
  parts = [f"{r['wall_seconds'] / 60:.0f} min for {r['runs_run']} of {r['runs_planned']} "
           f"planned runs ({r['processes']} worker processes on {r['cpu_count']} cores of an "
           f"{r['processor']}, load average {r['load_average_at_start']:.1f} at its start, "
           f"finished {r['finished']})" for r in timing["invocations"]]
  if len(parts) == 1:
    return f" Wall time of the sweep invocation that ran the runs: {parts[0]}."
  total = sum(r["wall_seconds"] for r in timing["invocations"]) / 60
  return (f" Wall time of the {len(parts)} sweep invocations that ran runs in this workdir, in "
          f"order: {'; '.join(parts)}: {total:.0f} min in all (a run done again counts again).")


def load_timing(directory: str) -> dict | None:
  """`directory`'s `TIMING_FILE` (a workdir, or exported results), or None: `{'invocations':
  [record, ...]}`, one record per invocation that ran something (a file holding one record, as
  written before the history was kept, reads as a history of one)."""
  path = os.path.join(directory, TIMING_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as file:
    timing = json.load(file)
  return timing if "invocations" in timing else {"invocations": [timing]}


def exported_directory(report_dir: str) -> str:
  return os.path.join(report_dir, "runs")


def export_results(results: dict[str, list[dict]], config, report_dir: str,
                   timing: dict | None = None) -> None:
  """Writes every result (by experiment, in the given order: the report's), the config and the
  sweep's timing under `<report_dir>/runs/`, replacing what an earlier report left there."""
  directory = exported_directory(report_dir)
  os.makedirs(directory, exist_ok=True)
  for name in os.listdir(directory):
    if name.endswith(".json"):
      os.remove(os.path.join(directory, name))
  for experiment, group in results.items():
    with open(os.path.join(directory, f"{experiment}.json"), "w") as file:
      json.dump(group, file, indent=0)
  with open(os.path.join(directory, "config.json"), "w") as file:
    file.write(config.to_json(indent=1))
  if timing:
    with open(os.path.join(directory, TIMING_FILE), "w") as file:
      json.dump(timing, file, indent=1)


def load_exported(report_dir: str, field: str = "report_dir"
                  ) -> tuple[dict[str, list[dict]], ml_collections.ConfigDict]:
  """The results and config that `export_results` wrote under `<report_dir>/runs/`; `field`
  names `report_dir` in the error for a directory without them."""
  directory = exported_directory(report_dir)
  config_path = os.path.join(directory, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"{field} {report_dir!r} has no exported results ({config_path} "
                            "is missing): run the sweep first")
  with open(config_path) as file:
    config = ml_collections.ConfigDict(_as_tuples(json.load(file)))
  results = {}
  for name in config.experiments:
    path = os.path.join(directory, f"{name}.json")
    if os.path.exists(path):
      with open(path) as file:
        results[name] = json.load(file)
  return results, config


def _as_tuples(tree):
  """JSON's lists back to the tuples the configs are written with (e.g. seeds, layer shifts)."""
  if isinstance(tree, dict):
    return {key: _as_tuples(value) for key, value in tree.items()}
  if isinstance(tree, list):
    return tuple(_as_tuples(value) for value in tree)
  return tree


def report_from_exported(report_dir: str, experiments: dict) -> str:
  """Rewrites `<report_dir>/README.md` and its figures from the exported results; no training."""
  results, config = load_exported(report_dir)
  return write_report(results, config, report_dir, experiments,
                      timing=load_timing(exported_directory(report_dir)))
