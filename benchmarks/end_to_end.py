"""What the oneDNN lowering buys whole jobs: the default MNIST run and runs of the sweep.

Each job runs in its own process, once with oneDNN's convolutions (`CNN_JAX_ONEDNN=1`, the
default 'auto' lowering uses them) and once without (`CNN_JAX_ONEDNN=0`: 'auto' falls back to
XLA's and the tiled lowering), the two in alternating order on each repeat, so a machine that
slows down during the benchmark hurts both. Jobs:
* `make run`'s training (`launch.py --config=experiments/configs/default.py`): its own
  report of train images/s (steps after the first, compilation excluded) and the process's
  wall time (compilation, data loading and evaluation included);
* single runs of the sweep (`experiments.sweep`'s `execute` of one planned run, as one worker
  process with the machine to itself): wall time of the run, compilation included.

Writes `benchmarks/results/<time>-end_to_end.json` and `.md` (the CPU model and load recorded).

    .venv/bin/python -m benchmarks.end_to_end [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import environment
from cnn_jax import runtime

RESULTS_DIRECTORY = pathlib.Path(__file__).parent / "results"
REPOSITORY = pathlib.Path(__file__).parent.parent
# (experiment, run name) of the sweep's default config: one per kind of network it trains.
SWEEP_RUNS = (("augmentation", "cnn_none_seed0"),             # small CNN, 15 epochs of digits
              ("rotation", "cnn_bn_none_seed0"),              # 3-conv CNN + batch norm, 80 epochs
              ("learned_invariance", "pretrained_classes5_seed0"))  # 56 x 56 canvas CNN
# `cnn_jax.train.loop`'s last line: "Done: test accuracy ..., 15 s, 7206 train images/s".
DONE_LINE = re.compile(r"Done: .*, ([0-9.]+) s, ([0-9.]+) train images/s")


def time_sweep_run(experiment: str, name: str) -> dict:
  """Runs one planned run of the default sweep config in this process; its wall time."""
  from experiments import sweep
  from experiments.configs import exp_sweep
  from experiments.in_memory_training import DATASET, load_dataset
  config = exp_sweep.get_config()
  run = next(run for run in sweep.EXPERIMENTS[experiment].plan(config) if run.name == name)
  dataset = load_dataset(run.options.get("dataset", DATASET), config.data_dir)
  start = time.perf_counter()
  sweep.EXPERIMENTS[experiment].execute(run, config, dataset)
  return {"seconds": time.perf_counter() - start}


def run_job(job: tuple[str, ...], onednn: bool) -> dict:
  """One job in a fresh process with oneDNN on or off: its timings."""
  env = dict(os.environ, CNN_JAX_ONEDNN="1" if onednn else "0")
  if job[0] == "default_run":
    with tempfile.TemporaryDirectory() as workdir:
      start = time.perf_counter()
      output = subprocess.run(
          [sys.executable, "launch.py", "--config=experiments/configs/default.py",
           f"--workdir={workdir}"], cwd=REPOSITORY, env=env, capture_output=True, text=True,
          check=True)
      seconds = time.perf_counter() - start
    match = DONE_LINE.search(output.stdout + output.stderr)
    if match is None:
      raise RuntimeError("launch.py printed no 'Done: ..., N s, R train images/s' line")
    return {"seconds": seconds, "train_seconds": float(match[1]),
            "train_images_per_second": float(match[2])}
  output = subprocess.run([sys.executable, "-m", "benchmarks.end_to_end", "--sweep_run", *job],
                          cwd=REPOSITORY, env=env, capture_output=True, text=True, check=True)
  return json.loads(output.stdout.strip().splitlines()[-1])


def job_name(job: tuple[str, ...]) -> str:
  return "make run (default MNIST run)" if job[0] == "default_run" else f"sweep run {'/'.join(job)}"


def _cell(values: list[float]) -> str:
  """The median, then every repeat in brackets."""
  return f"{statistics.median(values):,.1f} [{', '.join(f'{value:,.1f}' for value in values)}]"


def markdown(results: dict) -> str:
  setup = results["environment"]
  lines = [f"End-to-end run {results['time']}: {setup['processor']}, {setup['cpu_count']} CPUs, "
           f"jax {setup['jax']}, oneDNN available: {setup['onednn_available']}, load average "
           f"{setup['load_average_1min']:.1f} at start, {results['load_average_at_end']:.1f} at "
           f"end; {results['repeats']} repeats, medians (each repeat in brackets).", "",
           "| job | measure | with oneDNN | without oneDNN | speed-up |", "|---|---|---|---|---|"]
  for name, figures in results["jobs"].items():
    measures = [("seconds", "wall s", False)]
    if "train_images_per_second" in figures["onednn"][0]:
      measures = [("train_images_per_second", "train images/s", True),
                  ("train_seconds", "training s", False)] + measures
    for key, label, higher_is_better in measures:
      on = [repeat[key] for repeat in figures["onednn"]]
      off = [repeat[key] for repeat in figures["xla"]]
      ratio = statistics.median(on) / statistics.median(off)
      speedup = ratio if higher_is_better else 1 / ratio
      lines.append(f"| {name} | {label} | {_cell(on)} | {_cell(off)} | {speedup:.2f}x |")
  return "\n".join(lines) + "\n"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=2, help="runs of each job per setting")
  parser.add_argument("--sweep_run", nargs=2, metavar=("EXPERIMENT", "RUN"),
                      help="(internal) time one sweep run in this process and print JSON")
  arguments = parser.parse_args()
  if arguments.repeats < 1:
    parser.error(f"--repeats must be an int >= 1, got {arguments.repeats}")
  runtime.setup()
  if arguments.sweep_run:
    print(json.dumps(time_sweep_run(*arguments.sweep_run)))
    return

  stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
  results = {"time": stamp, "environment": environment.describe(), "repeats": arguments.repeats,
             "jobs": {}}
  jobs = [("default_run",)] + list(SWEEP_RUNS)
  for repeat in range(arguments.repeats):
    for job in jobs:
      figures = results["jobs"].setdefault(job_name(job), {"onednn": [], "xla": []})
      for onednn in ((True, False) if repeat % 2 == 0 else (False, True)):
        timing = run_job(job, onednn)
        figures["onednn" if onednn else "xla"].append(timing)
        print(f"repeat {repeat + 1}/{arguments.repeats} {job_name(job)} "
              f"{'with' if onednn else 'without'} oneDNN: {timing['seconds']:.1f} s", flush=True)
  results["load_average_at_end"] = os.getloadavg()[0]
  RESULTS_DIRECTORY.mkdir(parents=True, exist_ok=True)
  path = RESULTS_DIRECTORY / f"{stamp}-end_to_end"
  path.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
  table = markdown(results)
  path.with_suffix(".md").write_text(table)
  print(table)


if __name__ == "__main__":
  main()
