"""`train_and_evaluate(config, workdir)`: a whole run, from an empty or partial workdir to a report.

The loop is deterministic given the config: the data stream is a function of (seed, step) and the
step's randomness is `fold_in(key, step)`, so a run stopped after checkpoint k and started again
continues exactly as if it had not stopped. What the workdir holds:

  config.json      the run's config; a different config in the same workdir is refused
  checkpoints/     orbax checkpoints (the last `keep_checkpoints` and the best by test accuracy)
  metrics.jsonl    one record per log or eval step; tensorboard/ the same scalars
  summary.json     the final summary; report.md, loss.png, accuracy.png
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from cnn_jax import data, models
from cnn_jax.data import augment as augmentation
from cnn_jax.train import checkpoint, metrics, optim, parallel, report
from cnn_jax.train.state import create_train_state
from cnn_jax.train.step import AXIS_NAME, make_eval_step, make_train_step

RUN_FILES = ("checkpoints", "tensorboard", "metrics.jsonl", "summary.json", "report.md",
             "loss.png", "accuracy.png")


def build_model(config, num_classes: int, axis_name: str | None = AXIS_NAME):
  """The config's model with `num_classes` outputs; batch norm synced over `axis_name` if any."""
  model = models.get_model(config.model, num_classes=num_classes, **config.model_overrides)
  if "axis_name" in {field.name for field in model.__dataclass_fields__.values()}:
    model = model.clone(axis_name=axis_name)
  return model


def _config_as_dict(config) -> dict:
  return json.loads(config.to_json_best_effort(sort_keys=True))


def _differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
  """The dotted field names whose values differ between two config dicts."""
  names = []
  for name in sorted(set(saved) | set(current)):
    left, right = saved.get(name), current.get(name)
    if isinstance(left, dict) and isinstance(right, dict):
      names += _differences(left, right, f"{prefix}{name}.")
    elif left != right:
      names.append(f"{prefix}{name}: {left!r} -> {right!r}")
  return names


def prepare_workdir(config, workdir: str, overwrite: bool) -> None:
  """Creates `workdir` and writes config.json; refuses a workdir that holds another config's run.

  With `overwrite`, the previous run's files (RUN_FILES) are deleted first.
  """
  config_path = os.path.join(workdir, "config.json")
  current = _config_as_dict(config)
  if os.path.exists(config_path) and not overwrite:
    with open(config_path) as file:
      saved = json.load(file)
    changed = _differences(saved, current)
    if changed:
      raise ValueError(
          f"workdir {workdir!r} holds a run with a different config ({'; '.join(changed)}). "
          "Use another workdir, or overwrite=True (launch.py --overwrite) to delete that run.")
  if jax.process_index() != 0:
    return
  if overwrite:
    for name in RUN_FILES:
      path = os.path.join(workdir, name)
      if os.path.isdir(path):
        shutil.rmtree(path)
      elif os.path.exists(path):
        os.remove(path)
  os.makedirs(workdir, exist_ok=True)
  with open(config_path, "w") as file:
    json.dump(current, file, indent=2, sort_keys=True)


def validate_config(config) -> None:
  """Raises ValueError for config values the run cannot use, before anything is built."""
  optim.validate_optimizer_config(config)
  if config.parallelism not in parallel.PARALLELISM_NAMES:
    raise ValueError(f"config.parallelism must be one of {parallel.PARALLELISM_NAMES}, got "
                     f"{config.parallelism!r}")
  parallel.check_batch_size("config.batch_size", config.batch_size, jax.device_count(),
                            jax.process_count())
  parallel.check_batch_size("config.eval_batch_size", config.eval_batch_size,
                            jax.device_count(), jax.process_count())
  for name in ("log_every_steps", "eval_every_steps"):
    if config[name] < 1:
      raise ValueError(f"config.{name} must be >= 1, got {config[name]!r}")
  if config.num_train_steps < 1 and not config.num_epochs > 0:
    raise ValueError(f"set config.num_train_steps >= 1 or config.num_epochs > 0, got "
                     f"{config.num_train_steps!r} and {config.num_epochs!r}")
  if not 0.0 <= config.label_smoothing < 1.0:
    raise ValueError(f"config.label_smoothing must be in [0, 1), got {config.label_smoothing!r}")


def _optional(value):
  """Config fields use '' / 0 for "the default" (ConfigDict fields keep one type)."""
  return value or None


