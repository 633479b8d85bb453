"""Benchmark steps: the project's training and evaluation steps and their torch twins.

The JAX side times `cnn_jax.train.step.make_train_step` mapped over the devices as `launch.py`
runs it (uint8 input normalized on device, forward + backward + SGD with momentum 0.9, float32,
metrics); torch's twin does forward + backward + the same SGD. One synthetic batch is reused;
eval step = forward in inference mode. Batch, state and key stay on the devices, as torch's
tensors stay on its device: a timed JAX step that copies anything from the host raises
(`jax.transfer_guard_host_to_device`), since such a copy (of a 61M-parameter AlexNet state, say)
can cost more than the step itself. Each `Runner` exposes `train()` and `evaluate()`, each
running one step and blocking until it is done, so that the caller can interleave JAX and torch
(absolute speeds on a shared machine drift by 2-3x; ratios within one round do not).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnn_jax import models, ops, train
from cnn_jax.data.augment import build_augmentation
from cnn_jax.train import parallel, step
from cnn_jax.train.state import create_train_state

# 'xla': the reference lowering; 'tiled': every tiled part; 'auto': the models' default;
# 'onednn': oneDNN's convolutions where the extension is built (`available_lowerings`).
LOWERINGS = ops.LOWERINGS
available_lowerings = ops.lowering.available_lowerings
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
  """The mapped (AOT-compiled) train step with a donated state, and the eval step.

  Attributes:
    compile_seconds: lowering + compiling both steps.
    first_step_seconds: the first train step after compiling.
    train_flops, eval_flops: XLA's `cost_analysis` FLOPs of one step.
    train_memory_mb: XLA's buffers of the train step (arguments + outputs + temporaries -
      aliased), the step's peak memory as XLA plans it.
    parameters: the number of trainable parameters.
    onednn_calls: oneDNN custom calls in the compiled train step (0: oneDNN not used).
    train_hlo, eval_hlo: the compiled steps' HLO text (`benchmarks.step_profile` reads it).
  """
  train: Callable[[], None]
  evaluate: Callable[[], None]
  compile_seconds: float
  first_step_seconds: float
  train_flops: float
  eval_flops: float
  train_memory_mb: float
  parameters: int
  onednn_calls: int
  train_hlo: str
  eval_hlo: str


def train_batch(spec: ModelSpec, batch: int | None = None, image_shape=None) -> dict:
  """A batch as the input pipeline yields it: uniform uint8 'image' `[N, H, W, C]`, 'label' `[N]`
  and an all-true 'mask'."""
  batch = batch or spec.batch
  rng = np.random.default_rng(0)
  return {"image": rng.integers(0, 256, (batch, *(image_shape or spec.image_shape)), np.uint8),
          "label": rng.integers(0, spec.num_classes, batch).astype(np.int32),
          "mask": np.ones(batch, bool)}


def jax_runner(spec: ModelSpec, lowering_name: str, *, dtype: str = "float32",
               batch: int | None = None, image_shape=None,
               parallelism: str = "pmap") -> JaxRunner:
  """Builds, compiles and runs once the project's train and eval steps for `spec`.

  The steps are `cnn_jax.train.step.make_train_step` and `make_eval_step`, mapped over all
  devices with `parallelism` as `launch.py` maps them, with plain SGD (momentum 0.9, as the torch
  twin), no augmentation and no label smoothing. `dtype` is the compute dtype ('float32' or
  'bfloat16'); parameters and logits stay float32.
  """
  model = train.with_axis_name(build_model(spec, lowering_name, dtype=jnp.dtype(dtype)),
                               step.AXIS_NAME)
  batch = train_batch(spec, batch, image_shape)
  channels = batch["image"].shape[-1]
  optimizer = optax.sgd(LEARNING_RATE, momentum=MOMENTUM)
  mean, std = (0.5,) * channels, (0.25,) * channels
  data_parallel = parallel.build_data_parallel(
      parallelism,
      step.make_train_step(model, optimizer, optax.constant_schedule(LEARNING_RATE),
                           build_augmentation(""), mean, std, label_smoothing=0.0),
      step.make_eval_step(model, mean, std))

  start = time.perf_counter()
  state = jax.device_get(create_train_state(model, optimizer, jax.random.key(1),
                                            batch["image"].shape[1:]))
  # The train step donates (deletes) its state; evaluation keeps a copy of the initial one.
  eval_state, device_batch = data_parallel.put_state(state), data_parallel.put_batch(batch)
  box = {"state": data_parallel.put_state(state)}
  key = jax.random.key(3)
  train_compiled = data_parallel.train_step.lower(eval_state, device_batch, key).compile()
  eval_compiled = data_parallel.eval_step.lower(eval_state, device_batch).compile()
  compile_seconds = time.perf_counter() - start
  memory = train_compiled.memory_analysis()
  memory_mb = (memory.argument_size_in_bytes + memory.output_size_in_bytes
               + memory.temp_size_in_bytes - memory.alias_size_in_bytes) / 2 ** 20

  def train_once():
    with jax.transfer_guard_host_to_device("disallow"):
      box["state"], metrics = train_compiled(box["state"], device_batch, key)
    jax.block_until_ready(metrics)

  def evaluate():
    with jax.transfer_guard_host_to_device("disallow"):
      sums = eval_compiled(eval_state, device_batch)
    jax.block_until_ready(sums)

  train_hlo = train_compiled.as_text()
  start = time.perf_counter()
  train_once()
  first_step_seconds = time.perf_counter() - start
  return JaxRunner(
      train=train_once, evaluate=evaluate, compile_seconds=compile_seconds,
      first_step_seconds=first_step_seconds,
      train_flops=float(_first(train_compiled.cost_analysis()).get("flops", np.nan)),
      eval_flops=float(_first(eval_compiled.cost_analysis()).get("flops", np.nan)),
      train_memory_mb=memory_mb,
      parameters=sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params)),
      onednn_calls=train_hlo.count('custom_call_target="cnn_jax_onednn_'),
      train_hlo=train_hlo, eval_hlo=eval_compiled.as_text())


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
