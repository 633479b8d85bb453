"""The sweep's report: `<report_dir>/README.md` with one section per experiment, and PNGs."""

from __future__ import annotations

import os
import time

from cnn_jax.train import optim

from experiments import contrasts

SECTION_TITLES = {
    "equivariance": "3. Equivariance by construction (random init)",
    "augmentation": "1. Augmentation x model grid",
    "learned_invariance": "2. Learned translation invariance (Biscione & Bowers 2021)",
    "priors": "4. Priors: locality, self-similarity and data size",
    "depth": "5. Depth: plain vs residual",
}


def write_report(results: dict[str, list[dict]], config, report_dir: str,
                 experiments: dict) -> str:
  """Writes README.md (and each section's figures) into `report_dir`; returns its path.

  Args:
    results: finished results by experiment name (see `experiments.runs.save_result`).
    config: the sweep config.
    report_dir: created if needed.
    experiments: experiment name -> module with `report(results, config, out_dir) -> markdown`.
  """
  os.makedirs(report_dir, exist_ok=True)
  total_seconds = sum(result["metrics"]["wall_time_seconds"]
                      for group in results.values() for result in group)
  planned = {name: len(experiments[name].plan(config)) for name in config.experiments}
  lines = [
      "# cnn-jax experiments: invariance, equivariance, priors, depth", "",
      f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from "
      f"{sum(len(group) for group in results.values())} finished runs (compute "
      f"{total_seconds / 60:.1f} min in total). Runs per experiment (finished / planned): "
      + ", ".join(f"{name} {len(results.get(name, []))}/{count}"
                  for name, count in planned.items()) + ".",
      "Tables give mean ± sample std (ddof=1) over seeds and, with 2 or more seeds, the 95% "
      "Student t interval in brackets. Data: the 5,000 offline MNIST digits "
      "('mnist_offline', 4,000 train / 1,000 test); experiment 1 also CIFAR-10 where it is "
      "prepared (see its section). Every model is trained by "
      "`cnn_jax.train`'s data-parallel step and loop (SGD with Nesterov momentum, cosine "
      f"schedule, batch {config.batch_size}, peak rate "
      f"{optim.peak_learning_rate(config):g} = {config.learning_rate:g} per 256 "
      "examples).", ""]
  for name in sorted(config.experiments, key=list(SECTION_TITLES).index):
    lines += [f"## {SECTION_TITLES[name]}", ""]
    if results.get(name):
      lines.append(experiments[name].report(results[name], config, report_dir))
    else:
      lines.append("No finished runs.")
    lines.append("")
  lines += ["## Agreement with the papers (computed)", "",
            contrasts.contrast_section(results, contrasts.contrasts_for(config)), ""]
  path = os.path.join(report_dir, "README.md")
  with open(path, "w") as file:
    file.write("\n".join(lines))
  return path
