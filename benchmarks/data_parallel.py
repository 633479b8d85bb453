"""Does a pmapped step on 2 virtual CPU devices (one per core) beat one 2-thread device?

The device count is fixed when jax starts (`--xla_force_host_platform_device_count`), so each
configuration runs in its own child process (`python -m benchmarks.data_parallel`), alternating,
with the same global batch. The pmapped step averages gradients with `pmean` and synchronizes
batch norm over the axis 'batch', as a data-parallel training run does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

AXIS_NAME = "batch"


def _pmapped_images_per_s(model_name: str, lowering_name: str, repeats: int) -> float:
  import jax
  import numpy as np
  import optax

  from benchmarks import environment, steps
  spec = steps.MODELS[model_name]
  devices = jax.local_device_count()
  model = steps.build_model(spec, lowering_name,
                            **({"axis_name": AXIS_NAME} if "resnet" in spec.model else {}))
  images, labels = steps.synthetic_batch(spec)
  optimizer = optax.sgd(steps.LEARNING_RATE, momentum=steps.MOMENTUM)

  train_step = steps.sgd_train_step(model, optimizer, axis_name=AXIS_NAME)

  init_model = steps.build_model(spec, lowering_name)
  variables = init_model.init({"params": jax.random.key(1)}, images[:1], train=False)
  state = steps.initial_state(variables, optimizer)
  state = jax.tree.map(lambda x: np.broadcast_to(x, (devices,) + np.shape(x)), state)
  shard = lambda x: x.reshape((devices, x.shape[0] // devices) + x.shape[1:])
  step = jax.pmap(train_step, axis_name=AXIS_NAME, in_axes=(0, 0, 0, None),
                  donate_argnums=(0,))
  images, labels, rng = shard(images), shard(labels), jax.random.key(3)
  box = {"state": step(state, images, labels, rng)[0]}

  def train():
    box["state"], loss = step(box["state"], images, labels, rng)
    loss.block_until_ready()

  train()
  return spec.batch / environment.median_seconds(train, repeats)


def _worker(arguments) -> None:
  from cnn_jax import runtime
  runtime.setup(malloc_tunables=False)  # The parent chose the allocator (A/B runs).
  import jax

  from benchmarks import environment, steps
  if jax.local_device_count() == 1:
    runner = steps.jax_runner(steps.MODELS[arguments.model], arguments.lowering)
    runner.train()
    images_per_s = steps.MODELS[arguments.model].batch / environment.median_seconds(
        runner.train, arguments.repeats)
  else:
    images_per_s = _pmapped_images_per_s(arguments.model, arguments.lowering, arguments.repeats)
  print(json.dumps({"devices": jax.local_device_count(), "train_images_per_s": images_per_s}))


def compare(model_name: str, lowering_name: str, repeats: int, rounds: int) -> list[dict]:
  """Alternates child processes with 1 and 2 CPU devices; one record per configuration."""
  results = {1: [], 2: []}
  for _ in range(rounds):
    for devices in (1, 2):
      environment_variables = dict(os.environ)
      environment_variables["XLA_FLAGS"] = (
          f"{os.environ.get('XLA_FLAGS', '')} "
          f"--xla_force_host_platform_device_count={devices}").strip()
      output = subprocess.run(
          [sys.executable, "-m", "benchmarks.data_parallel", "--model", model_name,
           "--lowering", lowering_name, "--repeats", str(repeats)],
          env=environment_variables, check=True, capture_output=True, text=True).stdout
      results[devices].append(json.loads(output.strip().splitlines()[-1])["train_images_per_s"])
  return [{"section": "data_parallel", "model": model_name, "lowering": lowering_name,
           "devices": devices, "form": "jit, 1 device x 2 threads" if devices == 1 else
           "pmap, 2 devices", "train_images_per_s": statistics.median(values),
           "all_rounds": values} for devices, values in results.items()]


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--model", default="resnet18_cifar")
  parser.add_argument("--lowering", default="xla")
  parser.add_argument("--repeats", type=int, default=5)
  _worker(parser.parse_args())