def evaluate(data_parallel: parallel.DataParallel, device_state, config, dataset_info) -> dict:
  """Test loss and accuracy over the whole test split: `{'test_loss', 'test_accuracy'}`.

  Every host runs the same number of eval steps (the collectives need it); a host whose part of
  the split ends early feeds all-masked batches.
  """
  per_host_batch = config.eval_batch_size // jax.process_count()
  examples_per_host = math.ceil(dataset_info.num_test / jax.process_count())
  num_batches = math.ceil(examples_per_host / per_host_batch)
  batches = data.create_split(config.dataset, "test", per_host_batch, train=False,
                              data_dir=_optional(config.data_dir),
                              image_size=_optional(config.image_size))
  image_shape = (per_host_batch, *dataset_info.image_shape)
  if config.image_size:
    image_shape = (per_host_batch, config.image_size, config.image_size, image_shape[-1])
  empty = {"image": np.zeros(image_shape, np.uint8), "label": np.zeros(per_host_batch, np.int32),
           "mask": np.zeros(per_host_batch, bool)}
  sums = []
  for _ in range(num_batches):
    batch = next(batches, empty)
    sums.append(data_parallel.eval_step(device_state, data_parallel.put_batch(batch)))
  totals = jax.tree.map(lambda *values: float(np.sum(values, dtype=np.float64)),
                        *data_parallel.to_host(sums))
  return {"test_loss": totals["loss_sum"] / totals["count"],
          "test_accuracy": totals["correct"] / totals["count"]}


