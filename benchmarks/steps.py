"""Benchmark steps: the same training and evaluation step for cnn-jax models and their torch twins.

Train step = forward + backward + SGD with momentum 0.9, float32, one synthetic batch reused;
eval step = forward in inference mode. Each `Runner` exposes `train()` and `evaluate()`, each
running one step and blocking until it is done, so that the caller can interleave JAX and torch
(absolute speeds on a shared machine drift by 2-3x; ratios within one round do not).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnn_jax import models, ops

# 'xla': the reference lowering; 'tiled': every tiled part; 'auto': the models' default.
LOWERINGS = ops.LOWERINGS
LEARNING_RATE, MOMENTUM = 0.01, 0.9


class ModelSpec(NamedTuple):
  """A benchmarked model: `get_model(model, **overrides)` on `[batch, *image_shape]` images."""
  model: str
  overrides: dict
  image_shape: tuple[int, int, int]
  batch: int
  num_classes: int


MODELS = {
    "cnn": ModelSpec("cnn", {}, (28, 28, 1), 256, 10),
    "resnet20": ModelSpec("resnet20", {}, (32, 32, 3), 128, 10),
    "resnet18_cifar": ModelSpec("resnet18", {"stem": "cifar", "num_classes": 10}, (32, 32, 3),
                                128, 10),
    "resnet18": ModelSpec("resnet18", {}, (224, 224, 3), 32, 1000),
    "alexnet_torchvision": ModelSpec("alexnet_torchvision", {}, (224, 224, 3), 32, 1000),
}


def build_model(spec: ModelSpec, lowering: str, **overrides):
  """`spec`'s model with every conv and max pool lowered as `lowering` says (`ops.LOWERINGS`)."""
  ops.lowering.check_lowering(lowering)
  return models.get_model(spec.model, **spec.overrides, **overrides, lowering=lowering)


def synthetic_batch(spec: ModelSpec, batch: int | None = None, image_shape=None):
  """Standard normal images `[N, H, W, C]` and uniform integer labels `[N]`."""
  batch = batch or spec.batch
  image_shape = image_shape or spec.image_shape
  images_key, labels_key = jax.random.split(jax.random.key(0))
  images = jax.random.normal(images_key, (batch,) + tuple(image_shape), jnp.float32)
  labels = jax.random.randint(labels_key, (batch,), 0, spec.num_classes)
  return images, labels


def _first(cost):
  """`cost_analysis()` is a dict, or a one-element list of dicts in some jax versions."""
  return cost[0] if isinstance(cost, (list, tuple)) else cost


@dataclasses.dataclass
class JaxRunner:
  """A jitted (AOT-compiled) train step with a donated state, and an eval step.

  Attributes:
    compile_seconds: lowering + compiling both steps.
    first_step_seconds: the first train step after compiling.
    train_flops, eval_flops: XLA's `cost_analysis` FLOPs of one step.
    train_memory_mb: XLA's buffers of the train step (arguments + outputs + temporaries -
      aliased), the step's peak memory as XLA plans it.
    parameters: the number of trainable parameters.
  """
  train: Callable[[], None]
  evaluate: Callable[[], None]
  compile_seconds: float
  first_step_seconds: float
  train_flops: float
  eval_flops: float
  train_memory_mb: float
  parameters: int


def sgd_train_step(model, optimizer, axis_name: str | None = None):
  """The benchmarked step, `(state, images, labels, rng) -> (state, loss)`.

  `state = (params, batch_stats, opt_state)`; cross-entropy, forward + backward + optimizer.
  With `axis_name` (inside `jax.pmap`), gradients are averaged over that axis first.
  """

  def train_step(state, images, labels, rng):
    params, batch_stats, opt_state = state

    def loss_fn(params):
      logits, updates = model.apply({"params": params, **batch_stats}, images, train=True,
                                    rngs={"dropout": rng}, mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    if axis_name is not None:
      grads = jax.lax.pmean(grads, axis_name)
    param_updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, param_updates), dict(updates), opt_state), loss

  return train_step


def initial_state(variables, optimizer):
  """`(params, batch_stats, opt_state)` of `sgd_train_step` from a model's init variables."""
  params = variables["params"]
  batch_stats = {k: v for k, v in variables.items() if k == "batch_stats"}
  return params, batch_stats, optimizer.init(params)


