"""Does a pmapped step on 2 virtual CPU devices (one per core) beat one 2-thread device?

The device count is fixed when jax starts (`--xla_force_host_platform_device_count`), so each
configuration runs in its own child process (`python -m benchmarks.data_parallel`), alternating,
with the same global batch. Both run the project's train step as `launch.py` maps it
(`benchmarks.steps.jax_runner`): gradients averaged with `pmean`, batch norm synchronized over
the axis 'batch'.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys


def _worker(arguments) -> None:
  from cnn_jax import runtime
  runtime.setup(malloc_tunables=False)  # The parent chose the allocator (A/B runs).
  import jax

  from benchmarks import environment, steps
  runner = steps.jax_runner(steps.MODELS[arguments.model], arguments.lowering)
  runner.train()
  images_per_s = steps.MODELS[arguments.model].batch / environment.median_seconds(
      runner.train, arguments.repeats)
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
           "devices": devices, "form": "pmap, 1 device x 2 threads" if devices == 1 else
           "pmap, 2 devices", "train_images_per_s": statistics.median(values),
           "all_rounds": values} for devices, values in results.items()]


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--model", default="resnet18_cifar")
  parser.add_argument("--lowering", default="xla")
  parser.add_argument("--repeats", type=int, default=5)
  _worker(parser.parse_args())
