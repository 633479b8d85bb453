"""A sweep's runs and their results on disk.

A run is `<workdir>/runs/<experiment>/<name>/`; it is finished when its `result.json` exists
(written last, atomically), so an interrupted sweep redoes only unfinished runs. The worker
processes of one sweep invocation share its runs by claiming each before starting it (`claim`).
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple


class Run(NamedTuple):
  """One unit of the sweep: an experiment's setting at one seed."""
  experiment: str
  name: str  # unique within the experiment; the run's directory name
  seed: int
  options: dict  # JSON-serializable settings the experiment reads


def run_directory(workdir: str, run: Run) -> str:
  return os.path.join(workdir, "runs", run.experiment, run.name)


def result_path(workdir: str, run: Run) -> str:
  return os.path.join(run_directory(workdir, run), "result.json")


def is_finished(workdir: str, run: Run) -> bool:
  return os.path.exists(result_path(workdir, run))


def claim_path(workdir: str, run: Run, token: str) -> str:
  return os.path.join(run_directory(workdir, run), f"claim-{token}")


def claim(workdir: str, run: Run, token: str) -> bool:
  """Claims the run for the sweep invocation `token`: True for the first caller with this
  token (an exclusive create of `claim_path`), False for every later one. Claims under other
  tokens, left by an interrupted invocation, do not count."""
  os.makedirs(run_directory(workdir, run), exist_ok=True)
  try:
    os.close(os.open(claim_path(workdir, run, token), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
  except FileExistsError:
    return False
  return True


def save_result(workdir: str, run: Run, metrics: dict) -> dict:
  """Writes `{'run': ..., 'metrics': ...}` to the run's result.json (atomically) and returns it."""
  result = {"run": run._asdict(), "metrics": metrics}
  path = result_path(workdir, run)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w") as file:
    json.dump(result, file, indent=1)
  os.replace(path + ".tmp", path)
  return result


def load_result(workdir: str, run: Run) -> dict | None:
  """The run's result, or None if it has not finished."""
  if not is_finished(workdir, run):
    return None
  with open(result_path(workdir, run)) as file:
    return json.load(file)