def jax_runner(spec: ModelSpec, lowering_name: str, *, dtype: str = "float32",
               batch: int | None = None, image_shape=None) -> JaxRunner:
  """Builds, compiles and runs once the JAX train and eval steps of `spec`.

  `dtype` is the compute dtype ('float32' or 'bfloat16'); parameters and logits stay float32.
  """
  model = build_model(spec, lowering_name, dtype=jnp.dtype(dtype))
  images, labels = synthetic_batch(spec, batch, image_shape)
  optimizer = optax.sgd(LEARNING_RATE, momentum=MOMENTUM)

  train_step = sgd_train_step(model, optimizer)

  def eval_step(variables, images):
    return model.apply(variables, images, train=False)

  start = time.perf_counter()
  variables = jax.jit(functools.partial(model.init, train=False))(
      {"params": jax.random.key(1), "dropout": jax.random.key(2)}, images[:1])
  state = initial_state(variables, optimizer)
  rng = jax.random.key(3)
  train_compiled = jax.jit(train_step, donate_argnums=0).lower(state, images, labels,
                                                               rng).compile()
  eval_compiled = jax.jit(eval_step).lower(variables, images).compile()
  compile_seconds = time.perf_counter() - start
  memory = train_compiled.memory_analysis()
  memory_mb = (memory.argument_size_in_bytes + memory.output_size_in_bytes
               + memory.temp_size_in_bytes - memory.alias_size_in_bytes) / 2 ** 20

  # The train step donates (deletes) its state; evaluation keeps a copy of the initial one.
  variables = jax.tree.map(jnp.copy, variables)
  box = {"state": state}

  def train():
    box["state"], loss = train_compiled(box["state"], images, labels, rng)
    loss.block_until_ready()

  def evaluate():
    eval_compiled(variables, images).block_until_ready()

  start = time.perf_counter()
  train()
  first_step_seconds = time.perf_counter() - start
  return JaxRunner(
      train=train, evaluate=evaluate, compile_seconds=compile_seconds,
      first_step_seconds=first_step_seconds,
      train_flops=float(_first(train_compiled.cost_analysis()).get("flops", np.nan)),
      eval_flops=float(_first(eval_compiled.cost_analysis()).get("flops", np.nan)),
      train_memory_mb=memory_mb,
      parameters=sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"])))


@dataclasses.dataclass
class TorchRunner:
  """The torch twin's train and eval steps, in the faster memory format of the two."""
  train: Callable[[], None]
  evaluate: Callable[[], None]
  memory_format: str
  parameters: int


def torch_runner(spec: ModelSpec, name: str, *, dtype: str = "float32", device: str = "cpu",
                 batch: int | None = None, image_shape=None,
                 probe_steps: int = 2) -> TorchRunner:
  """Builds the torch twin of benchmark model `name`; picks channels-last if it trains faster.

  With `dtype='bfloat16'` the steps run under `torch.autocast` (float32 parameters, as JAX's
  `dtype` field); on `device='cuda'` each step ends with a synchronize.
  """
  import torch
  from torch.nn import functional as F

  from benchmarks import environment, torch_models
  batch = batch or spec.batch
  height, width, channels = image_shape or spec.image_shape
  torch.manual_seed(0)
  model = torch_models.build(name, spec.num_classes).to(device)
  optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
  images = torch.randn(batch, channels, height, width, device=device)
  labels = torch.randint(0, spec.num_classes, (batch,), device=device)
  autocast = lambda: torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
  synchronize = torch.cuda.synchronize if device == "cuda" else lambda: None

  def steps(memory_format):
    model.to(memory_format=memory_format)
    x = images.contiguous(memory_format=memory_format)

    def train():
      model.train()
      optimizer.zero_grad(set_to_none=True)
      with autocast():
        loss = F.cross_entropy(model(x), labels)
      loss.backward()
      optimizer.step()
      synchronize()

    def evaluate():
      model.eval()
      with torch.inference_mode(), autocast():
        model(x)
      synchronize()

    return train, evaluate

  timings = {}
  for memory_format in (torch.contiguous_format, torch.channels_last):
    train, _ = steps(memory_format)
    train()
    timings[memory_format] = environment.median_seconds(train, probe_steps)
  best = min(timings, key=timings.get)
  train, evaluate = steps(best)
  return TorchRunner(train=train, evaluate=evaluate,
                     memory_format="channels_last" if best == torch.channels_last else "nchw",
                     parameters=torch_models.parameter_count(model))
