"""Where the numbers of a run go: `<workdir>/metrics.jsonl`, TensorBoard, and progress lines.

Every record is one JSON object per line with an integer 'step' and float metrics, e.g.
`{"step": 100, "train_loss": 0.31, "train_accuracy": 0.91, "images_per_second": 812.0}`.
The JSONL file is the source of truth (the report is drawn from it); TensorBoard gets the same
scalars under `<workdir>/tensorboard`.
"""

from __future__ import annotations

import json
import math
import os
import shutil

from absl import logging


def metrics_path(workdir: str) -> str:
  return os.path.join(workdir, "metrics.jsonl")


def read_records(workdir: str) -> list[dict]:
  """All records of `<workdir>/metrics.jsonl`, in order ([] if the file does not exist).

  A last line that is not JSON (a crash in the middle of writing it) is dropped with a warning.

  Raises:
    ValueError: a line before the last is not a JSON record (the message names the file).
  """
  path = metrics_path(workdir)
  if not os.path.exists(path):
    return []
  with open(path) as file:
    lines = [line for line in file if line.strip()]
  records = []
  for number, line in enumerate(lines, start=1):
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as error:
      if number < len(lines):
        raise ValueError(f"{path} line {number} is not a JSON record ({error}); repair or "
                         f"delete that line") from None
      logging.warning("Dropping the unfinished last line of %s (%s): %r", path, error,
                      line[:80])
  return records


def truncate_records(workdir: str, last_step: int) -> list[dict]:
  """Drops the records after `last_step` (and an unfinished last line): a resumed run rewrites
  what it repeats. Returns the records kept."""
  kept = [record for record in read_records(workdir) if record["step"] <= last_step]
  _write_durably(metrics_path(workdir), "".join(json.dumps(record) + "\n" for record in kept))
  return kept


def _write_durably(path: str, text: str) -> None:
  """Replaces the file `path` by `text` atomically (a crash leaves the old or the new file)."""
  temporary = path + ".tmp"
  with open(temporary, "w") as file:
    file.write(text)
    file.flush()
    os.fsync(file.fileno())
  os.replace(temporary, path)


def _finite_or_none(value) -> float | None:
  """JSON has no NaN or infinity: those are written as null."""
  value = float(value)
  return value if math.isfinite(value) else None


class MetricWriter:
  """Appends records to the JSONL file and to TensorBoard. Only the writing process makes one.

  TensorBoard event files cannot be truncated, so the writer starts `<workdir>/tensorboard` anew
  from `records` (those kept by `truncate_records`): after a resume it holds each step once.
  """

  def __init__(self, workdir: str, records: list[dict] = ()):
    # Imported here: it loads TensorFlow, which only the writing process needs.
    from flax.metrics import tensorboard
    self._path = metrics_path(workdir)
    directory = os.path.join(workdir, "tensorboard")
    shutil.rmtree(directory, ignore_errors=True)
    self._summary_writer = tensorboard.SummaryWriter(directory)
    for record in records:
      self._write_scalars(record["step"], {name: value for name, value in record.items()
                                           if name != "step" and value is not None})

  def write(self, step: int, metrics: dict) -> None:
    """Appends `{'step': step, **metrics}` to the JSONL file and each scalar to TensorBoard."""
    record = {"step": int(step), **{name: _finite_or_none(value)
                                    for name, value in metrics.items()}}
    with open(self._path, "a") as file:  # durable before the step's checkpoint is saved
      file.write(json.dumps(record, allow_nan=False) + "\n")
      file.flush()
      os.fsync(file.fileno())
    self._write_scalars(step, metrics)

  def _write_scalars(self, step: int, metrics: dict) -> None:
    for name, value in metrics.items():
      self._summary_writer.scalar(name, float(value), int(step))
    self._summary_writer.flush()

  def close(self) -> None:
    self._summary_writer.close()


def format_duration(seconds: float) -> str:
  """`3725.0 -> '1:02:05'`."""
  seconds = max(int(round(seconds)), 0)
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def log_progress(step: int, total_steps: int, metrics: dict, seconds_left: float) -> None:
  """One progress line: step, loss, accuracy, images/s and the estimated time to the end."""
  parts = [f"step {step}/{total_steps}"]
  for name in ("train_loss", "train_accuracy", "test_loss", "test_accuracy",
               "images_per_second"):
    if name in metrics:
      parts.append(f"{name} {metrics[name]:.4f}" if name != "images_per_second"
                   else f"images/s {metrics[name]:.0f}")
  if math.isfinite(seconds_left):
    parts.append(f"ETA {format_duration(seconds_left)}")
  logging.info(" | ".join(parts))
