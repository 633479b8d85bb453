"""Throughput of the data layer: the offline input pipeline and the on-device augmentations.

Measures, after warm-up (compilation, TFDS preparation, the first pass that fills the cache):
* the 'mnist_offline' training iterator (tf.data on the host CPU), batch 256, images/s;
* resuming that iterator at a late step (the cost of `start_step`), seconds per 1,000 steps;
* each augmentation, jitted, on a batch of 256 MNIST-sized float32 images, and the default
  'translate=2,rotate=10', images/s (median of repeats, timed with `block_until_ready`).

Writes `benchmarks/results/input_pipeline.json` and prints a Markdown table. Like the other
benchmarks it starts with `cnn_jax.runtime.setup` (re-executed with the malloc tunables unless
told not to).

    .venv/bin/python -m benchmarks.input_pipeline [--data_dir DIR] [--no-malloc-tunables]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

from benchmarks import environment
from cnn_jax import runtime

BATCH_SIZE = 256
AUGMENTATION_SPECS = ("crop=4", "translate=2", "rotate=10", "flip", "translate=2,rotate=10")
RESULTS_PATH = pathlib.Path(__file__).parent / "results" / "input_pipeline.json"


def pipeline_images_per_second(data_dir: str | None, warmup: int = 30, steps: int = 300,
                               repeats: int = 3) -> list[float]:
  """Images/s of the training iterator, one figure per repeat of `steps` batches."""
  from cnn_jax.data.input_pipeline import create_split
  iterator = create_split("mnist_offline", "train", BATCH_SIZE, train=True, data_dir=data_dir)
  for _ in range(warmup):
    next(iterator)
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      next(iterator)
    rates.append(steps * BATCH_SIZE / (time.perf_counter() - start))
  return rates


def resume_seconds_per_1000_steps(data_dir: str | None, start_step: int = 5000) -> float:
  """Time from creating an iterator at `start_step` to its first batch, per 1,000 skipped steps."""
  from cnn_jax.data.input_pipeline import create_split
  start = time.perf_counter()
  next(create_split("mnist_offline", "train", BATCH_SIZE, train=True, data_dir=data_dir,
                    start_step=start_step))
  return (time.perf_counter() - start) * 1000 / start_step


def augmentation_images_per_second(spec: str, repeats: int = 5, calls: int = 20) -> list[float]:
  """Images/s of the jitted augmentation `spec` on `[256, 28, 28, 1]` float32 images."""
  import jax

  from cnn_jax.data import augment
  augmentation = jax.jit(augment.build_augmentation(spec))
  images = jax.random.uniform(jax.random.key(0), (BATCH_SIZE, 28, 28, 1))
  keys = jax.random.split(jax.random.key(1), calls)
  augmentation(keys[0], images).block_until_ready()  # Compile.
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    for key in keys:
      out = augmentation(key, images)
    out.block_until_ready()
    rates.append(calls * BATCH_SIZE / (time.perf_counter() - start))
  return rates


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default=None, help="TFDS data_dir (default: TFDS's)")
  parser.add_argument("--no-malloc-tunables", action="store_true",
                      help="do not re-execute with GLIBC_TUNABLES (for an A/B comparison)")
  arguments = parser.parse_args()
  runtime.setup(malloc_tunables=not arguments.no_malloc_tunables)

  pipeline_rates = pipeline_images_per_second(arguments.data_dir)
  results = {
      "environment": environment.describe(),
      "batch_size": BATCH_SIZE,
      "pipeline": {
          "mnist_offline_train_images_per_second": statistics.median(pipeline_rates),
          "repeats": pipeline_rates,
          "resume_seconds_per_1000_steps": resume_seconds_per_1000_steps(arguments.data_dir),
      },
      "augmentation_images_per_second": {},
  }
  for spec in AUGMENTATION_SPECS:
    rates = augmentation_images_per_second(spec)
    results["augmentation_images_per_second"][spec] = {"median": statistics.median(rates),
                                                       "repeats": rates}
  results["environment"]["load_average_1min_at_end"] = environment.describe()[
      "load_average_1min"]

  RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
  RESULTS_PATH.write_text(json.dumps(results, indent=2) + "\n")
  setup = results["environment"]
  print(f"GLIBC_TUNABLES {'set' if setup['glibc_tunables'] else 'not set'}; {setup['cpu_count']} "
        f"CPUs; load average {setup['load_average_1min']:.1f} at start, "
        f"{setup['load_average_1min_at_end']:.1f} at end\n")
  print("| measurement | images/s (median) |")
  print("|---|---|")
  print(f"| mnist_offline train iterator, batch {BATCH_SIZE} (tf.data, host) | "
        f"{results['pipeline']['mnist_offline_train_images_per_second']:,.0f} |")
  for spec, figures in results["augmentation_images_per_second"].items():
    print(f"| augmentation '{spec}', jitted, {BATCH_SIZE} x 28 x 28 x 1 | "
          f"{figures['median']:,.0f} |")
  print(f"\nResuming at start_step costs {results['pipeline']['resume_seconds_per_1000_steps']:.2f}"
        f" s per 1,000 skipped steps of {BATCH_SIZE}.")


if __name__ == "__main__":
  main()
