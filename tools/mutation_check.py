"""Mutation check: do the tests catch small, realistic bugs in the code they own?

Each mutation below replaces one exact snippet of one source file (a one-line bug: a wrong sign,
a swapped pair, a dropped term) and names the test files that own that code. The script copies
the repository (tracked and untracked, not ignored, files) to a temporary directory, runs those
test files once unchanged (they must pass), then plants one mutation at a time and runs its test
files with pytest (`-x -q`, the default marker selection, so slow tests are not counted). A
mutation is *caught* when pytest fails and *survives* when it passes.

Exit status 0 when every mutation is caught; 1 when one survives, when a snippet is no longer in
its file exactly once (so that the list stays in sync with the code), or when the unchanged tests
fail. Runs on demand, not in the default suite (it takes minutes): see `docs/testing.md`.

  python tools/mutation_check.py                  # all mutations
  python tools/mutation_check.py --only optim     # those whose name contains 'optim'
  python tools/mutation_check.py --list           # the list, nothing run
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Mutation(NamedTuple):
  """Replace `original` (exactly once in `path`) by `replacement`; `tests` must then fail."""
  name: str
  path: str
  original: str
  replacement: str
  tests: tuple[str, ...]


M = Mutation
MUTATIONS = (
    # The bugs of issue 19's table.
    M("conv_transpose default input: largest valid size instead of the smallest",
      "cnn_jax/ops/conv.py", "d * (f - 1) + 1 - lo - hi", "d * (f - 1) + s - lo - hi",
      ("tests/ops/test_conv.py",)),
    M("off-grid equivariance error: worst neighbouring grid shift instead of the best",
      "cnn_jax/analysis/equivariance_error.py", "return min(float(", "return max(float(",
      ("tests/analysis/test_equivariance_error.py",)),
    M("SGD built without Nesterov momentum",
      "cnn_jax/train/optim.py", "nesterov=config.nesterov", "nesterov=False",
      ("tests/train/test_optim.py",)),
    M("strongest_channels returns the weakest channels",
      "cnn_jax/viz/report.py", "np.argsort(-maxima,", "np.argsort(maxima,",
      ("tests/viz/test_report.py",)),
    M("checkpoint restore returns the template's opt_state (momentum lost)",
      "cnn_jax/train/checkpoint.py", "{'; '.join(mismatched[:5])}\")\n  return restored\n",
      "{'; '.join(mismatched[:5])}\")\n  return restored.replace(opt_state=template.opt_state)\n",
      ("tests/train/test_checkpoint.py",)),
    M("Lie derivative of a strided layer with the stride scale inverted",
      "cnn_jax/analysis/lie_derivative.py", "scale = input_size / activation.shape[1]",
      "scale = activation.shape[1] / input_size",
      ("tests/analysis/test_lie_derivative.py",)),
    M("layers.pool ignores blur",
      "cnn_jax/models/layers.py", "if not blur or stride == 1:", "if True:",
      ("tests/models/test_layers.py",)),
    M("blur filter's low and high pads swapped",
      "cnn_jax/ops/pooling.py", "lo, hi = (filter_size - 1) // 2, filter_size // 2",
      "hi, lo = (filter_size - 1) // 2, filter_size // 2",
      ("tests/ops/test_pooling.py",)),
    M("shift consistency counts only the first pass",
      "cnn_jax/analysis/shift_consistency.py", "return float(jnp.mean(jnp.stack(agreements)))",
      "return float(agreements[0])",
      ("tests/analysis/test_shift_consistency.py",)),
    # cnn_jax/analysis: one per module.
    M("integer shifts move the content the wrong way",
      "cnn_jax/analysis/integer_shifts.py", "jnp.roll(image, shift, axis=(0, 1))",
      "jnp.roll(image, -shift, axis=(0, 1))",
      ("tests/analysis/test_integer_shifts.py",)),
    M("model_features_fn drops the logits of a model that does not sow them",
      "cnn_jax/analysis/intermediates.py", 'if not names or names[-1] != "logits":',
      "if not names:",
      ("tests/analysis/test_intermediates.py",)),
    M("Lie attribution terms with the wrong sign",
      "cnn_jax/analysis/lie_attribution.py", "terms = [before - after for",
      "terms = [after - before for",
      ("tests/analysis/test_lie_attribution.py",)),
    M("batched logits keep the padding rows instead of the real ones",
      "cnn_jax/analysis/predictions.py", "pieces.append(apply_fn(batch)[:batch_size - missing])",
      "pieces.append(apply_fn(batch)[missing:])",
      ("tests/analysis/test_predictions.py",)),
    M("self-similarity compares overlapping patches",
      "cnn_jax/analysis/self_similarity.py", "apart = jnp.any(gaps >= patch_size, axis=-1)",
      "apart = jnp.all(gaps >= patch_size, axis=-1)",
      ("tests/analysis/test_self_similarity.py",)),
    M("shift stability: top class taken at the first position, not the unshifted image",
      "cnn_jax/analysis/shift_stability.py", "top_class = predictions[num_positions // 2]",
      "top_class = predictions[0]",
      ("tests/analysis/test_shift_stability.py",)),
    M("accuracy vs translation: axes swapped",
      "cnn_jax/analysis/transformation_accuracy.py",
      'unit = jnp.array([1, 0] if axis == "vertical" else [0, 1])',
      'unit = jnp.array([0, 1] if axis == "vertical" else [1, 0])',
      ("tests/analysis/test_transformation_accuracy.py",)),
    # cnn_jax/train: one per module.
    M("AdamW's first-moment decay ignores config.momentum",
      "cnn_jax/train/optim.py", "b1=config.momentum", "b1=0.9",
      ("tests/train/test_optim.py",)),
    M("piecewise schedule boundaries not shifted by the warmup",
      "cnn_jax/train/optim.py", "boundary - warmup_steps: config.decay_factor",
      "boundary: config.decay_factor",
      ("tests/train/test_optim.py",)),
    M("a resumed run restarts the training stream at step 0",
      "cnn_jax/train/loop.py", "start_step=start_step,", "start_step=0,",
      ("tests/train/test_loop.py",)),
    M("format_duration counts all minutes, not those within the hour",
      "cnn_jax/train/metrics.py", "seconds % 3600 // 60:02d", "seconds // 60:02d",
      ("tests/train/test_metrics.py",)),
    M("log_progress leaves out the test accuracy",
      "cnn_jax/train/metrics.py", '"test_loss", "test_accuracy",', '"test_loss",',
      ("tests/train/test_metrics.py",)),
    M("shard_map gives every device the whole batch",
      "cnn_jax/train/parallel.py", "in_specs=(P(), P(AXIS_NAME), P())",
      "in_specs=(P(), P(), P())",
      ("tests/train/test_step.py",)),
    M("uint8 images not divided by 255",
      "cnn_jax/train/preprocess.py", "return images.astype(jnp.float32) / 255.0",
      "return images.astype(jnp.float32)",
      ("tests/train/test_preprocess.py",)),
    M("run report prints unrounded values",
      "cnn_jax/train/report.py", 'f"| {name} | {value:.4g} |"', 'f"| {name} | {value} |"',
      ("tests/train/test_run_report.py",)),
    M("run report plots the train loss only",
      "cnn_jax/train/report.py", '("train_loss", "test_loss")', '("train_loss",)',
      ("tests/train/test_run_report.py",)),
    M("a new train state starts at step 1",
      "cnn_jax/train/state.py", "step=jnp.zeros((), jnp.int32)", "step=jnp.ones((), jnp.int32)",
      ("tests/train/test_state.py",)),
    M("eval sums count the padded examples as correct",
      "cnn_jax/train/step.py", '"correct": jnp.sum(correct * mask)', '"correct": jnp.sum(correct)',
      ("tests/train/test_step.py",)),
    # cnn_jax/viz: one per module.
    M("activation maps scaled per channel instead of per layer",
      "cnn_jax/viz/feature_maps.py", "grids.upscale(scaled[..., c:c + 1], scale)",
      "grids.upscale(grids.rescale_to_unit(activation[..., c:c + 1]), scale)",
      ("tests/viz/test_feature_maps.py",)),
    M("colourfulness: grey taken over the filters instead of the colour channels",
      "cnn_jax/viz/filters.py", "grey = kernel.mean(axis=2, keepdims=True)",
      "grey = kernel.mean(axis=3, keepdims=True)",
      ("tests/viz/test_filters.py",)),
    M("signed projections not centred at mid-grey",
      "cnn_jax/viz/grids.py", "return 0.5 + signal / (2 * peak)", "return 0.5 + signal / peak",
      ("tests/viz/test_grids.py",)),
    M("guided backprop without the forward ReLU mask",
      "cnn_jax/viz/projection.py",
      '"guided_backprop": lambda upstream, x: upstream * (x > 0) * (upstream > 0)',
      '"guided_backprop": lambda upstream, x: upstream * (upstream > 0)',
      ("tests/viz/test_projection.py",)),
    M("receptive field bounds shifted by the field size",
      "cnn_jax/models/inspect.py", "first = field.start + unit * field.jump - (field.size",
      "first = field.start + unit * field.jump + (field.size",
      ("tests/viz/test_receptive_field.py",)),
    M("top-k keeps the weakest images",
      "cnn_jax/viz/top_activations.py", "order = np.argsort(-candidate.values,",
      "order = np.argsort(candidate.values,",
      ("tests/viz/test_top_activations.py",)),
)


def copy_repository(destination: str) -> None:
  """Copies the files git would see (tracked, and untracked but not ignored) to `destination`."""
  listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPOSITORY, check=True, capture_output=True).stdout
  for relative in filter(None, listing.decode().split("\0")):
    source = os.path.join(REPOSITORY, relative)
    if os.path.isfile(source):
      target = os.path.join(destination, relative)
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.copy2(source, target)


def run_tests(workdir: str, tests, workers: int, timeout: float) -> tuple[bool, str, float]:
  """Runs pytest on `tests` in `workdir`: (passed, last lines of output, seconds)."""
  command = [sys.executable, "-m", "pytest", "-x", "-q", "-n", str(workers),
             "-p", "no:cacheprovider", "--hypothesis-seed=0", *tests]
  start = time.time()
  try:
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True,
                            timeout=timeout)
  except subprocess.TimeoutExpired:
    return False, f"timed out after {timeout:.0f} s", time.time() - start
  lines = (result.stdout + result.stderr).strip().splitlines()
  return result.returncode == 0, "\n".join(lines[-15:]), time.time() - start


def check_snippets(mutations) -> list[str]:
  """The problems with the list: snippets not found exactly once, test files missing."""
  problems = []
  for mutation in mutations:
    with open(os.path.join(REPOSITORY, mutation.path)) as file:
      count = file.read().count(mutation.original)
    if count != 1:
      problems.append(f"{mutation.name}: snippet {mutation.original!r} occurs {count} times in "
                      f"{mutation.path} (must be once)")
    problems += [f"{mutation.name}: test file {test} does not exist" for test in mutation.tests
                 if not os.path.exists(os.path.join(REPOSITORY, test))]
  return problems


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--only", action="append", default=[],
                      help="run only the mutations whose name contains this (repeatable)")
  parser.add_argument("--exclude", action="append", default=[],
                      help="leave out the mutations whose name contains this (repeatable)")
  parser.add_argument("--list", action="store_true", help="print the mutations and exit")
  parser.add_argument("--workers", type=int, default=0, help="pytest-xdist workers (-n)")
  parser.add_argument("--timeout", type=float, default=1200.0,
                      help="seconds per pytest run; a run past it counts as caught")
  parser.add_argument("--no-baseline", action="store_true",
                      help="skip the run of the unchanged tests")
  arguments = parser.parse_args()
  mutations = [m for m in MUTATIONS
               if (not arguments.only or any(part in m.name for part in arguments.only))
               and not any(part in m.name for part in arguments.exclude)]
  if arguments.list:
    for mutation in mutations:
      print(f"{mutation.path}: {mutation.name} -> {' '.join(mutation.tests)}")
    return 0
  problems = check_snippets(mutations)
  for problem in problems:
    print(f"NOT IN SYNC: {problem}")
  runnable = [m for m in mutations if not any(p.startswith(f"{m.name}:") for p in problems)]

  with tempfile.TemporaryDirectory(prefix="mutation_check_") as copy:
    copy_repository(copy)
    if not arguments.no_baseline:
      all_tests = sorted({test for mutation in runnable for test in mutation.tests})
      passed, output, seconds = run_tests(copy, all_tests, arguments.workers, arguments.timeout)
      print(f"baseline: the unchanged tests {'pass' if passed else 'FAIL'} ({seconds:.0f} s)")
      if not passed:
        print(output)
        return 1
    rows = []
    for mutation in runnable:
      path = os.path.join(copy, mutation.path)
      with open(path) as file:
        source = file.read()
      with open(path, "w") as file:
        file.write(source.replace(mutation.original, mutation.replacement))
      try:
        passed, output, seconds = run_tests(copy, mutation.tests, arguments.workers,
                                            arguments.timeout)
      finally:
        with open(path, "w") as file:
          file.write(source)
      rows.append((mutation, "SURVIVED" if passed else "caught", seconds))
      print(f"{'SURVIVED' if passed else 'caught  '} {seconds:6.0f} s  {mutation.path}: "
            f"{mutation.name}", flush=True)
      if passed:
        print("  " + output.replace("\n", "\n  "))

  survivors = [m for m, verdict, _ in rows if verdict == "SURVIVED"]
  print("\n| mutation | file | owning tests | result |\n|---|---|---|---|")
  for mutation, verdict, seconds in rows:
    print(f"| {mutation.name} | `{mutation.path}` | {', '.join(mutation.tests)} | {verdict} "
          f"({seconds:.0f} s) |")
  print(f"\n{len(rows)} mutations run: {len(rows) - len(survivors)} caught, {len(survivors)} "
        f"survived; {len(problems)} not in sync with the code.")
  return 1 if survivors or problems else 0


if __name__ == "__main__":
  sys.exit(main())
