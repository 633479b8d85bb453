"""The convolution guard's cost on the models: their train steps with and without it.

    python -m benchmarks.conv_guard

`cnn_jax.ops.lowering` sends the geometries whose gradient XLA:CPU computes wrong or aborts on
(`docs/conv_gradients.md`) through other formulations. This lowers each model's train step
(`benchmarks.steps.sgd_train_step`, every lowering) twice, as is and with the guard's rule
replaced by "never fails", and compares the two programs XLA receives; it also counts the
layers the rule flags. Identical programs compile to identical executables, so the guard costs
nothing at run time on these shapes; what remains is the rule's Python at trace time (traced
once to warm up, then with and without the guard).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import time
from unittest import mock

import jax
import optax

from benchmarks import steps
from cnn_jax.ops import lowering


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
  """The StableHLO text of `spec`'s jitted train step under `lowering_name`."""
  model = steps.build_model(spec, lowering_name)
  images, labels = steps.synthetic_batch(spec)
  optimizer = optax.sgd(steps.LEARNING_RATE, momentum=steps.MOMENTUM)
  variables = jax.eval_shape(functools.partial(model.init, train=False),
                             {"params": jax.random.key(1), "dropout": jax.random.key(2)},
                             images[:1])
  state = jax.eval_shape(lambda v: steps.initial_state(v, optimizer), variables)
  step = jax.jit(steps.sgd_train_step(model, optimizer))
  return step.lower(state, images, labels, jax.random.key(3)).as_text()


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