def _mean_train_metrics(window: list[dict], images: int, seconds: float) -> dict:
  means = {f"train_{name}" if name != "learning_rate" else name:
           float(np.mean([record[name] for record in window])) for name in window[0]}
  means["images_per_second"] = images / max(seconds, 1e-9)
  return means


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       overwrite: bool = False) -> dict:
  """Trains `config.model` on `config.dataset`, evaluating and checkpointing as it goes.

  Resumes from the latest checkpoint in `workdir` when there is one (same config only).

  Args:
    config: a config as built by `experiments/configs/default.py`.
    workdir: where the run's files go (created if needed).
    overwrite: delete a previous run in `workdir` instead of refusing a different config.

  Returns:
    The final summary (also in `<workdir>/summary.json`): 'test_accuracy', 'test_loss',
    'best_test_accuracy', 'best_step', 'steps', 'epochs', 'wall_time_seconds',
    'train_images_per_second', 'num_devices', 'num_processes'.

  Raises:
    FloatingPointError: the training loss became NaN or infinite (nothing is saved after it).
  """
  start_time = time.time()
  validate_config(config)
  dataset_info = data.get_dataset_info(config.dataset)
  # Built before the workdir is touched, so that a bad name or spec leaves no trace.
  model = build_model(config, dataset_info.num_classes)
  augment = augmentation.build_augmentation(config.augmentation)
  prepare_workdir(config, workdir, overwrite)
  image_shape = dataset_info.image_shape
  if config.image_size:
    image_shape = (config.image_size, config.image_size, image_shape[-1])
  steps_per_epoch = max(dataset_info.num_train // config.batch_size, 1)
  total_steps = (config.num_train_steps if config.num_train_steps > 0
                 else max(int(config.num_epochs * steps_per_epoch), 1))
  learning_rate = optim.build_learning_rate_schedule(config, steps_per_epoch, total_steps)
  optimizer = optim.build_optimizer(config, learning_rate)

  init_key, train_key = jax.random.split(jax.random.key(config.seed))
  state = jax.device_get(create_train_state(model, optimizer, init_key, image_shape))
  manager = checkpoint.create_checkpoint_manager(workdir, config.keep_checkpoints)
  start_step = manager.latest_step() or 0
  if start_step:
    state = checkpoint.restore_train_state(manager, state, start_step)
    logging.info("Resuming from the checkpoint of step %d in %s", start_step, workdir)
  is_writer = jax.process_index() == 0
  if is_writer:
    metrics.truncate_records(workdir, start_step)
    writer = metrics.MetricWriter(workdir)

  data_parallel = parallel.build_data_parallel(
      config.parallelism,
      make_train_step(model, optimizer, learning_rate, augment, dataset_info.mean,
                      dataset_info.std, config.label_smoothing),
      make_eval_step(model, dataset_info.mean, dataset_info.std))
  device_state = data_parallel.put_state(state)
  train_batches = data.create_split(
      config.dataset, "train", config.batch_size // jax.process_count(), train=True,
      seed=config.seed, data_dir=_optional(config.data_dir), start_step=start_step,
      image_size=_optional(config.image_size), prefetch=config.prefetch)
  logging.info("Training %s on %s: steps %d..%d of %d (%d per epoch), global batch %d on %d "
               "devices with %s", config.model, config.dataset, start_step + 1, total_steps,
               total_steps, steps_per_epoch, config.batch_size, data_parallel.num_devices,
               config.parallelism)

  window, window_start, train_seconds = [], time.time(), 0.0
  # Throughput after the first window, which also pays for compilation.
  steady_images, steady_seconds = 0, 0.0
  eval_metrics = {}
  for step in range(start_step + 1, total_steps + 1):
    batch = next(train_batches)
    device_state, step_metrics = data_parallel.train_step(
        device_state, data_parallel.put_batch(batch), train_key)
    window.append(step_metrics)
    is_eval_step = step % config.eval_every_steps == 0 or step == total_steps
    if step % config.log_every_steps == 0 or is_eval_step:
      train_metrics = _mean_train_metrics(data_parallel.to_host(window),
                                          len(window) * config.batch_size,
                                          time.time() - window_start)
      if train_seconds:
        steady_images += len(window) * config.batch_size
        steady_seconds += time.time() - window_start
      train_seconds += time.time() - window_start
      if not math.isfinite(train_metrics["train_loss"]):
        raise FloatingPointError(
            f"training loss is {train_metrics['train_loss']} at step {step} (mean of steps "
            f"{step - len(window) + 1}..{step}); stopping without saving. Try a lower "
            f"config.learning_rate (now {config.learning_rate}).")
      train_metrics["epoch"] = step / steps_per_epoch
      record = dict(train_metrics)
      if is_eval_step:
        eval_metrics = evaluate(data_parallel, device_state, config, dataset_info)
        record.update(eval_metrics)
        checkpoint.save_checkpoint(manager, data_parallel.to_host(device_state), eval_metrics)
      if is_writer:
        writer.write(step, record)
      metrics.log_progress(step, total_steps, record,
                           (total_steps - step) * train_seconds / max(step - start_step, 1))
      window, window_start = [], time.time()

  if not eval_metrics:  # The workdir held a finished run: report its last evaluation.
    eval_metrics = dict(manager.metrics(total_steps))
  best_step = manager.best_step()
  summary = {
      **eval_metrics,
      "best_step": best_step,
      "best_test_accuracy": manager.metrics(best_step)[checkpoint.BEST_METRIC],
      "steps": total_steps,
      "epochs": total_steps / steps_per_epoch,
      "wall_time_seconds": time.time() - start_time,
      "train_images_per_second": (
          steady_images / steady_seconds if steady_seconds
          else (total_steps - start_step) * config.batch_size / max(train_seconds, 1e-9)),
      "num_devices": data_parallel.num_devices,
      "num_processes": jax.process_count(),
  }
  if is_writer:
    writer.close()
    report.write_summary(workdir, summary)
    report.write_report(workdir, metrics.read_records(workdir), summary, config)
  logging.info("Done: test accuracy %.4f (best %.4f at step %d), %.0f s, %.0f train images/s",
               summary.get("test_accuracy", float("nan")), summary["best_test_accuracy"],
               best_step, summary["wall_time_seconds"], summary["train_images_per_second"])
  return summary


def _lists_as_tuples(tree):
  """JSON gives lists where the config had tuples; modules need hashable (tuple) fields."""
  if isinstance(tree, dict):
    return {key: _lists_as_tuples(value) for key, value in tree.items()}
  if isinstance(tree, list):
    return tuple(_lists_as_tuples(value) for value in tree)
  return tree


def restore_for_inference(workdir: str, *, best: bool = False):
  """The trained model of a run, ready for `model.apply(variables, x, train=False)`.

  Args:
    workdir: a run's directory (with config.json and checkpoints/).
    best: restore the checkpoint with the best test accuracy instead of the latest.

  Returns:
    `(model, variables, config)`: the Linen module (no cross-device axis), `{'params': ...,
    'batch_stats': ...}` as numpy arrays, and the run's ConfigDict. `x` must be normalized
    with `cnn_jax.train.preprocess(images, cnn_jax.data.get_dataset_info(config.dataset))`.
  """
  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"no run in workdir {workdir!r}: {config_path} does not exist")
  with open(config_path) as file:
    config = ml_collections.ConfigDict(_lists_as_tuples(json.load(file)))
  manager = checkpoint.create_checkpoint_manager(workdir, config.keep_checkpoints)
  step = manager.best_step() if best else manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {checkpoint.checkpoint_directory(workdir)}")
  state_dict = checkpoint.restore_state_dict(manager, step)
  dataset_info = data.get_dataset_info(config.dataset)
  model = build_model(config, dataset_info.num_classes, axis_name=None)
  variables = {"params": state_dict["params"], "batch_stats": state_dict.get("batch_stats", {})}
  return model, variables, config
