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

from absl import logging


def metrics_path(workdir: str) -> str:
  return os.path.join(workdir, "metrics.jsonl")


def read_records(workdir: str) -> list[dict]:
  """All records of `<workdir>/metrics.jsonl`, in order ([] if the file does not exist)."""
  path = metrics_path(workdir)
  if not os.path.exists(path):
    return []
  with open(path) as file:
    return [json.loads(line) for line in file if line.strip()]


def truncate_records(workdir: str, last_step: int) -> None:
  """Drops the records after `last_step`: a resumed run rewrites what it repeats."""
  kept = [record for record in read_records(workdir) if record["step"] <= last_step]
  with open(metrics_path(workdir), "w") as file:
    file.writelines(json.dumps(record) + "\n" for record in kept)


def _finite_or_none(value) -> float | None:
  """JSON has no NaN or infinity: those are written as null."""
  value = float(value)
  return value if math.isfinite(value) else None


class MetricWriter:
  """Appends records to the JSONL file and to TensorBoard. Only the writing process makes one."""

  def __init__(self, workdir: str):
    # Imported here: it loads TensorFlow, which only the writing process needs.
    from flax.metrics import tensorboard
    self._path = metrics_path(workdir)
    self._summary_writer = tensorboard.SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: dict) -> None:
    """Appends `{'step': step, **metrics}` to the JSONL file and each scalar to TensorBoard."""
    record = {"step": int(step), **{name: _finite_or_none(value)
                                    for name, value in metrics.items()}}
    with open(self._path, "a") as file:
      file.write(json.dumps(record, allow_nan=False) + "\n")
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
