"""Experiment 5: depth — plain vs residual networks (He et al. 2016) of growing depth.

The CIFAR-style networks of `cnn_jax.models` (3x3 stem, three stages, global pooling) at widths
8-16-32 and depth `6n + 2`, with shortcuts ('resnet20' with `stage_sizes=(n, n, n)`) and
without ('plain20' likewise), trained on the digits; recorded every few steps: the training loss
and the gradient norm of every top-level module (stem, each block, head) on the current batch.
He et al.'s observation: deeper plain networks train worse (higher training loss), residual ones
do not; gradients reach the first layers of a residual network undiminished.
"""

from __future__ import annotations

import functools
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
from matplotlib.figure import Figure
import numpy as np

from cnn_jax.data import get_dataset_info
from cnn_jax.train.preprocess import normalize, to_unit_interval
from cnn_jax.train.step import cross_entropy
from experiments.in_memory_training import (DATASET, InMemoryDataset, prng_key,
                                            train_classifier, training_config)
from experiments.model_zoo import check_seeds
from experiments.priors import balanced_subset
from experiments.report_tables import by_option, cell, markdown_table
from experiments.seed_statistics import summarize
from experiments.runs import Run

NAME = "depth"
KINDS = ("plain", "residual")
WIDTHS = (8, 16, 32)


def validate(config) -> None:
  check_seeds(f"config.{NAME}.seeds", config.depth.seeds)
  settings = config.depth
  if not isinstance(settings.train_size, int) or not 10 <= settings.train_size <= 4000 or (
      settings.train_size % 10):
    raise ValueError(f"config.{NAME}.train_size must be a multiple of 10 in [10, 4000], got "
                     f"{settings.train_size!r}")
  if not isinstance(settings.num_epochs, (int, float)) or settings.num_epochs <= 0:
    raise ValueError(f"config.{NAME}.num_epochs must be a number > 0, got "
                     f"{settings.num_epochs!r}")
  depths = tuple(config.depth.depths)
  if not depths or not all(isinstance(d, int) and d >= 8 and (d - 2) % 6 == 0 for d in depths):
    raise ValueError(f"config.{NAME}.depths must be a non-empty list of depths 6n + 2 >= 8, "
                     f"got {config.depth.depths!r}")


def plan(config) -> list[Run]:
  return [Run(NAME, f"{kind}{depth}_seed{seed}", seed, {"kind": kind, "depth": depth})
          for seed in config.depth.seeds for depth in config.depth.depths for kind in KINDS]


@functools.partial(jax.jit, static_argnums=0)
def gradient_norms(model: nn.Module, variables: dict, batch: dict) -> dict:
  """`{module: ||d loss / d params_module||}` of every top-level module on one batch ('image'
  uint8 `[b, H, W, C]`, 'label' `[b]`), in train mode (batch statistics of this batch)."""
  info = get_dataset_info(DATASET)
  images = normalize(to_unit_interval(batch["image"]), info.mean, info.std)

  def loss_fn(params):
    logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, images,
                            train=True, rngs={"dropout": prng_key(0)}, mutable=["batch_stats"])
    return jnp.mean(cross_entropy(logits, batch["label"]))

  grads = jax.grad(loss_fn)(variables["params"])
  return {name: jnp.sqrt(sum(jnp.sum(leaf ** 2) for leaf in jax.tree.leaves(subtree)))
          for name, subtree in grads.items()}


def num_steps(config) -> int:
  """`ceil(num_epochs * train_size / batch_size)`, at least 1."""
  return max(1, math.ceil(config.depth.num_epochs * config.depth.train_size / config.batch_size))


def execute(run: Run, config, digits: InMemoryDataset) -> dict:
  """Trains the run's net on `train_size` class-balanced training digits (drawn with the run's
  seed); records the loss and per-module gradient norms, then the final training error (eval
  mode, on those digits) and the test accuracy."""
  blocks = (run.options["depth"] - 2) // 6
  model_name = "resnet20" if run.options["kind"] == "residual" else "plain20"
  images, labels = balanced_subset(digits.train_images, digits.train_labels,
                                   config.depth.train_size, run.seed)
  training = training_config(model_name, seed=run.seed, num_steps=num_steps(config),
                             batch_size=config.batch_size, learning_rate=config.learning_rate,
                             record_every=config.depth.record_every, stage_sizes=(blocks,) * 3,
                             widths=WIDTHS)
  classifier, records = train_classifier(training, images, labels, measure=gradient_norms)
  return {
      "steps": [record.step for record in records],
      "train_loss": [record.train_loss for record in records],
      "gradient_norms": [record.measured for record in records],
      "train_error": 1.0 - classifier.accuracy(images, labels),
      "test_accuracy": classifier.accuracy(digits.test_images, digits.test_labels),
  }


