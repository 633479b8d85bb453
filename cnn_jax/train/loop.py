"""Training runs: the pieces everything that trains goes through, and `train_and_evaluate`.

    trainer = setup(config, dataset_info)     # model, optimizer, schedule, mapped steps, keys
    state = initial_state(trainer)            # host TrainState (or from given variables)
    device_state = trainer.data_parallel.put_state(state)
    device_state, images_per_second = train(trainer, device_state, batches, steps, callback)
    test_metrics = evaluate(trainer, device_state, test_batches)
    model, variables = finish(trainer, device_state)

`batches` is any iterator of numpy batches ('image' uint8 `[B / hosts, H, W, C]`, 'label'):
`launch.py` feeds TFDS through `train_and_evaluate(config, workdir)`, the experiments feed
in-memory arrays; the step, its mapping over all devices, the NaN guard and the metric windows
are the same.

`train_and_evaluate` is deterministic given the config: the data stream is a function of (seed,
step) and the step's randomness is `fold_in(key, step)`, so a run stopped after checkpoint k and
started again continues exactly as if it had not stopped. What its workdir holds:

  .lock            held (flock) by the one training running in it; a second one is refused
  config.json      the run's config; a different config in the same workdir is refused
  checkpoints/     orbax checkpoints (the last `keep_checkpoints` and the best by test accuracy)
  metrics.jsonl    one record per log or eval step; tensorboard/ the same scalars
  summary.json     the final summary; report.md, loss.png, accuracy.png
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
from absl import logging

from cnn_jax import data, models
from cnn_jax.data import augment as augmentation
from cnn_jax.train import (checkpoint, configuration, metrics, optim, parallel, report,
                           workdir_lock)
from cnn_jax.train.state import TrainState, create_train_state
from cnn_jax.train.step import (AXIS_NAME, Augmentation, ImageTransform, identity,
                                make_eval_step, make_train_step)

RUN_FILES = ("checkpoints", "tensorboard", "metrics.jsonl", "summary.json", "report.md",
             "loss.png", "accuracy.png")


DIVERGENCE_FACTOR = 100.0  # for configs without `divergence_factor` (written before it existed)


def divergence_limit(config, num_classes: int) -> float:
  """The largest loss a sane run reaches: `config.divergence_factor` times ln(num_classes), the
  cross-entropy of a uniform guess (about what a fresh model scores)."""
  return config.get("divergence_factor", DIVERGENCE_FACTOR) * math.log(max(num_classes, 2))


def check_loss(name: str, value: float, limit: float, step: int, where: str, config) -> None:
  """Raises FloatingPointError if the loss `value` is NaN, infinite or above `limit`."""
  if math.isfinite(value) and value <= limit:
    return
  problem = (f"is {value}" if not math.isfinite(value)
             else f"is {value:.4g}, above config.divergence_factor * ln(classes) = {limit:.4g}")
  raise FloatingPointError(
      f"{name} {problem} at step {step} ({where}): the run diverged; stopping without saving. "
      f"Try a lower config.learning_rate (now {config.learning_rate} per 256 examples) in a new "
      f"workdir or with --overwrite.")


def with_axis_name(model: nn.Module, axis_name: str | None) -> nn.Module:
  """`model` with batch norm averaged over `axis_name` (None: no cross-device axis), for models
  that have the field; other models as they are."""
  if "axis_name" in {field.name for field in dataclasses.fields(model)}:
    return model.clone(axis_name=axis_name)
  return model


def build_model(config, num_classes: int, axis_name: str | None = AXIS_NAME) -> nn.Module:
  """`config.model` with `num_classes` outputs; batch norm synced over `axis_name` if any."""
  name, fields = configuration.model_arguments(config.model)
  return with_axis_name(models.get_model(name, num_classes=num_classes, **fields), axis_name)


def _config_as_dict(config) -> dict:
  return json.loads(config.to_json_best_effort(sort_keys=True))


def read_config_json(path: str) -> dict:
  """The config dict a run saved at `path`; ValueError naming the file if it is damaged."""
  with open(path) as file:
    text = file.read()
  try:
    saved = json.loads(text)
  except json.JSONDecodeError as error:
    raise ValueError(f"{path} is damaged (not JSON: {error}); restore it, or start the run over "
                     f"with --overwrite (overwrite=True) or in another workdir") from None
  if not isinstance(saved, dict):
    raise ValueError(f"{path} is damaged (a {type(saved).__name__}, not a config object)")
  return saved


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

  With `overwrite`, the previous run's files (RUN_FILES) are deleted first (logged by name).
  An identical config.json is not rewritten.
  """
  config_path = os.path.join(workdir, "config.json")
  current = _config_as_dict(config)
  if os.path.exists(config_path) and not overwrite:
    # A run saved before a field existed ran as with its default: not a different config.
    saved = {"divergence_factor": DIVERGENCE_FACTOR, **read_config_json(config_path)}
    changed = _differences(saved, current)
    if changed:
      raise ValueError(
          f"workdir {workdir!r} holds a run with a different config ({'; '.join(changed)}). "
          "Use another workdir, or overwrite=True (launch.py --overwrite) to delete that run.")
  if jax.process_index() != 0:
    return
  if overwrite:
    deleted = [name for name in RUN_FILES if os.path.exists(os.path.join(workdir, name))]
    if deleted:
      logging.warning("--overwrite: deleting the previous run's %s in %s", ", ".join(deleted),
                      workdir)
    for name in deleted:
      path = os.path.join(workdir, name)
      if os.path.isdir(path):
        shutil.rmtree(path)
      else:
        os.remove(path)
  os.makedirs(workdir, exist_ok=True)
  text = json.dumps(current, indent=2, sort_keys=True)
  if os.path.exists(config_path):
    with open(config_path) as file:
      if file.read() == text:
        return  # the same run: its files are left as they are
  with open(config_path, "w") as file:
    file.write(text)


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
  for name in ("log_every_steps", "eval_every_steps", "total_steps"):
    if config.get(name) is not None and config[name] < 1:
      raise ValueError(f"config.{name} must be >= 1, got {config[name]!r}")
  for name in ("eval_every", "total"):
    if config.get(f"{name}_steps") is None and not (config.get(f"{name}_epochs") or 0) > 0:
      raise ValueError(f"set config.{name}_steps >= 1 or config.{name}_epochs > 0, got "
                       f"{config.get(f'{name}_steps')!r} and {config.get(f'{name}_epochs')!r}")
  if not config.get("divergence_factor", DIVERGENCE_FACTOR) > 1.0:
    raise ValueError(f"config.divergence_factor must be > 1, got {config.divergence_factor!r}")
  if not 0.0 <= config.label_smoothing < 1.0:
    raise ValueError(f"config.label_smoothing must be in [0, 1), got {config.label_smoothing!r}")


