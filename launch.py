"""Runs one training job: `python launch.py --config=<config file>[:<arg>] --workdir=<dir>`.

Examples:
  python launch.py --config=experiments/configs/default.py --workdir=runs/default
  python launch.py --config=experiments/configs/default.py:model=resnet20,smoke --workdir=/tmp/r
  python launch.py --config=experiments/configs/default.py --config.model.blur=True \
      --config.learning_rate=0.2 --config.total_epochs=5 --workdir=runs/blur

Every config field can be set with `--config.<field>=<value>`, the model's too
(`--config.model.<field>`); `--config.model.name=<name>` switches to that model with its own
defaults (then the other `--config.model.*` flags apply). A misspelled field is refused with the
valid names.

Expected errors (a bad config or input, a damaged checkpoint or file, a full disk, a workdir
in use, a diverged run) end the process with exit code 2 and one line on stderr: what, where,
how to fix. The traceback is printed with --debug (or CNN_JAX_DEBUG=1).

Multi-host: start one process per host with the same flags plus --coordinator_address=host:port,
--num_processes and --process_id.
"""

import logging as python_logging
import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from cnn_jax import runtime, train
from cnn_jax.train import command_line, configuration

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS, argv: list[str] | None = None) -> None:
  """Defines launch.py's flags in `flag_values` (`argv`: the command line the config overrides
  are read from; default sys.argv)."""
  config_flags.DEFINE_config_file("config", None, "Training config file (and :argument).",
                                  flag_values=flag_values, lock_config=True, sys_argv=argv)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the report.",
                      flag_values=flag_values)
  flags.DEFINE_bool("overwrite", False, "Start over in --workdir, whatever its config: deletes "
                    "its checkpoints/, tensorboard/, metrics.jsonl, summary.json, report.md, "
                    "loss.png and accuracy.png (each logged) and replaces config.json. Without "
                    "it, a different config is refused and a finished run is left as it is.",
                    flag_values=flag_values)
  command_line.define_debug_flag(flag_values)
  flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0.",
                      flag_values=flag_values)
  flags.DEFINE_integer("num_processes", None, "Multi-host: the number of processes.",
                       flag_values=flag_values)
  flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.",
                       flag_values=flag_values)
  flags.mark_flags_as_required(["config", "workdir"], flag_values=flag_values)


# Libraries whose INFO lines would bury the progress lines; their warnings still show.
QUIET_LIBRARIES = ("/orbax/", "/tensorflow_datasets/", "/jax/_src/xla_bridge")


class QuietLibraries(python_logging.Filter):
  """Drops INFO records logged from inside `QUIET_LIBRARIES`, and the tracebacks of their
  warnings and errors unless `keep_tracebacks`: a library's background thread logs the failure
  it then raises to us (e.g. orbax on a full disk), and that error reaches the user as one line
  (`command_line.exit_on_expected_errors`)."""

  def __init__(self, keep_tracebacks: bool = False):
    super().__init__()
    self.keep_tracebacks = keep_tracebacks

  def filter(self, record):
    from_library = any(part in record.pathname for part in QUIET_LIBRARIES)
    if from_library and record.levelno >= python_logging.WARNING and not self.keep_tracebacks:
      record.exc_info, record.exc_text = None, None
    return record.levelno >= python_logging.WARNING or not from_library


def main(argv):
  runtime.setup()  # Re-executes with the malloc tunables; XLA:CPU flags; TensorFlow off GPUs.
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(
      QuietLibraries(keep_tracebacks=FLAGS.debug or os.environ.get("CNN_JAX_DEBUG") == "1"))
  if FLAGS.coordinator_address:
    if FLAGS.num_processes is None or FLAGS.process_id is None:
      raise app.UsageError("--coordinator_address needs --num_processes and --process_id, got "
                           f"{FLAGS.num_processes} and {FLAGS.process_id}")
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  logging.info("JAX process %d of %d, %d local devices of %d: %s", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir, overwrite=FLAGS.overwrite)


if __name__ == "__main__":
  define_flags()
  app.run(command_line.exit_on_expected_errors(main, "launch.py"),
          flags_parser=configuration.parse_flags_or_exit)
