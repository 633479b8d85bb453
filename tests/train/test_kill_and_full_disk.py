"""Real processes stopped the hard way: SIGKILL at random moments around the saves, and a disk
that fills up mid-run. Each case trains `launch.py` in subprocesses (tens of seconds): slow."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cnn_jax.train import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 12
# A checkpoint and a record at every step, so that any moment of the run is near a save.
COMMAND = [sys.executable, os.path.join(ROOT, "launch.py"),
           "--config=" + os.path.join(ROOT, "experiments", "configs", "default.py") + ":smoke",
           f"--config.total_steps={STEPS}", "--config.eval_every_steps=1",
           "--config.log_every_steps=1"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CNN_JAX_DEBUG": "0"}


def launch(workdir, **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run(COMMAND + [f"--workdir={workdir}"], capture_output=True, text=True,
                        timeout=600, env=ENV, **kwargs)


def record_steps(workdir) -> list[int]:
  with open(os.path.join(workdir, "metrics.jsonl")) as file:
    return [json.loads(line)["step"] for line in file]


def final_parameters(workdir) -> list[np.ndarray]:
  manager = checkpoint.create_checkpoint_manager(workdir, 2, read_only=True)
  try:
    state = checkpoint.restore_state_dict(manager, STEPS)
  finally:
    manager.close()
  leaves = []
  for module in sorted(state["params"]):
    for name in sorted(state["params"][module]):
      leaves.append(state["params"][module][name])
  return leaves


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  result = launch(workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  return final_parameters(workdir)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_a_random_moment_then_resume_equals_the_uninterrupted_run(
    seed, tmp_path, uninterrupted):
  rng = np.random.default_rng(seed)
  kill_after_record = int(rng.integers(1, STEPS - 1))
  delay = float(rng.uniform(0.0, 0.5))  # seconds after that record: inside the next steps' saves
  workdir = str(tmp_path)
  process = subprocess.Popen(COMMAND + [f"--workdir={workdir}"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=ENV)
  path = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 300
  while time.time() < deadline and process.poll() is None:
    if os.path.exists(path) and open(path).read().count("\n") >= kill_after_record:
      break
    time.sleep(0.02)
  time.sleep(delay)
  process.send_signal(signal.SIGKILL)
  process.wait()
  resumed = launch(workdir)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert record_steps(workdir) == list(range(1, STEPS + 1))  # each step once, none missing
  # The same program on the same machine from the same checkpoint: bitwise (resume is exact).
  for saved, expected in zip(final_parameters(workdir), uninterrupted, strict=True):
    np.testing.assert_array_equal(saved, expected)


@pytest.fixture
def tiny_filesystem(tmp_path):
  """A 1 MiB tmpfs (needs root and mount; skipped where the platform does not allow it)."""
  mount_point = str(tmp_path / "tiny")
  os.makedirs(mount_point)
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mount_point],
                           capture_output=True)
  if mounted.returncode != 0:
    pytest.skip("cannot mount a tmpfs here: " + mounted.stderr.decode(errors="replace")[:200])
  yield mount_point
  subprocess.run(["umount", "-l", mount_point], check=False)


@pytest.mark.slow
def test_a_full_disk_is_one_line_keeps_every_checkpoint_intact_and_resumes(
    tiny_filesystem, uninterrupted):
  workdir = os.path.join(tiny_filesystem, "run")
  filler = os.path.join(tiny_filesystem, "filler")
  with open(filler, "wb") as file:  # leave about 160 KiB: the config and a few checkpoints
    file.write(b"\0" * (1024 * 1024 - 160 * 1024))
  full = launch(workdir)
  assert full.returncode == 2, full.stderr[-3000:]
  last_line = full.stderr.strip().splitlines()[-1]
  assert last_line.startswith("launch.py: ") and "No space left on device" in last_line
  assert "Traceback" not in full.stderr, full.stderr[-5000:]
  manager = checkpoint.create_checkpoint_manager(workdir, 2, read_only=True)
  try:
    for step in manager.all_steps():  # whatever was committed is whole (checksums match)
      checkpoint.restore_state_dict(manager, step)
  finally:
    manager.close()
  os.remove(filler)
  resumed = launch(workdir)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert record_steps(workdir) == list(range(1, STEPS + 1))
  for saved, expected in zip(final_parameters(workdir), uninterrupted, strict=True):
    np.testing.assert_array_equal(saved, expected)