class Trainer(NamedTuple):
  """A run's fixed parts, built from its config by `setup`; the state and the data are apart."""
  config: ml_collections.ConfigDict
  model: nn.Module  # batch norm synced over AXIS_NAME (the mapped steps bind it)
  optimizer: optax.GradientTransformation
  learning_rate: optax.Schedule
  data_parallel: parallel.DataParallel  # the train and eval steps mapped over all devices
  input_shape: tuple[int, int, int]  # `[H, W, C]` of the model input (after the transforms)
  steps_per_epoch: int
  total_steps: int
  eval_every_steps: int
  divergence_limit: float  # a train or test loss above it stops the run (`check_loss`)
  init_key: jax.Array  # the parameter initialization's key
  train_key: jax.Array  # the steps' base key (folded with the step and the device)


def setup(config: ml_collections.ConfigDict, dataset_info: data.DatasetInfo, *,
          augment: Augmentation | None = None,
          input_transform: ImageTransform = identity) -> Trainer:
  """Builds everything a run needs but its state and its data; validates `config` first.

  Args:
    config: a config as built by `experiments/configs/default.py`.
    dataset_info: the dataset's classes, image shape, `num_train` (which sets the steps per
      epoch) and pixel statistics (the input normalization).
    augment: `(key, images [b, H, W, C] in [0, 1]) -> images`, random, on device; default
      `build_augmentation(config.augmentation)`.
    input_transform: a deterministic map of the (augmented) images to the model input, in both
      steps (see `make_train_step`).
  """
  validate_config(config)
  if config.batch_size > dataset_info.num_train:
    raise ValueError(f"config.batch_size ({config.batch_size}) is larger than the training split "
                     f"of {config.dataset} ({dataset_info.num_train} images)")
  model = build_model(config, dataset_info.num_classes)
  augment = augment or augmentation.build_augmentation(config.augmentation)
  image_shape = dataset_info.image_shape
  if config.image_size is not None:
    image_shape = (config.image_size, config.image_size, image_shape[-1])
  key = jax.random.key(config.seed, impl=config.prng_impl)
  input_shape = jax.eval_shape(lambda images: input_transform(augment(key, images)),
                               jax.ShapeDtypeStruct((1, *image_shape), np.float32)).shape[1:]
  steps_per_epoch = max(dataset_info.num_train // config.batch_size, 1)
  total_steps = max(configuration.to_steps(config, "total", steps_per_epoch), 1)
  learning_rate = optim.build_learning_rate_schedule(config, steps_per_epoch, total_steps)
  optimizer = optim.freeze(optim.build_optimizer(config, learning_rate),
                           tuple(config.frozen_modules))
  data_parallel = parallel.build_data_parallel(
      config.parallelism,
      make_train_step(model, optimizer, learning_rate, augment, dataset_info.mean,
                      dataset_info.std, config.label_smoothing, input_transform),
      make_eval_step(model, dataset_info.mean, dataset_info.std, input_transform))
  init_key, train_key = jax.random.split(key)
  return Trainer(config, model, optimizer, learning_rate, data_parallel, tuple(input_shape),
                 steps_per_epoch, total_steps,
                 max(configuration.to_steps(config, "eval_every", steps_per_epoch), 1),
                 divergence_limit(config, dataset_info.num_classes), init_key, train_key)


def initial_state(trainer: Trainer, variables: dict | None = None) -> TrainState:
  """The host state at step 0: a fresh initialization, or `variables` ('params' and
  'batch_stats', e.g. a trained model's) with a fresh optimizer state.

  Raises:
    ValueError: `config.frozen_modules` names a module the model does not have.
  """
  state = jax.device_get(create_train_state(trainer.model, trainer.optimizer, trainer.init_key,
                                            trainer.input_shape))
  frozen = tuple(trainer.config.frozen_modules)
  unknown = sorted(set(frozen) - set(state.params))
  if unknown:
    raise ValueError(f"config.frozen_modules must name top-level modules of "
                     f"{trainer.config.model.name} {tuple(state.params)}, got {frozen!r} "
                     f"(unknown: {unknown})")
  if variables is not None:
    state = state.replace(params=variables["params"],
                          batch_stats=variables.get("batch_stats", {}),
                          opt_state=trainer.optimizer.init(variables["params"]))
  return jax.device_get(state)


def _window_means(window: list[dict]) -> dict:
  return {f"train_{name}" if name != "learning_rate" else name:
          float(np.mean([record[name] for record in window])) for name in window[0]}


def train(trainer: Trainer, device_state, batches: Iterator[dict], steps: range,
          callback: Callable[[int, dict, TrainState], None] | None = None):
  """Runs the mapped train step once per step number in `steps`, on one batch of `batches` each.

  The metrics are kept on device and averaged on the host over windows that end at every
  multiple of `config.log_every_steps` or of the eval cadence, and at the last step; there,
  `callback(step, record, device_state)` gets `record = {'train_loss', 'train_accuracy',
  'learning_rate', 'images_per_second'}` (the window's means).

  Returns:
    `(device_state, images_per_second)`: the state after the last step, and the training
    throughput after the first window (which also pays for compilation; all windows if only one).

  Raises:
    FloatingPointError: a window's mean loss is NaN, infinite or above
      `trainer.divergence_limit` (the callback is not called).
  """
  config = trainer.config
  data_parallel = trainer.data_parallel
  window, window_start = [], time.time()
  images = {"all": 0, "steady": 0}
  seconds = {"all": 0.0, "steady": 0.0}
  for step in steps:
    device_state, step_metrics = data_parallel.train_step(
        device_state, data_parallel.put_batch(next(batches)), trainer.train_key)
    window.append(step_metrics)
    if (step % config.log_every_steps and step % trainer.eval_every_steps
        and step != steps[-1]):
      continue
    record = _window_means(data_parallel.to_host(window))
    elapsed = time.time() - window_start
    record["images_per_second"] = len(window) * config.batch_size / max(elapsed, 1e-9)
    for part in ("all", "steady") if images["all"] else ("all",):
      images[part] += len(window) * config.batch_size
      seconds[part] += elapsed
    check_loss("training loss", record["train_loss"], trainer.divergence_limit, step,
               f"mean of steps {step - len(window) + 1}..{step}", config)
    if callback is not None:
      callback(step, record, device_state)
    window, window_start = [], time.time()
  part = "steady" if seconds["steady"] else "all"
  return device_state, images[part] / max(seconds[part], 1e-9)


def evaluate(trainer: Trainer, device_state, batches: Iterable[dict]) -> dict:
  """Loss and accuracy over `batches` ('image', 'label', 'mask': padded examples count for
  nothing): `{'test_loss', 'test_accuracy'}`, exact over the masked examples."""
  data_parallel = trainer.data_parallel
  sums = [data_parallel.eval_step(device_state, data_parallel.put_batch(batch))
          for batch in batches]
  totals = jax.tree.map(lambda *values: float(np.sum(values, dtype=np.float64)),
                        *data_parallel.to_host(sums))
  return {"test_loss": totals["loss_sum"] / totals["count"],
          "test_accuracy": totals["correct"] / totals["count"]}


def finish(trainer: Trainer, device_state) -> tuple[nn.Module, dict]:
  """The trained model for inference (no cross-device axis) and its variables on the host:
  ready for `model.apply(variables, x, train=False)`."""
  return (with_axis_name(trainer.model, None),
          trainer.data_parallel.to_host(device_state).variables)


def test_batches(config, dataset_info: data.DatasetInfo) -> Iterator[dict]:
  """This host's batches of the TFDS test split, every example once (masked padding).

  Every host yields the same number of batches (the collectives need it); a host whose part of
  the split ends early yields all-masked batches.
  """
  per_host_batch = config.eval_batch_size // jax.process_count()
  examples_per_host = math.ceil(dataset_info.num_test / jax.process_count())
  batches = data.create_split(config.dataset, "test", per_host_batch, train=False,
                              data_dir=config.data_dir, image_size=config.image_size)
  image_shape = dataset_info.image_shape
  if config.image_size is not None:
    image_shape = (config.image_size, config.image_size, image_shape[-1])
  empty = {"image": np.zeros((per_host_batch, *image_shape), np.uint8),
           "label": np.zeros(per_host_batch, np.int32), "mask": np.zeros(per_host_batch, bool)}
  for _ in range(math.ceil(examples_per_host / per_host_batch)):
    yield next(batches, empty)


def _restore_newest_intact(manager, template: TrainState) -> tuple[int, TrainState]:
  """`(step, state)` of the newest checkpoint that reads back intact (`(0, template)` if none).

  A corrupt newer one is skipped with a warning naming its step and the reason, and renamed to
  `<step>.corrupt` (kept, no longer a checkpoint) so that the run can save that step again.
  """
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      return step, checkpoint.restore_train_state(manager, template, step)
    except checkpoint.CorruptCheckpointError as error:
      aside = checkpoint.set_aside(manager, step)
      logging.warning("SKIPPING the checkpoint of step %d, kept as %s: %s", step, aside, error)
  return 0, template


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       overwrite: bool = False) -> dict:
  """Trains `config.model` on `config.dataset`, evaluating and checkpointing as it goes.

  Resumes from the latest checkpoint in `workdir` when there is one (same config only); a
  finished run (its last checkpoint and summary.json) is left untouched and its summary returned.

  Args:
    config: a config as built by `experiments/configs/default.py`.
    workdir: where the run's files go (created if needed).
    overwrite: delete a previous run in `workdir` instead of refusing a different config.

  Returns:
    The final summary (also in `<workdir>/summary.json`): 'test_accuracy', 'test_loss',
    'best_test_accuracy', 'best_step', 'steps', 'epochs', 'wall_time_seconds',
    'train_images_per_second', 'num_devices', 'num_processes'.

  Raises:
    FloatingPointError: the train or test loss became NaN, infinite or above the divergence
      limit (`check_loss`); nothing is saved or recorded after it.
    workdir_lock.WorkdirLockedError: another training runs in `workdir`.
  """
  start_time = time.time()
  dataset_info = data.get_dataset_info(config.dataset)
  # Built before the workdir is touched, so that a bad name or spec leaves no trace.
  trainer = setup(config, dataset_info)
  state = initial_state(trainer)
  # One training per workdir; the OS releases the lock when this process ends, however it ends.
  lock = workdir_lock.lock_workdir(workdir) if jax.process_index() == 0 else None
  try:
    return _train_and_evaluate_locked(config, workdir, overwrite, dataset_info, trainer, state,
                                      start_time)
  finally:
    if lock is not None:
      lock.close()


