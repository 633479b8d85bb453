"""Experiment 2: learned translation invariance (Biscione & Bowers, JMLR 2021).

The protocol, on the offline digits: a black canvas of side C (default 40); the 28x28 digits
are placed on it as an on-device transform (`place_on_canvas`: zero padding, no interpolation).
New objects = digits 5-9, trained at one location only (top-left corner, offset (0, 0)); tested
at every location of a grid of offsets (heat map). The network is the small CNN (8-16 channels,
max pooling, a dense layer of `hidden_width` units on the flattened map, then the classifier
head): not invariant by construction, its dense layer sees every location separately. Three
conditions:

  scratch          all weights trained on digits 5-9 at the one location.
  pretrained       first all weights trained to near convergence on digits 0-4 placed at
                   uniformly random canvas locations (the "translated across the whole canvas"
                   pretraining), then the convolutions and the dense layer frozen and only the
                   classifier head trained on digits 5-9 at the one location.
  random_features  the control: the same head-only training on the frozen layers of a random
                   initialization (no pretraining), so that the frozen features alone do not
                   explain a transfer.

Accuracy is the top-1 among the five new classes' logits (chance 0.2): the pretrained head
still has weights for digits 0-4, which are not among the answers.

Biscione & Bowers' claim: the scratch network does not recognise the new digits elsewhere; the
pretrained one does (it learned invariance from the pretraining data). Fine-tuning all the
pretrained weights at the one location (this experiment's first protocol) gave no transfer at
all, also at peak rates 0.01 and 0.005, and so did training the dense layer with the head: the
one-location training overwrites what made the dense layer's features invariant.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
import numpy as np

from cnn_jax.analysis import logits_in_batches
from cnn_jax.data.augment import translate
from cnn_jax.train.preprocess import to_unit_interval
from cnn_jax.train.step import identity
from experiments.in_memory_training import (InMemoryDataset, evaluation_subset,
                                            train_classifier, training_config)
from experiments.model_zoo import SMALL_CNN, check_seeds
from experiments.report_tables import by_option, cell, markdown_table
from experiments.runs import Run

NAME = "learned_invariance"
CONDITIONS = ("scratch", "pretrained", "random_features")
DIGIT_SIZE = 28
PRETRAIN_CLASSES = (0, 1, 2, 3, 4)
NEW_CLASSES = (5, 6, 7, 8, 9)
# The layers below the classifier head: frozen in the head-only conditions.
FEATURE_MODULES = ("Conv1", "Conv2", "Fc1")


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


def model_fields(config) -> dict:
  """The small CNN with a dense layer of `config.learned_invariance.hidden_width` units."""
  return {**SMALL_CNN, "hidden": (config.learned_invariance.hidden_width,)}


def validate(config) -> None:
  settings = config.learned_invariance
  check_seeds(f"config.{NAME}.seeds", settings.seeds)
  if settings.canvas < DIGIT_SIZE or settings.location_step < 1:
    raise ValueError(f"config.{NAME}.canvas must be >= {DIGIT_SIZE} and location_step >= 1, got "
                     f"{settings.canvas!r} and {settings.location_step!r}")
  for field in ("hidden_width", "pretrain_steps", "train_steps"):
    if not isinstance(settings[field], int) or settings[field] < 1:
      raise ValueError(f"config.{NAME}.{field} must be an int >= 1, got {settings[field]!r}")


def plan(config) -> list[Run]:
  return [Run(NAME, f"{condition}_seed{seed}", seed, {"condition": condition})
          for seed in config.learned_invariance.seeds for condition in CONDITIONS]


def _classes(images, labels, classes):
  keep = np.isin(labels, classes)
  return images[keep], labels[keep]


def new_class_predictions(logits: jax.Array) -> jax.Array:
  """The top-1 class among NEW_CLASSES of logits `[N, 10]`, as labels `[N]`."""
  new_classes = jnp.asarray(NEW_CLASSES)
  return new_classes[jnp.argmax(logits[:, new_classes], axis=-1)]


def execute(run: Run, config, digits: InMemoryDataset) -> dict:
  settings = config.learned_invariance
  canvas = settings.canvas

  def training(seed: int, num_steps: int, record_every: int = 10):
    return training_config("cnn", seed=seed, num_steps=num_steps, batch_size=config.batch_size,
                           learning_rate=config.learning_rate, record_every=record_every,
                           **model_fields(config))

  variables, pretrain_loss = None, None
  if run.options["condition"] == "pretrained":
    images, labels = _classes(digits.train_images, digits.train_labels, PRETRAIN_CLASSES)
    pretraining = training(run.seed, settings.pretrain_steps,
                           record_every=max(settings.pretrain_steps // 10, 1))
    pretrained, pretrain_records = train_classifier(pretraining, images, labels,
                                                    augment=random_placement(canvas))
    variables = pretrained.variables
    pretrain_loss = pretrain_records[-1].train_loss
  images, labels = _classes(digits.train_images, digits.train_labels, NEW_CLASSES)
  one_location = training(run.seed + 1000, settings.train_steps)
  if run.options["condition"] != "scratch":
    one_location.frozen_modules = FEATURE_MODULES
  trained, records = train_classifier(one_location, images, labels,
                                      input_transform=lambda x: place_on_canvas(x, canvas),
                                      variables=variables)
  # Tested on canvases placed by hand, at every location.
  classifier = trained._replace(input_transform=identity)
  test_images, test_labels = _classes(*evaluation_subset(digits, 2 * config.eval_images),
                                      NEW_CLASSES)
  test_images = to_unit_interval(test_images)
  apply_fn = classifier.apply_fn()
  offsets = list(range(0, canvas - DIGIT_SIZE + 1, settings.location_step))
  accuracy = [[float(jnp.mean(new_class_predictions(logits_in_batches(
      apply_fn, place_on_canvas(test_images, canvas, (top, left)))) == test_labels))
               for left in offsets] for top in offsets]
  return {"offsets": offsets, "accuracy": accuracy, "final_train_loss": records[-1].train_loss,
          "pretrain_final_loss": pretrain_loss, "test_digits": int(len(test_labels))}


def report(results: list[dict], config, out_dir: str) -> str:
  groups = by_option(results, "condition")
  groups = {key: groups[key] for key in sorted(groups, key=lambda key: CONDITIONS.index(key[0]))}
  offsets = results[0]["metrics"]["offsets"]
  figure = Figure(figsize=(4.2 * len(groups), 3.8))
  axes = figure.subplots(1, len(groups), squeeze=False)
  rows = []
  for axis, ((condition,), group) in zip(axes[0], groups.items()):
    maps = np.array([r["metrics"]["accuracy"] for r in group])
    image = axis.imshow(maps.mean(0), vmin=0, vmax=1, cmap="viridis")
    axis.set_xticks(range(len(offsets)), offsets)
    axis.set_yticks(range(len(offsets)), offsets)
    axis.set_xlabel("digit left offset (px)")
    if axis is axes[0][0]:
      axis.set_ylabel("digit top offset (px)")
    axis.set_title(f"{condition} ({len(group)} seeds)", fontsize=9)
    axis.add_patch(Rectangle((-0.5, -0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    for (i, j), value in np.ndenumerate(maps.mean(0)):
      axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6, color="white")
    trained = [m[0, 0] for m in maps]
    neighbours = [np.mean([m[0, 1], m[1, 0]]) if len(offsets) > 1 else np.nan for m in maps]
    elsewhere = [np.mean(np.delete(m.ravel(), 0)) for m in maps]
    farthest = [m[-1, -1] for m in maps]
    rows.append([condition, len(group), cell(trained), cell(neighbours), cell(elsewhere),
                 cell(farthest)])
  figure.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="accuracy on digits 5-9")
  figure.savefig(os.path.join(out_dir, "location_heatmap.png"), dpi=100)
  settings = config.learned_invariance
  step = settings.location_step
  pretrain_losses = [r["metrics"]["pretrain_final_loss"] for r in results
                     if r["metrics"].get("pretrain_final_loss") is not None]
  return "\n".join([
      f"Canvas {settings.canvas}x{settings.canvas}; the small CNN with a dense layer of "
      f"{settings.hidden_width} units. Digits 5-9 trained at offset (0, 0) only "
      f"({settings.train_steps} steps): 'scratch' trains all weights; 'pretrained' first trains "
      f"all weights on digits 0-4 at random locations ({settings.pretrain_steps} steps, final "
      f"training loss {cell(pretrain_losses, 3)}), then only the classifier head (convolutions "
      "and dense layer frozen); 'random_features' trains only the head on the frozen layers of "
      "a random initialization (control). Test: digits "
      f"5-9 of a fixed test subset ({results[0]['metrics']['test_digits']} digits) at every "
      f"offset in {offsets}^2 (red box: the trained location); top-1 among the five new "
      "classes, chance 0.2.", "",
      markdown_table(["condition", "seeds", "acc at trained location",
                      f"acc {step} px away (2 locations)", "mean acc at untrained locations",
                      "acc at the farthest location"], rows),
      "", "![accuracy by location](location_heatmap.png)"])
