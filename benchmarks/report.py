"""Markdown tables of benchmark records (see `benchmarks.run`): one table per section."""

from __future__ import annotations


def _table(header: list[str], rows: list[list]) -> str:
  cell = lambda v: f"{v:.3g}" if isinstance(v, float) and abs(v) < 10 else (
      f"{v:.0f}" if isinstance(v, float) else str(v))
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


def _environment(record: dict) -> str:
  return (f"Run {record['started']} ({record['mode']}): GLIBC_TUNABLES "
          f"{'set' if record['glibc_tunables'] else 'NOT set'}; jax {record['jax']}, torch "
          f"{record.get('torch')} ({record.get('torch_threads')} threads), {record['devices']} "
          f"JAX device(s), {record['cpu_count']} CPUs ({record['processor']}), load average "
          f"{record['load_average_1min']:.1f} at start, "
          f"{record.get('load_average_1min_end', float('nan')):.1f} at end. Models in "
          f"{record.get('dtype', 'float32')}, torch on {record.get('torch_device', 'cpu')}. "
          f"Matmul 2048^3 peak: JAX {record['jax_matmul_gflops']:.0f} GFLOP/s, torch "
          f"{record.get('torch_matmul_gflops', float('nan')):.0f} GFLOP/s. Peak RSS "
          f"{record.get('peak_rss_mb', float('nan')):.0f} MB.")


def markdown(records: list[dict]) -> str:
  """All sections present in `records` as Markdown."""
  parts = [_environment(records[0])]
  models = [r for r in records if r["section"] == "models"]
  if models:
    parts.append("### Models: images/s (ratio = JAX / torch, > 1 is faster than torch)")
    parts.append(_table(
        ["model", "batch", "impl", "train img/s", "train ratio", "eval img/s", "eval ratio",
         "GFLOP/step", "train GFLOP/s", "of peak", "compile s", "first step s", "XLA MB",
         "params"],
        [[r["model"], r["batch"], r["impl"] + (f" ({r['memory_format']})" if "memory_format" in r
                                               else ""),
          r["train_images_per_s"], r["train_vs_torch"], r["eval_images_per_s"],
          r["eval_vs_torch"], r["train_gflop_per_step"], r["train_gflops"],
          r["train_peak_fraction"], r.get("compile_s", ""), r.get("first_step_s", ""),
          r.get("train_memory_mb", ""), r["parameters"]] for r in models]))
  ops = [r for r in records if r["section"] == "ops"]
  if ops:
    implementations = lambda rows: sorted({key.split(" ")[0] for r in rows for key in r
                                           if key.endswith(" ms")})
    convs = [r for r in ops if r["op"] == "conv"]
    impls = implementations(convs)
    parts.append("### Per op: milliseconds (fwd / dX / dW), ratio = time / torch's time")
    header = ["model", "conv"] + [f"{impl} {part}" for impl in impls
                                  for part in ("fwd", "dX", "dW")]
    header += [f"{impl} total / torch" for impl in impls if impl != "torch"]
    rows = []
    for r in convs:
      row = [r["model"], r["shape"]]
      row += [r.get(f"{impl} {part} ms", "") for impl in impls for part in ("forward", "dx", "dw")]
      torch_total = sum(r.get(f"torch {part} ms", float("nan")) for part in ("forward", "dx", "dw"))
      row += [sum(r[f"{impl} {part} ms"] for part in ("forward", "dx", "dw")) / torch_total
              for impl in impls if impl != "torch"]
      rows.append(row)
    parts.append(_table(header, rows))
    for op, title, column in (("max_pool", "max pooling", "pool"),
                              ("blur_pool", "blur pooling", "blur")):
      rows = [r for r in ops if r["op"] == op]
      if rows:
        impls = implementations(rows)
        parts.append(f"### Per op: {title}, milliseconds (fwd / bwd)")
        parts.append(_table(
            ["model", column] + [f"{impl} {part}" for impl in impls
                                 for part in ("fwd", "bwd")],
            [[r["model"], r["shape"]] + [r.get(f"{impl} {part} ms", "") for impl in impls
                                         for part in ("forward", "backward")] for r in rows]))
  depth = [r for r in records if r["section"] == "depth"]
  if depth:
    parts.append("### FLOPs against depth (224x224, one image; GMACs = XLA FLOPs / 2)")
    parts.append(_table(["model", "XLA GMACs", "He et al. Table 1"],
                        [[r["model"], r["xla_gmacs"], r["he_et_al_gmacs"]] for r in depth]))
  growth = [r for r in records if r["section"] == "growth"]
  if growth:
    parts.append("### Growth: train images/s and XLA step memory against batch and image size")
    parts.append(_table(
        ["model", "lowering", "batch", "image", "JAX img/s", "torch img/s", "ratio", "XLA MB"],
        [[r["model"], r["lowering"], r["batch"], r["image_size"], r["jax_train_images_per_s"],
          r["torch_train_images_per_s"], r["ratio"], r["jax_train_memory_mb"]] for r in growth]))
  parallel = [r for r in records if r["section"] == "data_parallel"]
  if parallel:
    parts.append("### Data parallel: same global batch, 1 device x 2 threads vs pmap on 2 devices")
    parts.append(_table(
        ["model", "lowering", "form", "train img/s (median)", "rounds"],
        [[r["model"], r["lowering"], r["form"], r["train_images_per_s"],
          ", ".join(f"{v:.1f}" for v in r["all_rounds"])] for r in parallel]))
  return "\n\n".join(parts) + "\n"
