"""The convolution guard's cost on the models: their train steps with and without it.

    python -m benchmarks.conv_guard

`cnn_jax.ops.lowering` sends the geometries whose gradient XLA:CPU computes wrong or aborts on
(`docs/conv_gradients.md`) through other formulations. This lowers each model's train step
(`cnn_jax.train.step.make_train_step` as the benchmarks build it, every lowering) twice, as is and
with the guard's rule replaced by "never fails", and compares the two programs XLA receives; it also
counts the layers the rule flags. Identical programs compile to identical executables, so the guard
costs nothing at run time on these shapes; what remains is the rule's Python at trace time (traced
once to warm up, then with and without the guard).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from unittest import mock

import jax
import optax

from benchmarks import steps
from cnn_jax.data.augment import build_augmentation
from cnn_jax.ops import lowering
from cnn_jax import train
from cnn_jax.train import parallel, step
from cnn_jax.train.state import create_train_state


@contextlib.contextmanager
def _guard(enabled: bool, flagged: list):
  """The rule as is (recording what it flags into `flagged`), or one that flags nothing."""
  rule = lowering.xla_convolution_failure

  def recorded(*args):
    failure = rule(*args)
    if failure != "ok":
      flagged.append((args, failure))
    return failure if enabled else "ok"

  with mock.patch.object(lowering, "xla_convolution_failure", recorded):
    yield


def train_step_program(spec: steps.ModelSpec, lowering_name: str) -> str:
  """The StableHLO text of `spec`'s train step (`make_train_step`, pmapped as `launch.py` maps
  it) under `lowering_name`."""
  model = train.with_axis_name(steps.build_model(spec, lowering_name), step.AXIS_NAME)
  batch = steps.train_batch(spec)
  channels = batch["image"].shape[-1]
  optimizer = optax.sgd(steps.LEARNING_RATE, momentum=steps.MOMENTUM)
  train_step = step.make_train_step(model, optimizer, optax.constant_schedule(steps.LEARNING_RATE),
                                    build_augmentation(""), (0.5,) * channels,
                                    (0.25,) * channels, label_smoothing=0.0)
  data_parallel = parallel.build_data_parallel("pmap", train_step, step.make_eval_step(
      model, (0.5,) * channels, (0.25,) * channels))
  state = jax.device_get(create_train_state(model, optimizer, jax.random.key(1),
                                            batch["image"].shape[1:]))
  return data_parallel.train_step.lower(data_parallel.put_state(state),
                                        data_parallel.put_batch(batch),
                                        jax.random.key(3)).as_text()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", nargs="+", default=list(steps.MODELS), choices=steps.MODELS)
  parser.add_argument("--lowerings", nargs="+", default=list(steps.LOWERINGS),
                      choices=steps.LOWERINGS)
  args = parser.parse_args()
  print("| model | lowering | layers flagged | program with guard = without | trace s with / "
        "without |\n|---|---|---|---|---|")
  for name in args.models:
    for lowering_name in args.lowerings:
      programs, seconds, flagged = [], [], []
      with _guard(False, []):  # warm-up: the first trace also fills jax's caches
        train_step_program(steps.MODELS[name], lowering_name)
      for enabled in (True, False):
        with _guard(enabled, flagged if enabled else []):
          start = time.perf_counter()
          programs.append(train_step_program(steps.MODELS[name], lowering_name))
          seconds.append(time.perf_counter() - start)
      print(f"| {name} | {lowering_name} | {len(flagged)} | {programs[0] == programs[1]} | "
            f"{seconds[0]:.1f} / {seconds[1]:.1f} |", flush=True)


if __name__ == "__main__":
  main()
