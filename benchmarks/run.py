"""cnn-jax speed benchmarks against PyTorch and against the machine's matmul peak.

    python -m benchmarks.run                  # quick: ~2 min, the MNIST CNN and ResNet-20
    python -m benchmarks.run --mode full      # every model, every op shape, growth, pmap
    python -m benchmarks.run --sections ops --models resnet18
    python -m benchmarks.run --mode full --sections models --dtype bfloat16   # on a GPU

Writes `benchmarks/results/<timestamp>-<mode>.jsonl` (one JSON record per measurement, the first
describing the environment) and the same as Markdown tables (`.md`), which it also prints.

Sections:
  models  train and eval images/s per model (median step after warm-up) for JAX with each
          lowering of `--lowerings` (the models' `lowering` field: 'xla' the reference, 'auto'
          the default, 'tiled' every tiled part, 'onednn' oneDNN's kernels where the extension
          is built) and for the torch twin, interleaved round by round;
          compile time, first step, XLA FLOPs per step, achieved GFLOP/s and its fraction of the
          2048^3 matmul peak measured in the same run, XLA's planned step memory. `--dtype`
          sets the compute dtype of this section and of the peak's matmul (parameters stay
          float32; torch runs under autocast); the torch twin runs on CUDA when JAX's default
          backend is a GPU.
  ops     per conv shape of the models: forward, dX, dW with every lowering; per max-pool
          shape and per blur-pool shape of the sweep's blurred CNN: forward, backward. With
          `--write-auto-table`, the fastest lowering per conv shape and part goes into 'auto's
          table for this CPU's ISA class (`cnn_jax.ops.lowering.auto_choices`).
  growth  images/s and memory against batch and image size; FLOPs against ResNet depth.
  pmap    a pmapped step on 2 virtual CPU devices against the 2-thread single device.

The process starts with `cnn_jax.runtime.setup` (XLA:CPU flags; it re-executes itself with the
malloc tunables unless `--no-malloc-tunables`); every result file states which were used.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys

SECTIONS = ("models", "ops", "growth", "pmap")
MODES = {
    # models, repeats (rounds of one step each), op repeats, sections
    "quick": (("cnn", "resnet20"), 5, 3, ("models", "ops")),
    "full": (("cnn", "resnet20", "resnet18_cifar", "resnet18", "alexnet_torchvision"), 9, 5,
             SECTIONS),
}
RESULTS_DIRECTORY = os.path.join(os.path.dirname(__file__), "results")


def _parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--mode", choices=tuple(MODES), default="quick")
  parser.add_argument("--sections", default=None,
                      help=f"comma-separated subset of {SECTIONS} (default: the mode's)")
  parser.add_argument("--models", default=None, help="comma-separated benchmark model names")
  parser.add_argument("--lowerings", default="xla,auto",
                      help="comma-separated JAX lowerings of the models (ops.LOWERINGS)")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                      help="compute dtype of the models section (parameters stay float32)")
  parser.add_argument("--repeats", type=int, default=None, help="timed steps per measurement")
  parser.add_argument("--no-malloc-tunables", action="store_true",
                      help="do not re-execute with GLIBC_TUNABLES (for an A/B comparison)")
  parser.add_argument("--output", default=RESULTS_DIRECTORY)
  parser.add_argument("--write-auto-table", action="store_true",
                      help="record this CPU's fastest lowering per conv shape and part in "
                           "lowering='auto''s table, cnn_jax/ops/auto_lowerings.json (ops)")
  return parser.parse_args(argv)


def _validated(arguments):
  from benchmarks import steps
  model_names, repeats, op_repeats, sections = MODES[arguments.mode]
  if arguments.models:
    model_names = tuple(arguments.models.split(","))
  if arguments.sections:
    sections = tuple(arguments.sections.split(","))
  lowerings = tuple(arguments.lowerings.split(","))
  for name, values, allowed in (("--models", model_names, tuple(steps.MODELS)),
                                ("--sections", sections, SECTIONS),
                                ("--lowerings", lowerings, steps.LOWERINGS)):
    unknown = [value for value in values if value not in allowed]
    if unknown:
      raise SystemExit(f"{name}: unknown {unknown}; allowed: {', '.join(allowed)}")
  missing = [name for name in lowerings if name not in steps.available_lowerings()]
  if missing:
    from cnn_jax.ops import onednn
    raise SystemExit(f"--lowerings: {missing} cannot run here: {onednn.unavailable_reason()}")
  if arguments.repeats is not None:
    if arguments.repeats < 1:
      raise SystemExit(f"--repeats must be >= 1, got {arguments.repeats}")
    repeats = op_repeats = arguments.repeats
  return model_names, repeats, op_repeats, sections, lowerings


def model_records(model_names, lowerings, repeats: int, peak_gflops: float, dtype: str,
                  torch_device: str) -> list[dict]:
  """One record per (model, implementation): JAX per lowering and torch, timed round-robin."""
  from benchmarks import environment, steps
  records = []
  for name in model_names:
    spec = steps.MODELS[name]
    print(f"[models] {name} ...", file=sys.stderr, flush=True)
    runners = {f"jax-{lowering}": steps.jax_runner(spec, lowering, dtype=dtype)
               for lowering in lowerings}
    twin = steps.torch_runner(spec, name, dtype=dtype, device=torch_device)
    everyone = dict(runners, torch=twin)
    times = {(impl, part): [] for impl in everyone for part in ("train", "eval")}
    for runner in everyone.values():
      runner.evaluate()
    for _ in range(repeats):
      for impl, runner in everyone.items():
        times[(impl, "train")].append(environment.median_seconds(runner.train, 1))
        times[(impl, "eval")].append(environment.median_seconds(runner.evaluate, 1))
    median = lambda impl, part: statistics.median(times[(impl, part)])
    # The FLOPs of every implementation: XLA's count of the reference lowering (a oneDNN or
    # tiled pass is a custom call or a loop that XLA's cost analysis counts as none or once).
    reference = runners.get("jax-xla") or steps.jax_runner(spec, "xla", dtype=dtype)
    for impl in everyone:
      train_s, eval_s = median(impl, "train"), median(impl, "eval")
      record = {"section": "models", "model": name, "impl": impl, "dtype": dtype,
                "batch": spec.batch,
                "image_shape": list(spec.image_shape),
                "train_images_per_s": spec.batch / train_s,
                "eval_images_per_s": spec.batch / eval_s,
                "train_vs_torch": median("torch", "train") / train_s,
                "eval_vs_torch": median("torch", "eval") / eval_s,
                "train_gflop_per_step": reference.train_flops / 1e9,
                "train_gflops": reference.train_flops / train_s / 1e9,
                "eval_gflops": reference.eval_flops / eval_s / 1e9,
                "train_peak_fraction": reference.train_flops / train_s / 1e9 / peak_gflops,
                "parameters": everyone[impl].parameters}
      if impl == "torch":
        record["memory_format"] = twin.memory_format
      else:
        runner = runners[impl]
        record.update(compile_s=runner.compile_seconds, first_step_s=runner.first_step_seconds,
                      train_memory_mb=runner.train_memory_mb,
                      onednn_calls=runner.onednn_calls)
      records.append(record)
  return records


def op_records(model_names, repeats: int) -> list[dict]:
  """The per-op table over the distinct conv and pool shapes of `model_names`."""
  from benchmarks import per_op, steps
  convs, pools = [], []
  for name in model_names:
    model_convs, model_pools = per_op.model_shapes(steps.MODELS[name])
    convs += [(name, shape) for shape in model_convs if shape not in [s for _, s in convs]]
    pools += [(name, shape) for shape in model_pools if shape not in [s for _, s in pools]]
  records = []
  for name, shape in convs:
    print(f"[ops] {name} {shape.label()}", file=sys.stderr, flush=True)
    records.append({"section": "ops", "model": name} | per_op.conv_record(shape, repeats))
  for name, shape in pools:
    print(f"[ops] {name} {shape.label()}", file=sys.stderr, flush=True)
    records.append({"section": "ops", "model": name} | per_op.pool_record(shape, repeats))
  for shape in per_op.BLUR_SHAPES:
    print(f"[ops] cnn_blur {shape.label()}", file=sys.stderr, flush=True)
    records.append({"section": "ops", "model": "cnn_blur (sweep)"}
                   | per_op.blur_record(shape, repeats))
  return records


def main(argv=None) -> None:
  arguments = _parse(sys.argv[1:] if argv is None else argv)
  from cnn_jax import runtime
  runtime.setup(malloc_tunables=not arguments.no_malloc_tunables)
  model_names, repeats, op_repeats, sections, lowerings = _validated(arguments)

  import jax
  import torch
  torch.set_num_threads(2)
  from benchmarks import data_parallel, environment, growth, report
  torch_device = "cuda" if jax.default_backend() == "gpu" else "cpu"
  if torch_device == "cuda" and not torch.cuda.is_available():
    raise SystemExit("JAX runs on a GPU but this torch has no CUDA: install a CUDA build of "
                     "torch for the reference (the 'bench' extra pins the CPU build)")

  started = datetime.datetime.now(datetime.timezone.utc)
  os.makedirs(arguments.output, exist_ok=True)
  stem = os.path.join(arguments.output, f"{started:%Y%m%d-%H%M%S}-{arguments.mode}")
  peak = environment.matmul_peak_gflops(dtype=arguments.dtype, torch_device=torch_device)
  header = {"section": "environment", "mode": arguments.mode, "started": started.isoformat(),
            "dtype": arguments.dtype, "torch_device": torch_device,
            **environment.describe(), **peak}
  records = [header]

  def save():
    """Rewrites the result files after every section, so an interrupted run keeps its data."""
    header.update(finished=datetime.datetime.now(datetime.timezone.utc).isoformat(),
                  peak_rss_mb=environment.peak_rss_mb(),
                  load_average_1min_end=os.getloadavg()[0])
    with open(stem + ".jsonl", "w") as file:
      for record in records:
        file.write(json.dumps(record) + "\n")
    with open(stem + ".md", "w") as file:
      file.write(report.markdown(records))

  if "models" in sections:
    records += model_records(model_names, lowerings, repeats, peak["jax_matmul_gflops"],
                             arguments.dtype, torch_device)
    save()
  if "pmap" in sections:
    print("[pmap] ...", file=sys.stderr, flush=True)
    for lowering in lowerings:
      records += data_parallel.compare("resnet18_cifar", lowering, max(3, repeats // 2), 2)
    save()
  if "ops" in sections:
    records += op_records(model_names, op_repeats)
    save()
    if arguments.write_auto_table:
      from benchmarks import per_op
      from cnn_jax.ops import lowering
      per_op.write_auto_table(records)
      print(f"updated {lowering.AUTO_TABLE}", file=sys.stderr)
  if "growth" in sections:
    print("[growth] ...", file=sys.stderr, flush=True)
    records += growth.depth_records()
    records += growth.size_records("resnet20", lowerings[-1], (32, 64, 128, 256), (32, 64, 96),
                                   max(3, repeats // 2))
  save()
  print(report.markdown(records))
  print(f"wrote {stem}.jsonl and {stem}.md", file=sys.stderr)


if __name__ == "__main__":
  main()
