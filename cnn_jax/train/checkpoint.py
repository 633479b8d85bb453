"""Checkpoints with orbax: periodic, atomic, keeping the last K and the best by test accuracy.

What is saved is the host `TrainState` as a plain nested dict of numpy arrays
(`flax.serialization.to_state_dict`): no device axis and no sharding, so a checkpoint written with
N devices restores on M devices. Orbax writes each step into a temporary directory and renames it
only when complete, so a crash in the middle of a save leaves the previous checkpoints intact.
"""

from __future__ import annotations

import json
import os
import zlib

import jax
import numpy as np
from absl import logging
import orbax.checkpoint as ocp
from flax import serialization
from orbax.checkpoint import checkpoint_managers

from cnn_jax.train.state import TrainState

BEST_METRIC = "test_accuracy"
# A crc32 of every saved array's bytes, stored beside the metrics (exact as a float) at save time
# and checked at restore: a flipped byte is refused instead of restored silently.
CHECKSUM = "state_crc32"


def state_checksum(state_dict) -> int:
  """crc32 of the bytes of every leaf of `state_dict`, in `jax.tree.leaves` order."""
  crc = 0
  for leaf in jax.tree.leaves(state_dict):
    crc = zlib.crc32(np.ascontiguousarray(leaf).tobytes(), crc)
  return crc


class CheckpointError(RuntimeError):
  """A checkpoint is missing, corrupt or does not match the model being restored."""


class CorruptCheckpointError(CheckpointError):
  """A checkpoint's files cannot be read or do not match their checksum."""


