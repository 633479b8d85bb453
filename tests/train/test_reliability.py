"""Nothing lost, nothing silent: the workdir lock, read-only readers, divergence, records."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import optax
import pytest

from cnn_jax.train import checkpoint, loop, metrics, restore_for_inference, train_and_evaluate
from cnn_jax.train.workdir_lock import WorkdirLockedError, lock_workdir
from cnn_jax.train.state import TrainState
from experiments.configs import default


# An accelerator image may have JAX without TensorFlow.
needs_tensorflow = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="needs TensorFlow: metrics.MetricWriter writes TensorBoard summaries through "
           "flax.metrics.tensorboard (and a smoke run reads its digits through TFDS)")


def smoke_config(**fields):
  config = default.get_config("smoke")
  config.update(fields)
  return config


def test_a_second_training_in_a_locked_workdir_is_refused_naming_the_holder(tmp_path):
  workdir = str(tmp_path)
  with lock_workdir(workdir):
    with pytest.raises(WorkdirLockedError, match=rf"in use by pid {os.getpid()} on .*another "
                                                 r"--workdir"):
      train_and_evaluate(smoke_config(), workdir)
  assert not os.path.exists(os.path.join(workdir, "config.json"))


def test_the_lock_of_a_killed_process_is_released_by_the_os(tmp_path):
  workdir = str(tmp_path)
  holder = subprocess.Popen(
      [sys.executable, "-c", textwrap.dedent(f"""
          import sys, time
          from cnn_jax.train.workdir_lock import lock_workdir
          lock = lock_workdir({workdir!r})
          print("locked", flush=True)
          time.sleep(60)
          """)], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(WorkdirLockedError, match=rf"in use by pid {holder.pid} "):
      lock_workdir(workdir)
  finally:
    holder.kill()  # SIGKILL: no clean-up code of the holder runs
    holder.wait()
  lock_workdir(workdir).close()


def test_a_reader_creates_deletes_and_cleans_nothing(tmp_path):
  workdir = str(tmp_path)
  loop.prepare_workdir(smoke_config(), workdir, overwrite=False)
  with pytest.raises(FileNotFoundError, match="no checkpoint in .*checkpoints"):
    restore_for_inference(workdir)
  assert not os.path.exists(checkpoint.checkpoint_directory(workdir))
  # A save in progress of a training in this workdir: orbax's temporary directory.
  in_progress = os.path.join(checkpoint.checkpoint_directory(workdir), "8.orbax-checkpoint-tmp")
  os.makedirs(in_progress)
  with pytest.raises(FileNotFoundError, match="no checkpoint in"):
    restore_for_inference(workdir)
  assert os.path.isdir(in_progress)


def records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as file:
    return [json.loads(line) for line in file]


@needs_tensorflow
@pytest.mark.parametrize("test_loss, message", [(float("nan"), "test loss is nan at step 3"),
                                                (1e30, "test loss is 1e[+]30, above")])
def test_a_diverged_evaluation_stops_the_run_before_its_checkpoint_and_record(
    tmp_path, monkeypatch, test_loss, message):
  workdir = str(tmp_path)
  monkeypatch.setattr(loop, "evaluate",
                      lambda *args: {"test_loss": test_loss, "test_accuracy": 0.99})
  with pytest.raises(FloatingPointError, match=message + ".*new workdir or with --overwrite"):
    train_and_evaluate(smoke_config(), workdir)
  assert os.listdir(checkpoint.checkpoint_directory(workdir)) == []
  assert [record["step"] for record in records(workdir)] == [2]


@needs_tensorflow
def test_a_loss_above_the_divergence_limit_stops_training(tmp_path):
  # ln(10) * 1.01 = 2.33 is below the smoke run's loss at its start (ln 10 = 2.30 plus the
  # spread of a fresh initialization, with label smoothing): the first window stops it.
  with pytest.raises(FloatingPointError, match=r"training loss is .*, above config.divergence"):
    train_and_evaluate(smoke_config(divergence_factor=1.01, learning_rate=30.0), str(tmp_path))


def test_a_non_finite_state_or_metric_is_never_saved(tmp_path):
  manager = checkpoint.create_checkpoint_manager(str(tmp_path), keep=1)
  finite = make_state(2)
  checkpoint.save_checkpoint(manager, finite, {"test_accuracy": 0.5})
  broken = finite.replace(step=np.int32(3), params=jax_tree_with_nan(finite.params))
  with pytest.raises(FloatingPointError, match=r"step 3 .*non-finite values in .*kernel"):
    checkpoint.save_checkpoint(manager, broken, {"test_accuracy": 0.9})
  with pytest.raises(FloatingPointError, match=r"step 4 .*\['test_loss'\]"):
    checkpoint.save_checkpoint(manager, finite.replace(step=np.int32(4)),
                               {"test_accuracy": 0.9, "test_loss": float("nan")})
  assert list(manager.all_steps()) == [2] and manager.best_step() == 2


def make_state(step):
  params = {"dense": {"kernel": np.ones((2, 3), np.float32), "bias": np.zeros(3, np.float32)}}
  return jax.device_get(TrainState(step=np.int32(step), params=params, batch_stats={},
                                   opt_state=optax.sgd(0.1).init(params)))


def jax_tree_with_nan(params):
  kernel = np.array(params["dense"]["kernel"])
  kernel[0, 0] = np.nan
  return {"dense": {**params["dense"], "kernel": kernel}}


@needs_tensorflow
def test_metrics_jsonl_never_holds_a_nan_token(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path))
  writer.write(1, {"train_loss": float("nan"), "train_accuracy": 0.5})
  writer.close()
  with open(metrics.metrics_path(str(tmp_path))) as file:
    text = file.read()
  assert "NaN" not in text and json.loads(text) == {"step": 1, "train_loss": None,
                                                    "train_accuracy": 0.5}


def test_an_unfinished_last_line_of_metrics_jsonl_is_dropped_with_a_warning(tmp_path, caplog):
  path = metrics.metrics_path(str(tmp_path))
  with open(path, "w") as file:
    file.write('{"step": 2, "train_loss": 1.5}\n{"step": 3, "train_lo')
  assert metrics.truncate_records(str(tmp_path), 3) == [{"step": 2, "train_loss": 1.5}]
  assert f"unfinished last line of {path}" in caplog.text
  with open(path) as file:
    assert file.read() == '{"step": 2, "train_loss": 1.5}\n'


def test_a_damaged_line_before_the_last_is_an_error_naming_the_file(tmp_path):
  path = metrics.metrics_path(str(tmp_path))
  with open(path, "w") as file:
    file.write('{"step": 2, "train_lo\n{"step": 3, "train_loss": 1.5}\n')
  with pytest.raises(ValueError, match=rf"{path} line 1 is not a JSON record"):
    metrics.read_records(str(tmp_path))


def test_a_truncated_config_json_is_an_error_naming_the_file(tmp_path):
  workdir = str(tmp_path)
  loop.prepare_workdir(smoke_config(), workdir, overwrite=False)
  path = os.path.join(workdir, "config.json")
  with open(path, "r+") as file:
    file.truncate(100)
  for attempt in (lambda: loop.prepare_workdir(smoke_config(), workdir, overwrite=False),
                  lambda: restore_for_inference(workdir)):
    with pytest.raises(ValueError, match=rf"{path} is damaged \(not JSON.*--overwrite"):
      attempt()


def tensorboard_steps(workdir, tag="train_loss"):
  from tensorboard.backend.event_processing import event_accumulator
  accumulator = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"))
  accumulator.Reload()
  return [event.step for event in accumulator.Tensors(tag)]


@pytest.mark.slow  # two smoke trainings in-process (20-35 s); the default suite's budget
def test_a_kill_between_a_record_and_its_checkpoint_loses_and_duplicates_nothing(
    tmp_path, monkeypatch):
  """The record of step 6 is written, then the process dies before checkpoint 6 is saved."""
  workdir = str(tmp_path)
  real_save = checkpoint.save_checkpoint

  def dying_save(manager, state, eval_metrics):
    if int(state.step) == 6:
      raise KeyboardInterrupt("killed before the checkpoint of step 6")
    real_save(manager, state, eval_metrics)

  monkeypatch.setattr(checkpoint, "save_checkpoint", dying_save)
  with pytest.raises(KeyboardInterrupt):
    train_and_evaluate(smoke_config(), workdir)
  assert [record["step"] for record in records(workdir)] == [2, 3, 4, 6]
  monkeypatch.setattr(checkpoint, "save_checkpoint", real_save)
  train_and_evaluate(smoke_config(), workdir)
  assert [record["step"] for record in records(workdir)] == [2, 3, 4, 6]
  assert tensorboard_steps(workdir) == [2, 3, 4, 6]


@pytest.mark.slow  # two smoke trainings in-process (20-35 s); the default suite's budget
def test_a_kill_while_writing_a_record_never_leaves_its_checkpoint_without_it(
    tmp_path, monkeypatch):
  workdir = str(tmp_path)
  real_write = metrics.MetricWriter.write

  def dying_write(self, step, record):
    if step == 6:
      raise KeyboardInterrupt("killed while writing the record of step 6")
    real_write(self, step, record)

  monkeypatch.setattr(metrics.MetricWriter, "write", dying_write)
  with pytest.raises(KeyboardInterrupt):
    train_and_evaluate(smoke_config(), workdir)
  monkeypatch.setattr(metrics.MetricWriter, "write", real_write)
  train_and_evaluate(smoke_config(), workdir)
  assert [record["step"] for record in records(workdir)] == [2, 3, 4, 6]


def file_states(workdir):
  """Every file under `workdir` with its modification time and bytes."""
  states = {}
  for folder, _, names in os.walk(workdir):
    for name in names:
      path = os.path.join(folder, name)
      with open(path, "rb") as file:
        states[os.path.relpath(path, workdir)] = (os.stat(path).st_mtime_ns, file.read())
  return states


@pytest.mark.slow  # a real run to the end and a second start (20-30 s)
def test_a_finished_run_run_again_says_so_and_changes_no_file(tmp_path, caplog):
  workdir = str(tmp_path)
  summary = train_and_evaluate(smoke_config(), workdir)
  before = file_states(workdir)
  caplog.set_level("INFO")
  assert train_and_evaluate(smoke_config(), workdir) == pytest.approx(summary)
  assert "holds this run finished (6 of 6 steps): nothing to do" in caplog.text
  after = file_states(workdir)
  assert sorted(after) == sorted(before)
  # .lock names the process holding the workdir: the second run's pid, by design.
  assert [name for name in before if before[name] != after[name]] == [".lock"]


def test_overwrite_logs_exactly_what_it_deletes(tmp_path, caplog):
  workdir = str(tmp_path)
  loop.prepare_workdir(smoke_config(), workdir, overwrite=False)
  for name in ("metrics.jsonl", "summary.json"):
    with open(os.path.join(workdir, name), "w") as file:
      file.write("{}\n")
  loop.prepare_workdir(smoke_config(), workdir, overwrite=True)
  assert "deleting the previous run's metrics.jsonl, summary.json in" in caplog.text
  assert sorted(os.listdir(workdir)) == ["config.json"]


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def launch(workdir, *flags, **environment):
  command = [sys.executable, "launch.py", "--config=experiments/configs/default.py:smoke",
             f"--workdir={workdir}", *flags]
  return subprocess.run(command, cwd=ROOT, env={**os.environ, **environment},
                        capture_output=True, text=True, timeout=300)


def test_a_locked_workdir_reaches_the_user_as_one_line_with_exit_code_2(tmp_path):
  with lock_workdir(str(tmp_path)):
    locked = launch(tmp_path)
  assert locked.returncode == 2, locked.stderr[-3000:]
  assert "Traceback" not in locked.stderr
  assert locked.stderr.strip().splitlines()[-1].startswith(
      f"launch.py: WorkdirLockedError: workdir '{tmp_path}' is in use by pid {os.getpid()} ")


@pytest.mark.slow
def test_config_errors_are_one_line_with_exit_code_2_and_a_traceback_only_in_debug(tmp_path):
  bad = launch(tmp_path / "other", "--config.label_smoothing=1.5")
  assert bad.returncode == 2 and "Traceback" not in bad.stderr
  assert bad.stderr.strip().splitlines()[-1].startswith(
      "launch.py: ValueError: config.label_smoothing must be in [0, 1), got 1.5")
  typo = launch(tmp_path / "other", "--config.lerning_rate=0.1")
  assert typo.returncode == 2 and "Traceback" not in typo.stderr
  assert typo.stderr.strip().splitlines()[-1].startswith(
      "FATAL Flags parsing error: config has no field 'lerning_rate'; did you mean "
      "'learning_rate'?")
  debug = launch(tmp_path / "other", "--config.label_smoothing=1.5", CNN_JAX_DEBUG="1")
  assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_a_batch_larger_than_the_training_split_is_refused(tmp_path):
  with pytest.raises(ValueError, match=r"config.batch_size \(8192\) is larger than the training "
                                       r"split of mnist_offline \(\d+ images\)"):
    train_and_evaluate(smoke_config(batch_size=8192, eval_batch_size=8), str(tmp_path))


@pytest.mark.parametrize("blur", [False, True])
def test_the_paper_alexnet_refuses_224_pixels_and_takes_227(blur):
  from cnn_jax import models
  model = models.get_model("alexnet", num_classes=10, blur=blur)
  with pytest.raises(ValueError, match=r"does not tile a 224-pixel input.*227"):
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                   jax.ShapeDtypeStruct((1, 224, 224, 3), np.float32))
  jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                 jax.ShapeDtypeStruct((1, 227, 227, 3), np.float32))


@pytest.mark.parametrize("images, message", [
    (np.full((2, 4, 4, 1), 255.0, np.float32), r"in \[0, 1\], got values in \[255, 255\]: on the "
                                               r"0..255 scale\? divide by 255"),
    (np.full((2, 4, 4, 1), np.nan, np.float32), r"32 NaN or infinite values"),
])
def test_preprocess_refuses_float_images_outside_the_unit_interval_or_not_finite(images, message):
  from cnn_jax import data
  from cnn_jax.train import preprocess
  with pytest.raises(ValueError, match=message):
    preprocess(images, data.get_dataset_info("mnist_offline"))


def flip_a_byte_of_the_largest_data_file(step_directory):
  files = [os.path.join(folder, name) for folder, _, names in os.walk(step_directory)
           for name in names]
  largest = max(files, key=os.path.getsize)
  with open(largest, "r+b") as file:
    file.seek(os.path.getsize(largest) // 2)
    byte = file.read(1)
    file.seek(-1, os.SEEK_CUR)
    file.write(bytes([byte[0] ^ 0x01]))


@pytest.mark.slow  # a real run to the end and a second start (20-30 s)
def test_a_flipped_byte_is_caught_and_the_newest_intact_checkpoint_resumed(tmp_path, caplog):
  workdir = str(tmp_path)
  summary = train_and_evaluate(smoke_config(), workdir)
  os.remove(os.path.join(workdir, "summary.json"))  # as if killed just after the last save
  directory = checkpoint.checkpoint_directory(workdir)
  flip_a_byte_of_the_largest_data_file(os.path.join(directory, "6"))
  manager = checkpoint.create_checkpoint_manager(workdir, 2, read_only=True)
  with pytest.raises(checkpoint.CorruptCheckpointError, match=r"checkpoints/6 is corrupt"):
    checkpoint.restore_state_dict(manager, 6)
  manager.close()
  resumed = train_and_evaluate(smoke_config(), workdir)
  assert "SKIPPING the checkpoint of step 6" in caplog.text
  assert resumed["test_accuracy"] == summary["test_accuracy"]  # the same run, redone from 3
  assert sorted(os.listdir(directory)) == ["3", "6", "6.corrupt"]
  assert [record["step"] for record in records(workdir)] == [2, 3, 4, 6]