def _train_and_evaluate_locked(config, workdir, overwrite, dataset_info, trainer, state,
                               start_time) -> dict:
  prepare_workdir(config, workdir, overwrite)
  total_steps = trainer.total_steps
  manager = checkpoint.create_checkpoint_manager(workdir, config.keep_checkpoints)
  start_step, state = _restore_newest_intact(manager, state)
  summary_path = os.path.join(workdir, "summary.json")
  if start_step >= total_steps and os.path.exists(summary_path):
    manager.close()
    with open(summary_path) as file:
      summary = json.load(file)
    logging.info("%s holds this run finished (%d of %d steps): nothing to do, no file changed. "
                 "Use --overwrite (overwrite=True) to run it again.", workdir, start_step,
                 total_steps)
    return summary
  if start_step:
    logging.info("Resuming from the checkpoint of step %d in %s", start_step, workdir)
  is_writer = jax.process_index() == 0
  if is_writer:
    writer = metrics.MetricWriter(workdir, metrics.truncate_records(workdir, start_step))

  train_batches = data.create_split(
      config.dataset, "train", config.batch_size // jax.process_count(), train=True,
      seed=config.seed, data_dir=config.data_dir, start_step=start_step,
      image_size=config.image_size, prefetch=config.prefetch)
  logging.info("Training %s on %s: steps %d..%d of %d (%d per epoch), global batch %d on %d "
               "devices with %s", config.model.name, config.dataset, start_step + 1,
               total_steps, total_steps, trainer.steps_per_epoch, config.batch_size,
               trainer.data_parallel.num_devices, config.parallelism)

  eval_metrics = {}
  progress = {"step": start_step, "train_seconds": 0.0}

  def after_window(step: int, record: dict, device_state) -> None:
    nonlocal eval_metrics
    progress["train_seconds"] += ((step - progress["step"]) * config.batch_size
                                  / record["images_per_second"])
    progress["step"] = step
    record["epoch"] = step / trainer.steps_per_epoch
    saves = step % trainer.eval_every_steps == 0 or step == total_steps
    if saves:
      eval_metrics = evaluate(trainer, device_state, test_batches(config, dataset_info))
      check_loss("test loss", eval_metrics["test_loss"], trainer.divergence_limit, step,
                 "evaluation", config)
      record.update(eval_metrics)
    # The record is on disk before its checkpoint: a kill between them leaves a record after the
    # last checkpoint, which the resumed run drops and writes again (`truncate_records`).
    if is_writer:
      writer.write(step, record)
    if saves:
      checkpoint.save_checkpoint(manager, trainer.data_parallel.to_host(device_state),
                                 eval_metrics)
    seconds_per_step = progress["train_seconds"] / (step - start_step)
    metrics.log_progress(step, total_steps, record, (total_steps - step) * seconds_per_step)

  _, images_per_second = train(trainer, trainer.data_parallel.put_state(state), train_batches,
                               range(start_step + 1, total_steps + 1), after_window)

  if not eval_metrics:  # The workdir held a finished run: report its last evaluation.
    eval_metrics = {name: value for name, value in manager.metrics(total_steps).items()
                    if name != checkpoint.CHECKSUM}
  best_step = manager.best_step()
  summary = {
      **eval_metrics,
      "best_step": best_step,
      "best_test_accuracy": manager.metrics(best_step)[checkpoint.BEST_METRIC],
      "steps": total_steps,
      "epochs": total_steps / trainer.steps_per_epoch,
      "wall_time_seconds": time.time() - start_time,
      "train_images_per_second": images_per_second,
      "num_devices": trainer.data_parallel.num_devices,
      "num_processes": jax.process_count(),
  }
  manager.close()
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


