"""launch.py end to end (a subprocess in smoke mode) and the config's argument string."""

import importlib
import json
import os
import subprocess
import sys

import pytest

from cnn_jax.train import loop
from experiments.configs import default

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_launch_in_smoke_mode_writes_metrics_checkpoints_summary_and_report(tmp_path):
  workdir = tmp_path / "run"
  environment = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  command = [sys.executable, "launch.py", "--config=experiments/configs/default.py:smoke",
             f"--workdir={workdir}", "--config.parallelism=shard_map"]
  result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "step 6/6" in result.stderr and "ETA" in result.stderr
  with open(workdir / "summary.json") as file:
    summary = json.load(file)
  assert summary["num_devices"] == 2 and summary["steps"] == 6
  with open(workdir / "config.json") as file:
    assert json.load(file)["parallelism"] == "shard_map"
  with open(workdir / "metrics.jsonl") as file:
    assert [json.loads(line)["step"] for line in file] == [2, 3, 4, 6]
  assert sorted(os.listdir(workdir / "checkpoints")) == ["3", "6"]
  assert (workdir / "report.md").read_text().count(".png") == 2


def test_the_argument_string_sets_model_augmentation_and_smoke_mode():
  config = default.get_config("model=resnet20,aug=crop=4+flip,epochs=2.5,batch=64,smoke")
  assert config.model == "resnet20" and not config.model_overrides
  assert config.augmentation == "crop=4,flip"
  assert config.num_epochs == 2.5
  assert config.num_train_steps == 6 and config.batch_size == 32  # smoke wins over batch=
  assert default.get_config("aug=").augmentation == ""


@pytest.mark.parametrize("argument, message", [
    ("modle=cnn", r"key 'modle' is not one of \('model'"),
    ("tiny", r"item 'tiny' is neither key=value"),
])
def test_unknown_argument_items_are_refused(argument, message):
  with pytest.raises(ValueError, match=message):
    default.get_config(argument)


def test_every_config_field_has_a_one_line_comment():
  with open(os.path.join(ROOT, "experiments", "configs", "default.py")) as file:
    lines = [line for line in file if line.startswith("  config.") and " = " in line
             and "config.model_overrides = ml_collections.ConfigDict()" not in line]
  fields = {line.split("=")[0].strip().removeprefix("config.") for line in lines}
  commented = {line.split("=")[0].strip().removeprefix("config.") for line in lines
               if "  # " in line}
  assert fields - commented <= {"model_overrides"}
  assert set(default.get_config()) == fields


@pytest.mark.parametrize("name", ["default", "mnist_cnn", "cifar10_resnet20",
                                  "imagenet_resnet50"])
def test_every_config_file_builds_a_valid_smoke_config(name):
  module = importlib.import_module(f"experiments.configs.{name}")
  config = module.get_config("smoke")
  loop.validate_config(config)
  assert config.num_train_steps == 6
  assert set(config) == set(default.get_config())