def _module_order(names) -> list[str]:
  """The stem conv, the blocks in order, the head; batch-norm modules (scale and bias only,
  gradients of another kind) are left out."""
  rank = lambda name: (0 if name.startswith("Stem") else 2 if name == "Head" else 1, name)
  return sorted((name for name in names if "Norm" not in name), key=rank)


def report(results: list[dict], config, out_dir: str) -> str:
  groups = by_option(results, "kind", "depth")
  figure = Figure(figsize=(16, 3.8))
  axes = figure.subplots(1, 3)
  rows = []
  for (kind, depth), group in sorted(groups.items(), key=lambda item: (item[0][1], item[0][0])):
    style = "-" if kind == "residual" else "--"
    steps = group[0]["metrics"]["steps"]
    losses = np.mean([r["metrics"]["train_loss"] for r in group], 0)
    axes[0].plot(steps, losses, style, label=f"{kind}-{depth}")
    names = _module_order(group[0]["metrics"]["gradient_norms"][0])
    # The first records: the gradients the initialization passes back, before training reshapes
    # them; averaged over the first quarter of the run.
    early = max(len(steps) // 4, 1)
    norms = [np.mean([r["metrics"]["gradient_norms"][i][name] for r in group
                      for i in range(early)]) for name in names]
    axes[1].plot(np.linspace(0, 1, len(names)), norms, style + "o", markersize=3,
                 label=f"{kind}-{depth}")
    rows.append([kind, depth, len(group),
                 cell([np.mean(r["metrics"]["train_loss"][-3:]) for r in group]),
                 cell([r["metrics"].get("train_error", math.nan) for r in group]),
                 cell([r["metrics"]["test_accuracy"] for r in group]),
                 f"{norms[0]:.3g} / {norms[-1]:.3g}"])
  for kind in KINDS:
    depths = sorted(depth for (k, depth) in groups if k == kind)
    summaries = [summarize([r["metrics"].get("train_error", math.nan)
                            for r in groups[(kind, depth)]]) for depth in depths]
    axes[2].errorbar(depths, [100 * s.mean for s in summaries],
                     yerr=[0.0 if math.isnan(s.std) else 100 * s.std for s in summaries],
                     fmt="-o" if kind == "residual" else "--o", capsize=3, label=kind)
  axes[2].set_xlabel("depth (layers)")
  axes[2].set_ylabel("final training error (%), eval mode")
  axes[2].set_title("training error vs depth (He et al. Fig. 6 in miniature)", fontsize=9)
  axes[0].set_title("training loss (mean over seeds)", fontsize=9)
  axes[1].set_title("per-module gradient norm at the start", fontsize=9)
  axes[0].set_xlabel("step")
  axes[0].set_ylabel("training loss (window mean)")
  axes[0].set_yscale("log")
  axes[1].set_xlabel("relative depth of the module (stem 0 ... head 1)")
  axes[1].set_ylabel("gradient norm, first quarter of training")
  axes[1].set_yscale("log")
  for axis in axes:
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(os.path.join(out_dir, "depth_loss_and_gradients.png"), dpi=100)
  return "\n".join([
      f"Widths {WIDTHS}, {config.depth.train_size:,} class-balanced training digits per run "
      f"(drawn with its seed), {config.depth.num_epochs:g} epochs ({num_steps(config)} steps of "
      f"{config.batch_size}), one learning rate for every net, no augmentation; loss and "
      f"per-module gradient norms every {config.depth.record_every} steps; the final training "
      "error is measured in eval mode on the training digits (He et al.'s Figure 6 plots "
      "training error against depth). Not done: depth 56 and a learning-rate sweep for the "
      "plain nets (budget); whether degradation holds is the computed contrast in the "
      "agreement section below.", "",
      markdown_table(["network", "depth", "seeds", "final training loss",
                      "final training error", "test accuracy",
                      "grad norm stem / head (early)"], rows), "",
      "![loss curves and gradient norms](depth_loss_and_gradients.png)"])
