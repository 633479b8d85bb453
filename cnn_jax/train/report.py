"""The end of a run: `<workdir>/summary.json`, and `<workdir>/report.md` with its curves."""

from __future__ import annotations

import json
import os

from matplotlib.figure import Figure


def write_summary(workdir: str, summary: dict) -> None:
  """Writes the final summary as `<workdir>/summary.json`."""
  with open(os.path.join(workdir, "summary.json"), "w") as file:
    json.dump(summary, file, indent=2, sort_keys=True)


def _plot_curves(records: list[dict], names: tuple[str, ...], ylabel: str, path: str) -> None:
  figure = Figure(figsize=(6, 4))  # Object API: no pyplot, no global backend.
  axes = figure.subplots()
  for name in names:
    points = [(r["step"], r[name]) for r in records if name in r]
    if points:
      steps, values = zip(*points)
      axes.plot(steps, values, marker="o" if len(points) < 30 else None, label=name)
  axes.set_xlabel("step")
  axes.set_ylabel(ylabel)
  axes.grid(alpha=0.3)
  axes.legend()
  figure.tight_layout()
  figure.savefig(path, dpi=100)


def write_report(workdir: str, records: list[dict], summary: dict, config) -> None:
  """Writes `<workdir>/report.md` and its two figures, `loss.png` and `accuracy.png`.

  Args:
    workdir: the run's directory.
    records: the run's metric records (see `cnn_jax.train.metrics`).
    summary: the final summary (as in summary.json).
    config: the run's ConfigDict.
  """
  _plot_curves(records, ("train_loss", "test_loss"), "cross-entropy",
               os.path.join(workdir, "loss.png"))
  _plot_curves(records, ("train_accuracy", "test_accuracy"), "accuracy",
               os.path.join(workdir, "accuracy.png"))
  rows = "\n".join(f"| {name} | {value:.4g} |" if isinstance(value, float)
                   else f"| {name} | {value} |" for name, value in sorted(summary.items()))
  text = (f"# Run report: {config.model.name} on {config.dataset}\n\n"
          f"| quantity | value |\n|---|---|\n{rows}\n\n"
          "![loss](loss.png)\n\n![accuracy](accuracy.png)\n\n"
          f"## Config\n\n```json\n{config.to_json_best_effort(indent=2, sort_keys=True)}\n```\n")
  with open(os.path.join(workdir, "report.md"), "w") as file:
    file.write(text)