def checkpoint_directory(workdir: str) -> str:
  """`<workdir>/checkpoints`, absolute (orbax requires absolute paths)."""
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def create_checkpoint_manager(workdir: str, keep: int, *,
                              read_only: bool = False) -> ocp.CheckpointManager:
  """A manager for `<workdir>/checkpoints` that keeps the `keep` latest steps and the best one.

  Args:
    workdir: the run's directory.
    keep: how many of the most recent checkpoints to keep, >= 1. The checkpoint with the highest
      `BEST_METRIC` is kept in addition.
    read_only: for readers of a run (inference, reports): the manager creates, deletes and cleans
      nothing, so a training saving in that workdir meanwhile is left alone. The training
      itself (which holds the workdir's lock) deletes the unfinished saves of a crashed run.

  A step whose metrics file is not JSON (orbax would fail on it for every step) is renamed to
  `<step>.corrupt` with a warning, or with `read_only` raises `CorruptCheckpointError` naming
  the file.
  """
  if keep < 1:
    raise ValueError(f"config.keep_checkpoints must be >= 1, got {keep!r}")
  for path, error in unreadable_metrics(checkpoint_directory(workdir)):
    step_directory = os.path.dirname(os.path.dirname(path))
    if read_only:
      raise CorruptCheckpointError(
          f"checkpoint {step_directory} is corrupt: its metrics file {path} is not JSON "
          f"({error}). Rename or delete that step directory to use the others.")
    aside = f"{step_directory}.corrupt"
    os.replace(step_directory, aside)
    logging.warning("CORRUPT CHECKPOINT set aside as %s: its metrics file is not JSON (%s).",
                    aside, error)
  best_metric = lambda metrics: metrics[BEST_METRIC]
  preservation = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(n=keep),
      checkpoint_managers.BestN(get_metric_fn=best_metric, n=1,
                                keep_checkpoints_without_metrics=False),
  ])
  # best_fn/best_mode only make `manager.best_step()` answer; the policy above decides deletion.
  options = ocp.CheckpointManagerOptions(preservation_policy=preservation, best_fn=best_metric,
                                         best_mode="max", create=not read_only,
                                         cleanup_tmp_directories=not read_only,
                                         read_only=read_only,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(checkpoint_directory(workdir), options=options)


def unreadable_metrics(directory: str) -> list[tuple[str, str]]:
  """`(path, reason)` of every committed step's metrics file under the checkpoint `directory`
  that is not valid JSON (a truncated or overwritten file)."""
  if not os.path.isdir(directory):
    return []
  unreadable = []
  for name in sorted(os.listdir(directory)):
    path = os.path.join(directory, name, "metrics", "metrics")
    if not name.isdigit() or not os.path.isfile(path):
      continue
    try:
      with open(path, "rb") as file:
        json.loads(file.read())
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError both are
      unreadable.append((path, f"{type(error).__name__}: {error}"))
  return unreadable


def save_checkpoint(manager: ocp.CheckpointManager, state: TrainState, metrics: dict) -> None:
  """Saves the host `state` (numpy leaves, no device axis) under its step, with its metrics.

  Raises:
    FloatingPointError: a metric or a float array of `state` holds NaN or infinity: a
      diverged state is never saved (so never the best one, and retention, which keeps the
      latest, never deletes the last finite one for it).
  """
  state_dict = serialization.to_state_dict(jax.tree.map(np.asarray, state))
  bad = sorted(name for name, value in metrics.items() if not np.isfinite(value))
  bad += [jax.tree_util.keystr(path) for path, leaf in
          jax.tree_util.tree_leaves_with_path(state_dict)
          if np.issubdtype(leaf.dtype, np.inexact) and not np.isfinite(leaf).all()]
  if bad:
    raise FloatingPointError(f"not saving the checkpoint of step {int(state.step)} in "
                             f"{manager.directory}: non-finite values in {bad[:5]}")
  manager.save(int(state.step), args=ocp.args.StandardSave(state_dict),
               metrics={**{k: float(v) for k, v in metrics.items()},
                        CHECKSUM: float(state_checksum(state_dict))})
  manager.wait_until_finished()


def restore_state_dict(manager: ocp.CheckpointManager, step: int) -> dict:
  """The raw nested dict saved at `step`, with numpy leaves; CheckpointError if unreadable or
  if its arrays do not match the checksum recorded when it was saved."""
  if step not in manager.all_steps():
    raise CheckpointError(f"no checkpoint for step {step} in {manager.directory}; available "
                          f"steps: {list(manager.all_steps())}")
  try:
    restored = manager.restore(step, args=ocp.args.StandardRestore())
  except Exception as error:  # orbax raises many types for damaged files; name the place.
    raise CorruptCheckpointError(
        f"checkpoint at {manager.directory}/{step} is corrupt or unreadable "
        f"({type(error).__name__}: {error}). Delete that step directory to fall back to an "
        f"earlier checkpoint, or start over with overwrite=True.") from error
  restored = jax.tree.map(np.asarray, restored)
  expected = (manager.metrics(step) or {}).get(CHECKSUM)
  if expected is not None and state_checksum(restored) != int(expected):
    raise CorruptCheckpointError(
        f"checkpoint at {manager.directory}/{step} is corrupt: its arrays' crc32 is "
        f"{state_checksum(restored)}, saved {int(expected)}. Delete that step directory to fall "
        f"back to an earlier checkpoint, or start over with overwrite=True.")
  return restored


def set_aside(manager: ocp.CheckpointManager, step: int) -> str:
  """Renames the step directory `<step>` to `<step>.corrupt` (kept for inspection, no longer a
  checkpoint, so the step can be saved again); returns the new path."""
  path = os.path.join(str(manager.directory), str(step))
  aside = f"{path}.corrupt"
  os.replace(path, aside)
  manager.reload()
  return aside


def restore_train_state(manager: ocp.CheckpointManager, template: TrainState,
                        step: int) -> TrainState:
  """The `TrainState` saved at `step`, structured like `template` (host numpy arrays)."""
  state_dict = restore_state_dict(manager, step)
  try:
    restored = serialization.from_state_dict(template, state_dict)
  except (KeyError, ValueError) as error:
    raise CheckpointError(f"checkpoint at {manager.directory}/{step} does not match the model "
                          f"and optimizer of this config: {error}") from error
  mismatched = [
      f"{jax.tree_util.keystr(path)}: saved {np.shape(saved)}, expected {np.shape(expected)}"
      for (path, saved), expected in zip(jax.tree_util.tree_leaves_with_path(restored),
                                          jax.tree.leaves(template))
      if np.shape(saved) != np.shape(expected)]
  if mismatched:
    raise CheckpointError(f"checkpoint at {manager.directory}/{step} has other shapes than this "
                          f"config's model: {'; '.join(mismatched[:5])}")
  return restored
