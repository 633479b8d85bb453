"""The per-device train and eval steps. Collectives use the one axis name `AXIS_NAME`.

Both functions see the device's share of the batch and are mapped over devices by
`cnn_jax.train.parallel` (with `jax.pmap` or `jax.shard_map`): the same code runs on 1 or D
devices. With `B` the global batch and `b = B / D` the per-device batch:

  loss(theta) = 1/B sum_i CE(f_theta(x_i), (1 - eps) onehot(y_i) + eps / K)   (label smoothing)
  grad = pmean over devices of the per-device mean gradient  (= the gradient of the global mean)

so a D-device step equals a one-device step on the same global batch, up to float summation order,
as long as batch norm also averages its statistics over the axis (model field
`axis_name='batch'`).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax

from cnn_jax.train.preprocess import normalize, to_unit_interval
from cnn_jax.train.state import TrainState

AXIS_NAME = "batch"

Augmentation = Callable[[jax.Array, jax.Array], jax.Array]
ImageTransform = Callable[[jax.Array], jax.Array]


def identity(images: jax.Array) -> jax.Array:
  """The input transform of datasets used as they are."""
  return images


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Per-example `-sum_k t_k log softmax(z)_k` with smoothed targets: `[b, K], [b] -> [b]`."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def mean_over_devices(tree):
  """`lax.pmean(tree, AXIS_NAME)`, or `tree` itself where the axis has one device.

  On one device the mean is the identity, but XLA:CPU still copies every buffer through the
  all-reduce and divides it by 1: for AlexNet's 61M gradients that is two passes over 244 MB,
  about 9% of its train step on 2 CPU cores (`benchmarks/step_profile.py`).
  """
  return tree if lax.axis_size(AXIS_NAME) == 1 else lax.pmean(tree, AXIS_NAME)


def device_step_key(key: jax.Array, step: jax.Array) -> jax.Array:
  """`fold_in(fold_in(key, step), device index)`, inside a function mapped over `AXIS_NAME`.

  fold_in(step) makes a resumed run replay the same randomness at every step; fold_in(device)
  gives the devices' shares of the batch different augmentations and dropout masks.
  """
  return jax.random.fold_in(jax.random.fold_in(key, step), lax.axis_index(AXIS_NAME))


def make_train_step(model: nn.Module, optimizer: optax.GradientTransformation,
                    learning_rate: optax.Schedule, augment: Augmentation, mean, std,
                    label_smoothing: float, input_transform: ImageTransform = identity) -> Callable:
  """Builds `train_step(state, batch, key) -> (state, metrics)`, to be mapped over 'batch'.

  Args:
    model: Linen module; `apply(..., train=True)` may use a 'dropout' rng and mutate
      'batch_stats'.
    optimizer: the optax transformation used to create `state.opt_state`.
    learning_rate: the schedule inside `optimizer`, reported in the metrics.
    augment: `fn(key, images [b, H, W, C] in [0, 1]) -> images`, random, run on device.
    mean, std: per-channel normalization, length C.
    label_smoothing: eps in [0, 1).
    input_transform: `fn(images in [0, 1]) -> model input in [0, 1]`, deterministic, after
      `augment` (the experiments' fixed pixel permutation, placement on a canvas); the eval step
      must get the same one.

  Returns:
    A function of `state` (replicated), `batch` ('image' uint8 `[b, H, W, C]`, 'label' int32
    `[b]`), and `key` (the run's base key, the same on every device). Its metrics ('loss',
    'accuracy', 'learning_rate') are averaged over all devices.
  """

  def train_step(state: TrainState, batch: dict, key: jax.Array):
    augment_key, dropout_key = jax.random.split(device_step_key(key, state.step))
    images = normalize(input_transform(augment(augment_key, to_unit_interval(batch["image"]))),
                       mean, std)
    labels = batch["label"]

    def loss_fn(params):
      variables = {"params": params, "batch_stats": state.batch_stats}
      logits, updated = model.apply(variables, images, train=True, rngs={"dropout": dropout_key},
                                    mutable=["batch_stats"])
      loss = jnp.mean(cross_entropy(logits, labels, label_smoothing))
      return loss, (logits, updated.get("batch_stats", {}))

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    grads = mean_over_devices(grads)
    # A no-op when batch norm already syncs its statistics over the axis; keeps the replicas
    # identical for models that do not.
    batch_stats = mean_over_devices(batch_stats)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = mean_over_devices({
        "loss": loss,
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
    })
    metrics["learning_rate"] = learning_rate(state.step)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    return new_state, metrics

  return train_step


def make_eval_step(model: nn.Module, mean, std,
                   input_transform: ImageTransform = identity) -> Callable:
  """Builds `eval_step(state, batch) -> sums`, to be mapped over 'batch'.

  Padded examples (`batch['mask']` False) count for nothing, so summing the returned totals over
  all batches of a split gives the exact split accuracy `correct / count` and mean loss
  `loss_sum / count`, with no example dropped. `input_transform` as in `make_train_step`.

  Returns:
    A function of `state` and `batch` ('image' `[b, H, W, C]`, 'label' `[b]`, 'mask' bool `[b]`)
    returning float32 scalars 'loss_sum', 'correct', 'count', summed over all devices.
  """

  def eval_step(state: TrainState, batch: dict):
    images = normalize(input_transform(to_unit_interval(batch["image"])), mean, std)
    logits = model.apply(state.variables, images, train=False)
    mask = batch["mask"].astype(jnp.float32)
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return lax.psum({
        "loss_sum": jnp.sum(cross_entropy(logits, batch["label"]) * mask),
        "correct": jnp.sum(correct * mask),
        "count": jnp.sum(mask),
    }, AXIS_NAME)

  return eval_step
