"""The default run (`make run`): the small CNN reaches >= 97% on the 1,000 held-out digits.

Started as a user would, without `GLIBC_TUNABLES`: launch.py re-executes itself with them.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_the_default_run_reaches_97_percent_test_accuracy(tmp_path):
  environment = {name: value for name, value in os.environ.items()
                 if name not in ("XLA_FLAGS", "GLIBC_TUNABLES")}
  result = subprocess.run(
      [sys.executable, "launch.py", "--config=experiments/configs/default.py",
       f"--workdir={tmp_path / 'default'}"],
      cwd=ROOT, env=environment, capture_output=True, text=True, timeout=1200)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / "default" / "summary.json") as file:
    summary = json.load(file)
  assert summary["test_accuracy"] >= 0.97, summary
