"""Runs the experiment sweep and writes its report.

    python -m experiments.sweep --workdir=runs/sweep                      # the default sweep
    python -m experiments.sweep --workdir=/tmp/smoke --config=experiments/configs/exp_sweep.py:smoke
    python -m experiments.sweep --workdir=runs/sweep --report_only   # report what has finished
    python -m experiments.sweep --report_only --report_dir=experiments/results  # no workdir:
        # rewrite a report and its figures from the results exported beside it (no training)
    python -m experiments.sweep --workdir=runs/sweep --import_results=experiments/results ...
        # start from the committed results: run only what the config adds to them

Every run's result goes to `<workdir>/runs/<experiment>/<run>/result.json`; finished runs are
skipped, so rerunning resumes an interrupted sweep (an unfinished run restarts: runs are short
and keep no checkpoint). Compiled XLA programs are kept in `<workdir>/jax_cache` (JAX's
persistent compilation cache): runs that differ only in their seed compile the same programs, so
every seed after the first, and a resumed sweep, skips most of the compilation. At the end
`<workdir>/report/README.md` and its PNGs are (re)written from all finished runs. Runs go seed
by seed (every experiment at the first seed, then the next), so a sweep cut short still reports
every experiment. `--report_dir` puts the report elsewhere (`make sweep`: `experiments/results`);
beside it go the results it was made from, as small JSON (see `experiments.report`).

`--processes=N` runs the sweep in N worker processes (`make sweep`: 2), each taking the next
unfinished run of the plan that no other has claimed (`runs.claim`: a file in the run's
directory named for the invocation), so runs of unequal length spread evenly over the workers;
the parent writes the report once they have all finished. A run's small batches leave much of
a core idle (XLA:CPU finds little to parallelize in them), so two workers on 2 cores finish
sooner than one, provided each worker's oneDNN OpenMP team gets only its share of the cores
(`OMP_NUM_THREADS`, set for the workers unless it is set already).
The wall time of every invocation that ran something, with its runs, worker count and CPU, goes
to `<workdir>/sweep_timing.json` and into the report's header, beside each experiment's summed
compute.

Experiment 1 also runs on CIFAR-10 when TFDS's 'cifar10' is prepared in `--config.data_dir`
('' = TFDS's default, `~/tensorflow_datasets`); otherwise its CIFAR-10 runs are not planned, the
sweep logs how to prepare it, and the report says so. A dataset is read into memory once, before
its first unfinished run. An expected error (a bad config value, a missing exported result)
ends with one line on stderr and exit code 2; --debug shows the traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import jax
from absl import app, flags, logging
from flax import traverse_util
from ml_collections import config_flags

from cnn_jax import runtime
from cnn_jax.train import command_line, configuration

from experiments import (augmentation, depth, equivariance, learned_invariance, priors, report,
                         rotation)
from experiments.configs.exp_sweep import EXPERIMENT_NAMES
from experiments.in_memory_training import DATASET, load_dataset, not_prepared_message
from experiments.model_zoo import check_names
from experiments.runs import Run, claim, claim_path, is_finished, load_result, save_result

EXPERIMENTS = {module.NAME: module for module in (equivariance, augmentation, learned_invariance,
                                                  priors, depth, rotation)}


def use_compilation_cache(directory: str) -> None:
  """Makes JAX keep every compiled program in `directory` and look there before compiling.

  The thresholds are 0 because the sweep's programs are small and quick to compile one by one
  (0.05-0.5 s each) but many: a run compiles its train step and every metric, and the same
  programs again for each seed. Must run before the first compilation of the process.
  """
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def validate_sweep(config) -> None:
  """Raises ValueError for unknown experiment, dataset, model or augmentation names, and for
  empty seeds."""
  check_names("config.experiments", config.experiments, EXPERIMENT_NAMES)
  for name in config.experiments:
    EXPERIMENTS[name].validate(config)
  for field in ("batch_size", "eval_images", "layer_images"):
    if not isinstance(config[field], int) or config[field] < 1:
      raise ValueError(f"config.{field} must be an int >= 1, got {config[field]!r}")


def plan_sweep(config) -> list[Run]:
  """All runs of the selected experiments (`report.planned_runs`: where `config.lengths_from`
  names a report, each cell it has at its reported length only), ordered seed by seed, then
  experiment by experiment."""
  return report.planned_runs(config, EXPERIMENTS)


def run_sweep(config, workdir: str, *, report_only: bool = False,
              report_dir: str | None = None,
              worker: str | None = None) -> dict[str, list[dict]]:
  """Runs every unfinished run of the sweep, then writes the report.

  Args:
    config: an `experiments/configs/exp_sweep.py` config.
    workdir: where runs and the report go.
    report_only: run nothing; report the runs that have finished (e.g. while a sweep runs).
    report_dir: where the report goes; None: `<workdir>/report`.
    worker: the invocation's token: run each unfinished run this process claims first
      (`runs.claim`, in plan order) and write no report (the process that started the workers
      writes it).

  Returns:
    The finished results by experiment name.
  """
  validate_sweep(config)
  if augmentation.NAME in config.experiments:
    for name in augmentation.absent_datasets(config):
      logging.warning("Experiment %s skips %s: %s.", augmentation.NAME, name,
                      not_prepared_message(name, config.data_dir))
  runs = plan_sweep(config)
  datasets = {}
  start = time.time()
  for index, run in enumerate(runs, start=1):
    if (report_only or is_finished(workdir, run)
        or (worker is not None and not claim(workdir, run, worker))):
      continue
    name = run.options.get("dataset", DATASET)
    if name not in datasets:
      datasets[name] = load_dataset(name, config.data_dir)
    run_start = time.time()
    metrics = EXPERIMENTS[run.experiment].execute(run, config, datasets[name])
    metrics["wall_time_seconds"] = time.time() - run_start
    save_result(workdir, run, metrics)
    if worker is not None:
      os.remove(claim_path(workdir, run, worker))
    logging.info("[%d/%d] %s/%s done in %.1f s (sweep %.0f s)", index, len(runs), run.experiment,
                 run.name, metrics["wall_time_seconds"], time.time() - start)
  results = {}
  for run in runs:
    result = load_result(workdir, run)
    if result is not None:
      results.setdefault(run.experiment, []).append(result)
  if worker is not None:
    return results
  report.write_report(results, config, report_dir or os.path.join(workdir, "report"),
                      EXPERIMENTS, timing=report.load_timing(workdir))
  return results


def import_results(config, workdir: str, report_dir: str) -> int:
  """Copies into `workdir` the results exported beside a report (`report.export_results`) of every
  run of the sweep's plan that has not finished there; returns how many it copied.

  An exported run counts as the planned one when its experiment, name, seed and options are
  equal. Run names record the options, not every config field: the config fields that differ
  from the exported config are logged, and results made under settings changed since must not
  be imported. The sweep's timing history comes along where the workdir has none.
  """
  exported, exported_config = report.load_exported(report_dir, field="--import_results")
  os.makedirs(workdir, exist_ok=True)
  before, now = (traverse_util.flatten_dict(c.to_dict(), sep=".")
                 for c in (exported_config, config))
  changed = sorted(key for key, value in now.items() if before.get(key) != value)
  if changed:
    logging.warning("Importing results made under a config that differs in %s.",
                    ", ".join(changed))
  by_run = {json.dumps(result["run"], sort_keys=True): result
            for group in exported.values() for result in group}
  imported = 0
  for run in plan_sweep(config):
    result = by_run.get(json.dumps(run._asdict(), sort_keys=True))
    if result is not None and not is_finished(workdir, run):
      save_result(workdir, run, result["metrics"])
      imported += 1
  timing = report.load_timing(report.exported_directory(report_dir))
  if timing and report.load_timing(workdir) is None:
    with open(os.path.join(workdir, report.TIMING_FILE), "w") as file:
      json.dump(timing, file, indent=1)
  return imported


def record_timing(workdir: str, seconds: float, runs_run: int, runs_planned: int,
                  processes: int, load_average: float) -> dict:
  """Adds to `<workdir>/sweep_timing.json` the wall time of an invocation that ran something,
  what it ran and on which machine (the report's header states every invocation); returns the
  whole history, `{'invocations': [...]}`."""
  record = {"wall_seconds": seconds, "runs_run": runs_run, "runs_planned": runs_planned,
            "processes": processes, "processor": runtime.cpu_model(),
            "cpu_count": os.cpu_count(), "load_average_at_start": load_average,
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
  timing = report.load_timing(workdir) or {"invocations": []}
  timing["invocations"].append(record)
  path = os.path.join(workdir, report.TIMING_FILE)
  with open(path + ".tmp", "w") as file:
    json.dump(timing, file, indent=1)
  os.replace(path + ".tmp", path)
  return timing


FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", os.path.join(os.path.dirname(__file__), "configs",
                                                       "exp_sweep.py"),
                                "Sweep config file (and :argument, e.g. ':smoke').",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for the runs and the report.")
flags.DEFINE_bool("report_only", False,
                  "Only (re)write the report: from the finished runs in --workdir, or without "
                  "--workdir from the results exported in --report_dir.")
flags.DEFINE_string("report_dir", None, "Where the report goes; default <workdir>/report.")
flags.DEFINE_string("import_results", None,
                    "Before running, copy into --workdir the results exported in this report "
                    "directory (e.g. experiments/results) of every planned run unfinished there, "
                    "so that a sweep extended on a fresh clone reruns nothing it has. Only for "
                    "results made under the current settings (see import_results).")
flags.DEFINE_bool("compilation_cache", True,
                  "Keep compiled programs in <workdir>/jax_cache and reuse them.")
flags.DEFINE_integer("processes", 1, "Worker processes that share the runs (see above).")
flags.DEFINE_string("worker", None, "Set by --processes in each worker: the invocation's "
                    "token; claim and run unfinished runs, write no report.")
command_line.define_debug_flag()


def worker_environment(processes: int) -> dict[str, str]:
  """The workers' environment: this one, with oneDNN's OpenMP team sized to a worker's share of
  the cores (`OMP_NUM_THREADS`, unless it is set): N workers that each start a team as large as
  the machine oversubscribe its cores."""
  threads = max(1, (os.cpu_count() or 1) // processes)
  return {"OMP_NUM_THREADS": str(threads)} | dict(os.environ)


def run_workers(processes: int, token: str) -> None:
  """Runs this command in `processes` workers (`--worker=token`) and waits for all of them;
  exits with one line naming the workers that failed (each printed its own error)."""
  # absl keeps the last value of a repeated flag: these override the parent's, however written.
  workers = [subprocess.Popen([sys.executable, "-m", "experiments.sweep", *sys.argv[1:],
                               "--processes=1", f"--worker={token}"],
                              env=worker_environment(processes))
             for _ in range(processes)]
  failed = [index for index, worker in enumerate(workers) if worker.wait() != 0]
  if failed:
    raise SystemExit(f"experiments.sweep: workers {failed} of {processes} failed (their output "
                     "is above); rerun to resume")


def main(argv):
  runtime.setup()
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.workdir is None and not (FLAGS.report_only and FLAGS.report_dir):
    raise app.UsageError("--workdir is required (or --report_only with --report_dir)")
  if FLAGS.workdir is None:
    path = report.report_from_exported(FLAGS.report_dir, EXPERIMENTS)
  else:
    if FLAGS.processes < 1:
      raise ValueError(f"--processes must be an int >= 1, got {FLAGS.processes}")
    worker = FLAGS.worker or None
    if FLAGS.import_results and worker is None:
      logging.info("Imported %d results from %s.",
                   import_results(FLAGS.config, FLAGS.workdir, FLAGS.import_results),
                   FLAGS.import_results)
    trains_here = not FLAGS.report_only and (worker is not None or FLAGS.processes == 1)
    if trains_here and FLAGS.compilation_cache:
      use_compilation_cache(os.path.join(FLAGS.workdir, "jax_cache"))
    if worker is None and not FLAGS.report_only:
      validate_sweep(FLAGS.config)  # one error line here rather than one per worker
      planned = plan_sweep(FLAGS.config)
      unfinished = sum(not is_finished(FLAGS.workdir, run) for run in planned)
      load_average, start = os.getloadavg()[0], time.time()
      token = uuid.uuid4().hex
      if FLAGS.processes > 1:
        run_workers(FLAGS.processes, token)
      else:
        run_sweep(FLAGS.config, FLAGS.workdir, worker=token)
      if unfinished:
        record_timing(FLAGS.workdir, time.time() - start, unfinished, len(planned),
                      FLAGS.processes, load_average)
    results = run_sweep(FLAGS.config, FLAGS.workdir, report_only=worker is None,
                        report_dir=FLAGS.report_dir, worker=worker)
    if worker is not None:
      logging.info("Worker %s: %d finished runs in the workdir.", FLAGS.worker,
                   sum(len(group) for group in results.values()))
      return
    path = os.path.join(FLAGS.report_dir or os.path.join(FLAGS.workdir, "report"), "README.md")
  logging.info("Report: %s", path)


if __name__ == "__main__":
  app.run(command_line.exit_on_expected_errors(main, "experiments.sweep"),
          flags_parser=configuration.parse_flags_or_exit)
