"""The metric records (JSONL), the duration format and the progress line."""

import math

import pytest

from cnn_jax.train import metrics


@pytest.mark.parametrize("seconds, text", [
    (0.0, "0:00:00"), (59.4, "0:00:59"), (59.6, "0:01:00"), (3725.0, "1:02:05"),
    (7199.0, "1:59:59"), (90061.0, "25:01:01"), (-3.0, "0:00:00")])
def test_durations_are_hours_minutes_and_seconds(seconds, text):
  assert metrics.format_duration(seconds) == text


@pytest.fixture
def logged_lines(monkeypatch):
  lines = []
  monkeypatch.setattr(metrics.logging, "info", lambda message, *args: lines.append(
      message % args if args else message))
  return lines


def test_progress_line_names_each_metric_and_the_time_left(logged_lines):
  record = {"train_loss": 0.312345, "train_accuracy": 0.9, "test_loss": 0.4,
            "test_accuracy": 0.875, "images_per_second": 812.4, "epoch": 2.0}
  metrics.log_progress(50, 200, record, 3725.0)
  assert logged_lines == ["step 50/200 | train_loss 0.3123 | train_accuracy 0.9000 | "
                          "test_loss 0.4000 | test_accuracy 0.8750 | images/s 812 | ETA 1:02:05"]


def test_progress_line_leaves_out_what_is_not_known(logged_lines):
  metrics.log_progress(3, 10, {"train_loss": 2.0}, math.inf)
  assert logged_lines == ["step 3/10 | train_loss 2.0000"]


def test_records_are_read_back_in_order_and_truncated_after_a_step(tmp_path):
  workdir = str(tmp_path)
  assert metrics.read_records(workdir) == []
  records = [{"step": step, "train_loss": 1.0 / step} for step in (1, 2, 3)]
  with open(metrics.metrics_path(workdir), "w") as file:
    file.writelines(f'{{"step": {r["step"]}, "train_loss": {r["train_loss"]!r}}}\n'
                    for r in records)
  assert metrics.read_records(workdir) == records
  metrics.truncate_records(workdir, 2)
  assert metrics.read_records(workdir) == records[:2]