def _upgraded(saved: dict) -> dict:
  """A config.json written before `config.model` held the model's fields (a name, and its
  changed fields in `model_overrides`), in today's form; others as they are."""
  if isinstance(saved.get("model"), str):
    saved = dict(saved)
    saved["model"] = configuration.model_config(
        saved["model"], **saved.pop("model_overrides", {})).to_dict()
    # '' and 0 were "the default" before placeholders.
    saved["data_dir"] = saved.get("data_dir") or None
    saved["image_size"] = saved.get("image_size") or None
  return saved


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
  config = ml_collections.ConfigDict(_upgraded(_lists_as_tuples(read_config_json(config_path))))
  directory = checkpoint.checkpoint_directory(workdir)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoint in {directory}: the directory does not exist")
  # Read-only: a training may be saving in this workdir; nothing is created, deleted or cleaned.
  with contextlib.closing(checkpoint.create_checkpoint_manager(
      workdir, config.keep_checkpoints, read_only=True)) as manager:
    step = manager.best_step() if best else manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {directory}")
    state_dict = checkpoint.restore_state_dict(manager, step)
  dataset_info = data.get_dataset_info(config.dataset)
  model = build_model(config, dataset_info.num_classes, axis_name=None)
  variables = {"params": state_dict["params"], "batch_stats": state_dict.get("batch_stats", {})}
  return model, variables, config
