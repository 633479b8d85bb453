"""How the entry points (`launch.py`, `experiments/visualize.py`, `experiments.sweep`) end on an
expected error: one line on stderr (what, where, how to fix) and exit code 2; the traceback only
with `--debug` or the environment variable `CNN_JAX_DEBUG=1`."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

from absl import flags

from cnn_jax.train import checkpoint, workdir_lock

# What a user can fix from the message alone: config and input (ValueError), files, disk and
# permissions (OSError), checkpoints, the workdir lock, divergence (FloatingPointError).
EXPECTED_ERRORS = (ValueError, OSError, checkpoint.CheckpointError,
                   workdir_lock.WorkdirLockedError, FloatingPointError)


def define_debug_flag(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines `--debug`, which `exit_on_expected_errors` reads."""
  flags.DEFINE_bool("debug", False, "Show the full traceback of an expected error (also: "
                    "environment CNN_JAX_DEBUG=1).", flag_values=flag_values)


def exit_on_expected_errors(function: Callable, program: str,
                            flag_values: flags.FlagValues = flags.FLAGS) -> Callable:
  """`function`, but an `EXPECTED_ERRORS` exception ends the process with exit code 2 and the
  line `<program>: <Error>: <message> (--debug for the traceback)` on stderr; with `--debug`
  (defined by `define_debug_flag` in `flag_values`) or `CNN_JAX_DEBUG=1` it is raised as is."""

  @functools.wraps(function)
  def wrapped(*args, **kwargs):
    try:
      return function(*args, **kwargs)
    except EXPECTED_ERRORS as error:
      if os.environ.get("CNN_JAX_DEBUG") == "1" or flag_values["debug"].value:
        raise
      message = " ".join(str(error).split())  # one line, whatever the library's layout
      sys.stderr.write(f"{program}: {type(error).__name__}: {message} "
                       f"(--debug for the traceback)\n")
      sys.exit(2)

  return wrapped
