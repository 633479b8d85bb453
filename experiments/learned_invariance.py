"""Experiment 2: learned translation invariance (Biscione & Bowers, JMLR 2021).

The protocol, on the offline digits: a black canvas of side C (default 44); the 28x28 digits
are placed on it as an on-device transform (`place_on_canvas`: zero padding, no interpolation).
New objects = digits 5-9, trained at one location only (top-left corner, offset (0, 0)); tested
at every location of a grid of offsets (heat map). Two networks, the same small CNN (8-16
channels, max pooling, a dense layer on the flattened map: not invariant by construction):

  scratch     trained on digits 5-9 at the one location.
  pretrained  first trained on digits 0-4 placed at uniformly random canvas locations (the
              "translated across the whole canvas" pretraining), then on digits 5-9 at the one
              location, all weights fine-tuned.

Biscione & Bowers' claim: the scratch network does not recognise the new digits elsewhere; the
pretrained one does (it learned invariance from the pretraining data).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from cnn_jax.analysis import logits_in_batches
from cnn_jax.data.augment import translate
from experiments.in_memory_training import (Digits, evaluation_subset, to_unit, train_classifier,
                                            training_config)
from experiments.model_zoo import SMALL_CNN, check_seeds
from experiments.report_tables import by_option, cell, markdown_table
from experiments.runs import Run

NAME = "learned_invariance"
CONDITIONS = ("scratch", "pretrained")
DIGIT_SIZE = 28
PRETRAIN_CLASSES = (0, 1, 2, 3, 4)
NEW_CLASSES = (5, 6, 7, 8, 9)


def place_on_canvas(images: jax.Array, canvas: int, offset=(0, 0)) -> jax.Array:
  """Digits `[N, 28, 28, C]` on a black `canvas x canvas` image, top-left corner at `offset`."""
  top, left = offset
  return jnp.pad(images, ((0, 0), (top, canvas - DIGIT_SIZE - top),
                          (left, canvas - DIGIT_SIZE - left), (0, 0)))


def random_placement(canvas: int):
  """`augment(key, digits) -> canvases` with each digit at a uniform random location."""

  def augment(key, images):
    offsets = jax.random.randint(key, (images.shape[0], 2), 0, canvas - DIGIT_SIZE + 1)
    return translate(place_on_canvas(images, canvas), offsets)

  return augment


def validate(config) -> None:
  settings = config.learned_invariance
  check_seeds(f"config.{NAME}.seeds", settings.seeds)
  if settings.canvas < DIGIT_SIZE or settings.location_step < 1:
    raise ValueError(f"config.{NAME}.canvas must be >= {DIGIT_SIZE} and location_step >= 1, got "
                     f"{settings.canvas!r} and {settings.location_step!r}")


def plan(config) -> list[Run]:
  return [Run(NAME, f"{condition}_seed{seed}", seed, {"condition": condition})
          for seed in config.learned_invariance.seeds for condition in CONDITIONS]


def _classes(images, labels, classes):
  keep = np.isin(labels, classes)
  return images[keep], labels[keep]


def execute(run: Run, config, digits: Digits) -> dict:
  settings = config.learned_invariance
  canvas = settings.canvas
  training = training_config(learning_rate=config.learning_rate)
  variables = None
  if run.options["condition"] == "pretrained":
    images, labels = _classes(digits.train_images, digits.train_labels, PRETRAIN_CLASSES)
    pretrained, _ = train_classifier(
        "cnn", SMALL_CNN, images, labels, seed=run.seed, num_steps=settings.pretrain_steps,
        batch_size=config.batch_size, config=training, augment=random_placement(canvas))
    variables = pretrained.variables
  images, labels = _classes(digits.train_images, digits.train_labels, NEW_CLASSES)
  classifier, records = train_classifier(
      "cnn", SMALL_CNN, images, labels, seed=run.seed + 1000, num_steps=settings.train_steps,
      batch_size=config.batch_size, config=training,
      augment=lambda key, x: place_on_canvas(x, canvas), variables=variables)
  test_images, test_labels = _classes(*evaluation_subset(digits, 2 * config.eval_images),
                                      NEW_CLASSES)
  test_images = to_unit(test_images)
  apply_fn = classifier.apply_fn()
  offsets = list(range(0, canvas - DIGIT_SIZE + 1, settings.location_step))
  accuracy = [[float(jnp.mean(jnp.argmax(logits_in_batches(
      apply_fn, place_on_canvas(test_images, canvas, (top, left))), -1) == test_labels))
               for left in offsets] for top in offsets]
  return {"offsets": offsets, "accuracy": accuracy, "final_train_loss": records[-1].train_loss,
          "test_digits": int(len(test_labels))}


def report(results: list[dict], config, out_dir: str) -> str:
  groups = by_option(results, "condition")
  offsets = results[0]["metrics"]["offsets"]
  figure, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.8), squeeze=False)
  rows = []
  for axis, ((condition,), group) in zip(axes[0], groups.items()):
    maps = np.array([r["metrics"]["accuracy"] for r in group])
    image = axis.imshow(maps.mean(0), vmin=0, vmax=1, cmap="viridis")
    axis.set_xticks(range(len(offsets)), offsets)
    axis.set_yticks(range(len(offsets)), offsets)
    axis.set_xlabel("digit left offset (px)")
    axis.set_ylabel("digit top offset (px)")
    axis.set_title(f"{condition} ({len(group)} seeds)", fontsize=9)
    axis.add_patch(plt.Rectangle((-0.5, -0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    for (i, j), value in np.ndenumerate(maps.mean(0)):
      axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6, color="white")
    trained = [m[0, 0] for m in maps]
    elsewhere = [np.mean(np.delete(m.ravel(), 0)) for m in maps]
    farthest = [m[-1, -1] for m in maps]
    rows.append([condition, len(group), cell(trained), cell(elsewhere), cell(farthest)])
  figure.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="accuracy on digits 5-9")
  figure.savefig(os.path.join(out_dir, "location_heatmap.png"), dpi=100)
  plt.close(figure)
  settings = config.learned_invariance
  return "\n".join([
      f"Canvas {settings.canvas}x{settings.canvas}; digits 5-9 trained at offset (0, 0) only "
      f"({settings.train_steps} steps); 'pretrained' first saw digits 0-4 at random locations "
      f"({settings.pretrain_steps} steps). Test: digits 5-9 of a fixed test subset "
      f"({results[0]['metrics']['test_digits']} digits) at every offset in {offsets}^2 (red "
      "box: the trained location). Chance is 0.2 (5 classes).", "",
      markdown_table(["condition", "seeds", "acc at trained location",
                      "mean acc at untrained locations", "acc at the farthest location"], rows),
      "", "![accuracy by location](location_heatmap.png)"])
