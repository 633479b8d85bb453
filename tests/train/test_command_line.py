import os
import subprocess
import sys

import pytest
from absl import flags

from cnn_jax.train import checkpoint, command_line


def _flag_values(debug: bool) -> flags.FlagValues:
  flag_values = flags.FlagValues()
  command_line.define_debug_flag(flag_values)
  flag_values(["program"] + (["--debug"] if debug else []))
  return flag_values


def _raise(error):
  def function():
    raise error
  return function


@pytest.mark.parametrize("error", [ValueError("config.x must be > 0,\n  got -1"),
                                   FileNotFoundError("no run in workdir 'w'"),
                                   checkpoint.CorruptCheckpointError("step 3: checksum")])
def test_an_expected_error_is_one_line_and_exit_code_2(error, capsys, monkeypatch):
  monkeypatch.delenv("CNN_JAX_DEBUG", raising=False)
  wrapped = command_line.exit_on_expected_errors(_raise(error), "tool.py", _flag_values(False))
  with pytest.raises(SystemExit) as exit_info:
    wrapped()
  assert exit_info.value.code == 2
  stderr = capsys.readouterr().err
  assert stderr.count("\n") == 1 and stderr.startswith(f"tool.py: {type(error).__name__}: ")
  assert " ".join(str(error).split()) in stderr and "--debug" in stderr


def test_debug_and_unexpected_errors_keep_the_traceback(monkeypatch):
  monkeypatch.delenv("CNN_JAX_DEBUG", raising=False)
  with pytest.raises(ValueError):
    command_line.exit_on_expected_errors(_raise(ValueError("x")), "t", _flag_values(True))()
  monkeypatch.setenv("CNN_JAX_DEBUG", "1")
  with pytest.raises(ValueError):
    command_line.exit_on_expected_errors(_raise(ValueError("x")), "t", _flag_values(False))()
  monkeypatch.delenv("CNN_JAX_DEBUG")
  with pytest.raises(RuntimeError):  # a bug, not the user's mistake: the traceback stays
    command_line.exit_on_expected_errors(_raise(RuntimeError("x")), "t", _flag_values(False))()


def test_visualize_on_a_workdir_without_checkpoints_prints_one_line(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  result = subprocess.run(
      [sys.executable, os.path.join(root, "experiments", "visualize.py"),
       f"--workdir={tmp_path}"], capture_output=True, text=True, timeout=300,
      env={**os.environ, "CNN_JAX_DEBUG": "0", "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(
      f"visualize.py: FileNotFoundError: no checkpoint in {tmp_path}")
