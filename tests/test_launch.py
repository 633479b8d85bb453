"""launch.py end to end (a subprocess in smoke mode), its config flags and the config files."""

import importlib
import importlib.util
import json
import math
import os
import subprocess
import sys

import jax.numpy as jnp
import pytest
from absl import flags

import launch
from cnn_jax import models, train
from cnn_jax.train import configuration, loop, optim
from experiments.configs import default

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_launch_in_smoke_mode_writes_metrics_checkpoints_summary_and_report(tmp_path):
  workdir = tmp_path / "run"
  environment = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  command = [sys.executable, "launch.py", "--config=experiments/configs/default.py:smoke",
             f"--workdir={workdir}", "--config.parallelism=shard_map",
             "--config.model.blur=True"]
  result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "step 6/6" in result.stderr and "ETA" in result.stderr
  with open(workdir / "summary.json") as file:
    summary = json.load(file)
  assert summary["num_devices"] == 2 and summary["steps"] == 6
  with open(workdir / "config.json") as file:
    saved = json.load(file)
  assert saved["parallelism"] == "shard_map" and saved["model"]["blur"] is True
  with open(workdir / "metrics.jsonl") as file:
    assert [json.loads(line)["step"] for line in file] == [2, 3, 4, 6]
  assert sorted(os.listdir(workdir / "checkpoints")) == ["3", "6"]
  assert (workdir / "report.md").read_text().count(".png") == 2


def parse_launch_flags(*overrides, config="experiments/configs/default.py:smoke"):
  """launch.py's flags parsed from a command line, in a fresh FlagValues: the config."""
  argv = ["launch.py", f"--config={config}", "--workdir=/tmp/unused", *overrides]
  flag_values = flags.FlagValues()
  launch.define_flags(flag_values, argv)
  configuration.parse_flags(argv, flag_values)
  return flag_values.config


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_every_model_field_is_set_from_the_command_line(name):
  fields = configuration.model_config(name)
  overrides = [f"--config.model.{field}={value}" for field, value in
               (("blur", True), ("padding", "circular"), ("dtype", "bfloat16")) if field in fields]
  config = parse_launch_flags(*overrides, config=f"experiments/configs/default.py:model={name}")
  model = loop.build_model(config, num_classes=8)
  assert model.num_classes == 8 and model.dtype == jnp.bfloat16
  if "blur" in fields:
    assert model.blur is True and model.padding == "circular"


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="needs TensorFlow: a run reads its digits through TFDS and writes "
                           "TensorBoard summaries through flax.metrics.tensorboard")
def test_a_run_with_model_fields_from_the_command_line_trains(tmp_path):
  # bfloat16 reaches the model too (above) but compiles slowly on CPU: left out here.
  config = parse_launch_flags("--config.model.blur=True", "--config.model.padding=circular")
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary["steps"] == 6 and math.isfinite(summary["test_loss"])
  with open(tmp_path / "config.json") as file:
    saved = json.load(file)["model"]
  assert (saved["blur"], saved["padding"]) == (True, "circular")


def test_switching_the_model_name_resets_its_fields_then_applies_the_other_overrides():
  config = parse_launch_flags("--config.model.name=resnet20", "--config.model.blur=True")
  assert config.model.to_dict() == configuration.model_config("resnet20", blur=True).to_dict()
  with pytest.raises(ValueError, match=r"config.model has no field 'stage_sizes'.*:model=<name>"):
    parse_launch_flags("--config.model.name=resnet20", "--config.model.stage_sizes=(2,2,2)")


@pytest.mark.parametrize("override, message", [
    ("--config.model.blurr=True",
     r"config.model has no field 'blurr'; did you mean 'blur'\? Valid fields: blur, blur_size,"),
    ("--config.learnig_rate=1", r"config has no field 'learnig_rate'; did you mean "
                                r"'learning_rate'\? Valid fields: augmentation, batch_size"),
])
def test_a_misspelled_field_is_refused_with_the_valid_ones(override, message):
  with pytest.raises(ValueError, match=message):
    parse_launch_flags(override)


def test_the_argument_string_sets_the_model_and_smoke_mode():
  config = default.get_config("model=resnet20,smoke")
  assert config.model.to_dict() == configuration.model_config("resnet20").to_dict()
  assert config.total_steps == 6 and config.batch_size == 32
  assert default.get_config().total_steps is None


@pytest.mark.parametrize("argument, message", [
    ("modle=cnn", r"has no key 'modle'; did you mean 'model'\? Valid keys: model, smoke"),
    ("smoke=yes", r"smoke must be True or False, got 'yes'"),
])
def test_unknown_argument_items_are_refused(argument, message):
  with pytest.raises(ValueError, match=message):
    default.get_config(argument)


def test_every_config_field_has_a_one_line_comment():
  with open(os.path.join(ROOT, "experiments", "configs", "default.py")) as file:
    lines = [line for line in file if line.startswith("  config.") and " = " in line]
  fields = {line.split("=")[0].strip().removeprefix("config.") for line in lines}
  commented = {line.split("=")[0].strip().removeprefix("config.") for line in lines
               if "  # " in line}
  assert fields == commented == set(default.get_config())


@pytest.mark.parametrize("name", ["default", "mnist_cnn", "mnist_cnn3", "cifar10_resnet20",
                                  "imagenet_resnet50"])
def test_every_config_file_builds_a_valid_smoke_config(name):
  module = importlib.import_module(f"experiments.configs.{name}")
  config = module.get_config("smoke")
  loop.validate_config(config)
  assert config.total_steps == 6
  assert set(config) == set(default.get_config())


def test_the_configs_keep_their_schedules_in_steps():
  """The epochs of the configs give the step counts they were written with."""
  for name, steps_per_epoch, eval_every, peak in (("default", 31, 62, 0.05),
                                                 ("cifar10_resnet20", 390, 3900, 0.1),
                                                 ("imagenet_resnet50", 1251, 1251, 0.4),
                                                 ("mnist_cnn", 468, 468, 0.05)):
    config = importlib.import_module(f"experiments.configs.{name}").get_config()
    assert configuration.to_steps(config, "eval_every", steps_per_epoch) == eval_every
    assert optim.peak_learning_rate(config) == pytest.approx(peak, rel=1e-12)
