"""Where a train or eval step's time goes: XLA:CPU's per-operation trace, grouped by layer type.

    python -m benchmarks.step_profile --models cnn,resnet20 --lowering auto --steps 5

Each model's step (`benchmarks.steps.jax_runner`, the benchmark's own) runs `--steps` times
under `jax.profiler`; every operation XLA:CPU executes (a thunk: a fusion, a copy, a custom call)
is one trace event carrying its HLO instruction's name. The instruction's `op_name` metadata in the
compiled HLO names the JAX operation and the Flax modules it came from, which decide its group:

  conv forward / input gradient / kernel gradient  oneDNN custom calls, by pass
  conv (XLA)             XLA convolutions and the other operations of a `Conv` module (padding,
                         the kernel gradient's materialized input, tiled products)
  batch norm             operations of a batch-norm module (statistics, apply, their gradients)
  activation             ReLU and its gradient
  pooling                max/average pooling and their gradients
  dense                  dense layers
  layout copies          copies and transposes XLA inserted that no module owns
  loss, optimizer, rest  everything outside the model (loss, gradient reduction, optimizer update)

Times are thread times summed over XLA's and oneDNN's calling threads, per step: XLA runs
independent operations concurrently, so they add up to more than the step's wall time (given
beside them). Writes `<stamp>-profile.json` and `.md` into `--output`.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import glob
import json
import os
import re
import sys
import tempfile
import time

import jax

from benchmarks import environment, steps
from cnn_jax import runtime

GROUPS = ("conv forward (oneDNN)", "conv input gradient (oneDNN)",
          "conv kernel gradient (oneDNN)", "conv (XLA)", "batch norm", "activation", "pooling",
          "dense", "layout copies", "loss, optimizer, rest")
_ONEDNN_GROUPS = {"cnn_jax_onednn_forward": GROUPS[0], "cnn_jax_onednn_backward_data": GROUPS[1],
                  "cnn_jax_onednn_backward_weights": GROUPS[2]}
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?\s([a-z][\w\-]*)\(")


def instruction_groups(hlo_text: str) -> dict[str, str]:
  """{HLO instruction name: group} for every instruction of a compiled module's text."""
  groups = {}
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.match(line)
    if match:
      groups[match.group(1)] = group_of(match.group(2), line)
  return groups


def group_of(opcode: str, line: str) -> str:
  """The group (`GROUPS`) of one HLO instruction, from its opcode, custom-call target and the
  module path in its `op_name`."""
  target = re.search(r'custom_call_target="([^"]+)"', line)
  if target and target.group(1) in _ONEDNN_GROUPS:
    return _ONEDNN_GROUPS[target.group(1)]
  op_name = re.search(r'op_name="([^"]*)"', line)
  path = op_name.group(1) if op_name else ""
  lowered = path.lower()
  if opcode == "convolution" or "conv" in lowered:
    return "conv (XLA)"
  if "norm" in lowered:
    return "batch norm"
  if "relu" in lowered:
    return "activation"
  if "pool" in lowered or "reduce_window" in lowered or "select_and_scatter" in lowered:
    return "pooling"
  if "dense" in lowered or "head" in lowered or "fc" in re.split(r"[/_\d]", lowered):
    return "dense"
  if opcode in ("copy", "transpose") and "(" not in path:
    return "layout copies"
  return "loss, optimizer, rest"


def profile_events(run, steps_to_trace: int) -> tuple[list[tuple[str, float]], float]:
  """[(HLO instruction name, seconds)] of `steps_to_trace` calls of `run`, and their wall time."""
  with tempfile.TemporaryDirectory() as directory:
    jax.profiler.start_trace(directory)
    start = time.perf_counter()
    for _ in range(steps_to_trace):
      run()
    wall = time.perf_counter() - start
    jax.profiler.stop_trace()
    path, = glob.glob(os.path.join(directory, "**", "*.xplane.pb"), recursive=True)
    data = jax.profiler.ProfileData.from_file(path)
  events = []
  for plane in data.planes:
    for line in plane.lines:
      for event in line.events:
        stats = dict(event.stats)
        if "hlo_op" in stats:
          events.append((stats["hlo_op"], event.duration_ns * 1e-9))
  return events, wall


def breakdown(hlo_text: str, run, steps_to_trace: int) -> dict:
  """Milliseconds per step by group, their sum, and the step's wall time."""
  groups = instruction_groups(hlo_text)
  events, wall = profile_events(run, steps_to_trace)
  totals = collections.Counter()
  for name, seconds in events:
    totals[groups.get(name, "loss, optimizer, rest")] += seconds * 1e3 / steps_to_trace
  return {"groups ms": {group: totals[group] for group in GROUPS},
          "summed ms": sum(totals.values()), "wall ms": wall * 1e3 / steps_to_trace}


def _table(records) -> str:
  lines = ["| model | lowering | pass | wall ms/step | summed ms/step | "
           + " | ".join(GROUPS) + " |", "|---" * (5 + len(GROUPS)) + "|"]
  for record in records:
    shares = [f"{ms:.1f} ({100 * ms / record['summed ms']:.0f}%)"
              for ms in record["groups ms"].values()]
    lines.append(f"| {record['model']} | {record['lowering']} | {record['pass']} | "
                 f"{record['wall ms']:.1f} | {record['summed ms']:.1f} | "
                 + " | ".join(shares) + " |")
  return "\n".join(lines)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default="cnn,resnet20",
                      help=f"comma-separated subset of {', '.join(steps.MODELS)}")
  parser.add_argument("--lowering", default="auto", choices=steps.LOWERINGS)
  parser.add_argument("--steps", type=int, default=5, help="traced steps per model and pass")
  parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results"))
  arguments = parser.parse_args(argv)
  runtime.setup()
  names = arguments.models.split(",")
  unknown = [name for name in names if name not in steps.MODELS]
  if unknown:
    raise SystemExit(f"--models: unknown {unknown}; allowed: {', '.join(steps.MODELS)}")
  if arguments.steps < 1:
    raise SystemExit(f"--steps must be >= 1, got {arguments.steps}")
  records = []
  for name in names:
    print(f"[profile] {name} ...", file=sys.stderr, flush=True)
    runner = steps.jax_runner(steps.MODELS[name], arguments.lowering)
    for pass_name, run, hlo in (("train", runner.train, runner.train_hlo),
                                ("eval", runner.evaluate, runner.eval_hlo)):
      run()  # warm
      records.append({"model": name, "lowering": arguments.lowering, "pass": pass_name,
                      "batch": steps.MODELS[name].batch}
                     | breakdown(hlo, run, arguments.steps))
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
  machine = environment.describe()
  header = (f"Step profile {stamp}: {machine['processor']}, {machine['cpu_count']} CPUs, jax "
            f"{machine['jax']}, oneDNN available: {machine['onednn_available']}, load average "
            f"{machine['load_average_1min']:.1f}. Thread time per step by group (share of the "
            "summed time); XLA runs operations concurrently, so the sum can exceed the wall time.")
  os.makedirs(arguments.output, exist_ok=True)
  base = os.path.join(arguments.output, f"{stamp}-profile")
  with open(base + ".json", "w") as file:
    json.dump({"header": header, "environment": machine, "records": records}, file, indent=1)
  with open(base + ".md", "w") as file:
    file.write(header + "\n\n" + _table(records) + "\n")
  print(header + "\n\n" + _table(records))


if __name__ == "__main__":
  main()
