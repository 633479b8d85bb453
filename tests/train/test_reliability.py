"""Nothing lost, nothing silent: the workdir lock, read-only readers, divergence, records."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cnn_jax.train import checkpoint, loop, restore_for_inference, train_and_evaluate
from cnn_jax.train.workdir_lock import WorkdirLockedError, lock_workdir
from experiments.configs import default


def smoke_config(**fields):
  config = default.get_config("smoke")
  config.update(fields)
  return config


def test_a_second_training_in_a_locked_workdir_is_refused_naming_the_holder(tmp_path):
  workdir = str(tmp_path)
  with lock_workdir(workdir):
    with pytest.raises(WorkdirLockedError, match=rf"in use by pid {os.getpid()} on .*another "
                                                 r"--workdir"):
      train_and_evaluate(smoke_config(), workdir)
  assert not os.path.exists(os.path.join(workdir, "config.json"))


def test_the_lock_of_a_killed_process_is_released_by_the_os(tmp_path):
  workdir = str(tmp_path)
  holder = subprocess.Popen(
      [sys.executable, "-c", textwrap.dedent(f"""
          import sys, time
          from cnn_jax.train.workdir_lock import lock_workdir
          lock = lock_workdir({workdir!r})
          print("locked", flush=True)
          time.sleep(60)
          """)], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(WorkdirLockedError, match=rf"in use by pid {holder.pid} "):
      lock_workdir(workdir)
  finally:
    holder.kill()  # SIGKILL: no clean-up code of the holder runs
    holder.wait()
  lock_workdir(workdir).close()


def test_a_reader_creates_deletes_and_cleans_nothing(tmp_path):
  workdir = str(tmp_path)
  loop.prepare_workdir(smoke_config(), workdir, overwrite=False)
  with pytest.raises(FileNotFoundError, match="no checkpoint in .*checkpoints"):
    restore_for_inference(workdir)
  assert not os.path.exists(checkpoint.checkpoint_directory(workdir))
  # A save in progress of a training in this workdir: orbax's temporary directory.
  in_progress = os.path.join(checkpoint.checkpoint_directory(workdir), "8.orbax-checkpoint-tmp")
  os.makedirs(in_progress)
  with pytest.raises(FileNotFoundError, match="no checkpoint in"):
    restore_for_inference(workdir)
  assert os.path.isdir(in_progress)
