"""Real short training runs on the offline MNIST digits (the smoke config, 4 virtual devices)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

# The smoke runs read the digits through TFDS, and experiments.in_memory_training imports it.
pytest.importorskip("tensorflow_datasets", reason="needs TFDS (tensorflow_datasets)")

from cnn_jax import data
from cnn_jax.train import (checkpoint, evaluate, finish, initial_state, loop, preprocess,
                           restore_for_inference, setup, train, train_and_evaluate)
from experiments.configs import default
from experiments.in_memory_training import load_digits, shuffled_batches

CRASH_AFTER_BATCHES = 4  # the smoke run checkpoints at steps 3 and 6; this crash is at step 5


def smoke_config(**fields):
  """The smoke config with `fields` changed; `model_name` sets config.model.name."""
  config = default.get_config("smoke")
  if "model_name" in fields:
    config.model.name = fields.pop("model_name")
  config.update(fields)
  return config


def metric_records_without_timing(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as file:
    records = [json.loads(line) for line in file]
  return [{k: v for k, v in record.items() if k != "images_per_second"} for record in records]


def crash_training_after(monkeypatch, batches):
  """Makes the training stream raise after `batches` batches, as a killed job would stop."""
  real_create_split = data.create_split

  def create_split(name, split, batch_size, **options):
    stream = real_create_split(name, split, batch_size, **options)
    if split != "train":
      return stream
    def crashing():
      for _ in range(batches):
        yield next(stream)
      raise RuntimeError("simulated crash")
    return crashing()

  monkeypatch.setattr(data, "create_split", create_split)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("full"))
  return workdir, train_and_evaluate(smoke_config(), workdir)


@pytest.fixture(scope="module")
def crashed_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("crashed"))
  with pytest.MonkeyPatch.context() as monkeypatch:
    crash_training_after(monkeypatch, CRASH_AFTER_BATCHES)
    with pytest.raises(RuntimeError, match="simulated crash"):
      train_and_evaluate(smoke_config(), workdir)
  return workdir


def test_a_run_writes_metrics_checkpoints_summary_and_report(full_run):
  workdir, summary = full_run
  records = metric_records_without_timing(workdir)
  assert [r["step"] for r in records] == [2, 3, 4, 6]
  assert [("test_accuracy" in r) for r in records] == [False, True, False, True]
  assert summary["test_accuracy"] == records[-1]["test_accuracy"]
  assert summary["num_devices"] == jax.device_count() == 4
  assert 0.0 <= summary["test_accuracy"] <= 1.0
  with open(os.path.join(workdir, "summary.json")) as file:
    assert json.load(file) == pytest.approx(summary)
  for name in ("config.json", "report.md", "loss.png", "accuracy.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  assert sorted(os.listdir(checkpoint.checkpoint_directory(workdir))) == ["3", "6"]


def test_a_crash_leaves_the_last_good_checkpoint_and_nothing_after_it(crashed_run):
  assert os.listdir(checkpoint.checkpoint_directory(crashed_run)) == ["3"]
  assert [r["step"] for r in metric_records_without_timing(crashed_run)] == [2, 3, 4]


def test_a_run_stopped_and_resumed_ends_exactly_like_one_that_was_not(full_run, crashed_run,
                                                                     tmp_path):
  workdir = str(tmp_path / "resumed")
  shutil.copytree(crashed_run, workdir)
  summary = train_and_evaluate(smoke_config(), workdir)
  full_workdir, full_summary = full_run
  assert metric_records_without_timing(workdir) == metric_records_without_timing(full_workdir)
  assert summary["test_accuracy"] == full_summary["test_accuracy"]
  _, resumed_variables, _ = restore_for_inference(workdir)
  _, full_variables, _ = restore_for_inference(full_workdir)
  for resumed, full in zip(jax.tree.leaves(resumed_variables), jax.tree.leaves(full_variables)):
    np.testing.assert_array_equal(resumed, full)
  # Started once more, the finished run trains no further and reports the same evaluation.
  again = train_and_evaluate(smoke_config(), workdir)
  assert again["test_accuracy"] == summary["test_accuracy"] and again["steps"] == 6
  assert metric_records_without_timing(workdir) == metric_records_without_timing(full_workdir)


def test_restored_variables_reproduce_the_runs_test_accuracy(full_run):
  workdir, summary = full_run
  model, variables, config = restore_for_inference(workdir)
  assert config == smoke_config()
  info = data.get_dataset_info(config.dataset)
  correct = count = 0
  for batch in data.create_split(config.dataset, "test", 250, train=False):
    logits = model.apply(variables, preprocess(batch["image"], info), train=False)
    correct += np.sum((np.argmax(logits, -1) == batch["label"]) & batch["mask"])
    count += np.sum(batch["mask"])
  assert count == info.num_test
  assert correct / count == pytest.approx(summary["test_accuracy"], abs=1e-9)


def test_restore_for_inference_without_a_run_or_a_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json does not exist"):
    restore_for_inference(str(tmp_path))
  loop.prepare_workdir(smoke_config(), str(tmp_path), overwrite=False)
  with pytest.raises(FileNotFoundError, match="no checkpoint in .*checkpoints"):
    restore_for_inference(str(tmp_path))


def test_a_nan_loss_stops_the_run_without_saving(tmp_path):
  workdir = str(tmp_path)
  with pytest.raises(FloatingPointError, match=r"training loss is (nan|inf) at step 2"):
    train_and_evaluate(smoke_config(learning_rate=1e30, label_smoothing=0.0), workdir)
  assert os.listdir(checkpoint.checkpoint_directory(workdir)) == []


def test_a_workdir_holding_another_config_is_refused_unless_overwrite(tmp_path):
  workdir = str(tmp_path)
  loop.prepare_workdir(smoke_config(), workdir, overwrite=False)
  open(os.path.join(workdir, "metrics.jsonl"), "w").close()
  changed = smoke_config(learning_rate=0.123)
  with pytest.raises(ValueError, match=r"different config \(learning_rate: 0.1 -> 0.123\)"):
    train_and_evaluate(changed, workdir)
  loop.prepare_workdir(changed, workdir, overwrite=True)
  assert not os.path.exists(os.path.join(workdir, "metrics.jsonl"))
  with open(os.path.join(workdir, "config.json")) as file:
    assert json.load(file)["learning_rate"] == 0.123


def test_a_run_saved_before_divergence_factor_existed_is_the_same_config(tmp_path):
  workdir = str(tmp_path)
  loop.prepare_workdir(smoke_config(), workdir, overwrite=False)
  path = os.path.join(workdir, "config.json")
  with open(path) as file:
    saved = json.load(file)
  del saved["divergence_factor"]
  with open(path, "w") as file:
    json.dump(saved, file)
  loop.prepare_workdir(smoke_config(), workdir, overwrite=False)  # accepted: the same run
  with pytest.raises(ValueError, match=r"divergence_factor: 100.0 -> 5.0"):
    loop.prepare_workdir(smoke_config(divergence_factor=5.0), workdir, overwrite=False)


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", 30, r"config.batch_size=30 .* 4 devices.*28 or 32"),
    ("eval_batch_size", 2, r"config.eval_batch_size=2 .* 4 devices.*nearest valid sizes: 4"),
    ("parallelism", "pjit", r"config.parallelism must be one of \('pmap', 'shard_map'\)"),
    ("model_name", "lenet", r"unknown model name 'lenet'"),
    ("model_name", "mlp", r"config.model holds fields that model 'mlp' does not have"),
    ("frozen_modules", ("Conv9",), r"frozen_modules must name .*\['Conv9'\]"),
    ("total_steps", 0, r"config.total_steps must be >= 1, got 0"),
    ("augmentation", "zoom=2", r"unknown augmentation 'zoom'"),
])
def test_bad_config_values_are_refused_before_the_workdir_is_touched(tmp_path, field, value,
                                                                    message):
  with pytest.raises(ValueError, match=message):
    train_and_evaluate(smoke_config(**{field: value}), str(tmp_path))
  assert not os.listdir(tmp_path)


def test_the_pieces_train_on_numpy_batches_and_evaluate_exactly():
  config = smoke_config()
  digits = load_digits()
  trainer = setup(config, data.get_dataset_info(config.dataset))
  records = []
  device_state, images_per_second = train(
      trainer, trainer.data_parallel.put_state(initial_state(trainer)),
      shuffled_batches(digits.train_images, digits.train_labels, config.batch_size, seed=0),
      range(1, trainer.total_steps + 1),
      lambda step, record, state: records.append((step, sorted(record))))
  # Windows end at log_every_steps=2, eval_every_steps=3 and the last step.
  assert [step for step, _ in records] == [2, 3, 4, 6]
  assert records[0][1] == ["images_per_second", "learning_rate", "train_accuracy", "train_loss"]
  assert images_per_second > 0
  # 40 test digits in batches of 16 (the last one padded): the same as the host model's count.
  images, labels = digits.test_images[:40], digits.test_labels[:40]
  batches = [{"image": np.resize(images[i:i + 16], (16, 28, 28, 1)),
              "label": np.resize(labels[i:i + 16], 16), "mask": np.arange(i, i + 16) < 40}
             for i in range(0, 48, 16)]
  measured = evaluate(trainer, device_state, batches)
  model, variables = finish(trainer, device_state)
  logits = model.apply(variables, preprocess(images, data.get_dataset_info("mnist_offline")),
                       train=False)
  expected = np.sum(np.argmax(np.asarray(logits), -1) == labels) / len(labels)
  assert measured["test_accuracy"] == pytest.approx(expected, abs=1e-9)


def test_a_config_json_of_the_former_layout_still_restores(full_run, tmp_path):
  """Runs written when config.model was a name and model_overrides its changed fields."""
  workdir, _ = full_run
  legacy = str(tmp_path / "legacy")
  shutil.copytree(workdir, legacy)
  with open(os.path.join(legacy, "config.json")) as file:
    saved = json.load(file)
  saved["model_overrides"] = {"features": [4, 8], "hidden": [16]}
  saved["model"], saved["data_dir"], saved["image_size"] = "cnn", "", 0
  with open(os.path.join(legacy, "config.json"), "w") as file:
    json.dump(saved, file)
  model, variables, config = restore_for_inference(legacy)
  _, expected_variables, expected_config = restore_for_inference(workdir)
  assert config.model == expected_config.model and config.data_dir is None
  assert model.features == (4, 8)
  jax.tree.map(np.testing.assert_array_equal, variables, expected_variables)


@pytest.mark.slow
def test_a_checkpoint_saved_with_4_devices_resumes_on_2(crashed_run, tmp_path):
  workdir = str(tmp_path / "resumed")
  shutil.copytree(crashed_run, workdir)
  script = textwrap.dedent(f"""
      import json
      from cnn_jax.train import train_and_evaluate
      from experiments.configs import default
      summary = train_and_evaluate(default.get_config("smoke"), {workdir!r})
      print("SUMMARY", json.dumps(summary))
  """)
  environment = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True,
                          text=True, timeout=300, cwd=os.getcwd())
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout.split("SUMMARY", 1)[1])
  assert summary["num_devices"] == 2 and summary["steps"] == 6
  records = metric_records_without_timing(workdir)
  assert records[:2] == metric_records_without_timing(crashed_run)[:2]
  assert [r["step"] for r in records] == [2, 3, 4, 6]
