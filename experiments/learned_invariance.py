"""Experiment 2: learned translation invariance (Biscione & Bowers, JMLR 2021).

The protocol, on the offline digits: a black canvas of side C (default 56, so that offsets reach
the digit size); the 28x28 digits are placed on it as an on-device transform (`place_on_canvas`:
zero padding, no interpolation). The first k digit classes (k = 2, 5 or 8) are the pretraining
classes, the other 10 - k the new ones. New classes are trained at one location only (top-left
corner, offset (0, 0)) and tested at every location of a grid of offsets (heat map). The network
is the small CNN (max pooling, a dense layer of `hidden_width` units on the flattened map, then
the classifier head): not invariant by construction, its dense layer sees every location
separately. Four conditions:

  scratch           all weights trained on the new classes at the one location.
  pretrained        first all weights trained on the pretraining classes at uniformly random
                    canvas locations (the "translated across the whole canvas" pretraining), then
                    the convolutions and the dense layer frozen and only the classifier head
                    trained on the new classes at the one location.
  fixed_pretrained  Biscione & Bowers' central control: the same, but pretrained at the one
                    location (0, 0) only. Same data, same architecture, same fine-tuning: if the
                    transfer comes from the locations seen in pretraining and not from the
                    architecture, this condition does not transfer.
  random_features   the same head-only training on the frozen layers of a random
                    initialization (no pretraining): frozen features alone do not explain a
                    transfer.

Accuracy is the top-1 among the new classes' logits (chance 1 / (10 - k)): a pretrained head
still has weights for the pretraining classes, which are not among the answers. Transfer is
compared across k chance-corrected: `(untrained - chance) / (trained - chance)`, the fraction of
the above-chance accuracy at the trained location that survives at the untrained ones.

Internal representations (their analysis): the cosine similarity of the dense layer's features
('fc1', the penultimate layer) of the same digit at the trained location and at each grid
location, against the same similarity between different digits at the trained location.

Stopping rule: `pretrain_steps` and `train_steps`, checked (`experiments.stopping_rule`): with
`half_length_check` every run also trains both phases for half their steps on its seed (option
'length' 0.5, name `pretrained_classes5_x0.5_seed3`), and the cells of `schedule_lengths`
('<condition>_classes<k>') for these multiples. A cell is at its plateau at a length when the
final validation accuracy of each of its phases rose by at most `PLATEAU_TOLERANCE` from half
that length; each cell is reported at the shortest such length, else at its longest
(`reported_runs`). A run with a phase whose validation accuracy fell to chance after its first
record collapsed (`collapsed`): it is counted in the report and left out of its cell's
statistics, contrasts and check.

Learning rate: `learning_rate` (peak, per 256 examples), half the other experiments' rate: at
theirs 11 of 135 runs collapsed (a network dead from its first steps, or a pretraining that
diverged after reaching 0.84 validation accuracy); at this one the same seeds trained.

Head-only fine-tuning because fine-tuning all pretrained weights at the one location (an earlier
protocol of this experiment) gave no transfer at all, also at peak rates 0.01 and 0.005, and so
did training the dense layer with the head: the one-location training overwrites what made the
dense layer's features invariant.
"""

from __future__ import annotations

import collections
import math
import os

import jax
import jax.numpy as jnp
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
import numpy as np

from cnn_jax.data.augment import translate
from cnn_jax.train.preprocess import to_unit_interval
from cnn_jax.train.step import identity
from experiments import seed_statistics, stopping_rule
from experiments.in_memory_training import (InMemoryDataset, evaluation_subset, plateau_gain,
                                            train_classifier, training_config, validation_split)
from experiments.model_zoo import SMALL_CNN, check_names, check_positive_number, check_seeds
from experiments.report_tables import by_option, cell, markdown_table
from experiments.runs import Run

NAME = "learned_invariance"
CONDITIONS = ("scratch", "pretrained", "fixed_pretrained", "random_features")
PRETRAINED_CONDITIONS = ("pretrained", "fixed_pretrained")
# The conditions the class-count sweep may run (random_features runs at the headline only).
SWEEP_CONDITIONS = ("scratch", "pretrained", "fixed_pretrained")
DIGIT_SIZE = 28
NUM_CLASSES = 10
# The layers below the classifier head: frozen in the head-only conditions.
FEATURE_MODULES = ("Conv1", "Conv2", "Fc1")
FEATURE_LAYER = "fc1"  # the penultimate (dense) layer whose features the cosine compares
ALPHA = 0.05
# A training phase whose validation accuracy falls within this of chance did not train or
# diverged (at the other experiments' rate, twice this one's, 11 of 135 runs answered one class);
# such runs are counted and left out of their cell.
COLLAPSE_MARGIN = 0.02
# Biscione & Bowers' central finding: random-location pretraining transfers, against scratch and
# against fixed-location pretraining.
CENTRAL_CLAIMS = ("Pretraining across the canvas gives invariance at untrained locations",
                  "Random-location beats fixed-location pretraining (invariance comes from the "
                  "data)")


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


def class_split(pretrain_classes: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """The pretraining classes (the first `pretrain_classes` digits) and the new ones (the rest)."""
  return tuple(range(pretrain_classes)), tuple(range(pretrain_classes, NUM_CLASSES))


def model_fields(config) -> dict:
  """The small CNN at the section's conv widths, with a dense layer of `hidden_width` units."""
  settings = config.learned_invariance
  return {**SMALL_CNN, "features": tuple(settings.conv_features),
          "hidden": (settings.hidden_width,)}


def test_offsets(config) -> list[int]:
  """The offsets of the test grid along each axis: 0, step, ..., up to canvas - 28."""
  settings = config.learned_invariance
  return list(range(0, settings.canvas - DIGIT_SIZE + 1, settings.location_step))


def validate(config) -> None:
  settings = config.learned_invariance
  check_seeds(f"config.{NAME}.seeds", settings.seeds)
  check_seeds(f"config.{NAME}.class_sweep_seeds", settings.class_sweep_seeds)
  if settings.canvas < DIGIT_SIZE or settings.location_step < 1:
    raise ValueError(f"config.{NAME}.canvas must be >= {DIGIT_SIZE} and location_step >= 1, got "
                     f"{settings.canvas!r} and {settings.location_step!r}")
  for field in ("hidden_width", "pretrain_steps", "train_steps"):
    if not isinstance(settings[field], int) or settings[field] < 1:
      raise ValueError(f"config.{NAME}.{field} must be an int >= 1, got {settings[field]!r}")
  check_positive_number(f"config.{NAME}.learning_rate", settings.learning_rate)
  counts = tuple(settings.pretrain_class_counts)
  if not counts or len(set(counts)) != len(counts) or any(
      not isinstance(k, int) or not 1 <= k <= NUM_CLASSES - 2 for k in counts):
    raise ValueError(f"config.{NAME}.pretrain_class_counts must be distinct ints in [1, "
                     f"{NUM_CLASSES - 2}] (at least 2 new classes), got {counts!r}")
  if settings.headline_classes not in counts:
    raise ValueError(f"config.{NAME}.headline_classes must be one of pretrain_class_counts "
                     f"{counts!r}, got {settings.headline_classes!r}")
  check_names(f"config.{NAME}.conditions", settings.conditions, CONDITIONS)
  check_names(f"config.{NAME}.class_sweep_conditions", settings.class_sweep_conditions,
              SWEEP_CONDITIONS)
  stopping_rule.check_schedule(f"config.{NAME}.schedule_lengths", settings.schedule_lengths,
                               {cell_name(run) for run in _rule_runs(config)},
                               "'<condition>_classes<k>' cells of the plan", 1.0)
  features = tuple(settings.conv_features)
  if len(features) != 2 or any(not isinstance(f, int) or f < 1 for f in features):
    raise ValueError(f"config.{NAME}.conv_features must be two ints >= 1 (the CNN's two conv "
                     f"layers), got {features!r}")


def plan(config) -> list[Run]:
  """The headline count's `conditions` on `seeds`; the other counts' `class_sweep_conditions`
  on `class_sweep_seeds` (the budget cut; 'gpu' runs them all on every seed); then the stopping
  rule's runs at other lengths (option 'length'): half of every run with `half_length_check`,
  and each length of `schedule_lengths`."""
  settings = config.learned_invariance
  runs = _rule_runs(config)
  lengths = lambda run: (((0.5,) if settings.half_length_check else ())
                         + tuple(settings.schedule_lengths.get(cell_name(run), ())))
  return runs + stopping_rule.runs_at_lengths(runs, lengths, "length", "x")


def cell_name(run: Run) -> str:
  """'<condition>_classes<k>', the key of `schedule_lengths`."""
  return f"{run.options['condition']}_classes{run.options['pretrain_classes']}"


def scaled_steps(steps: int, length: float) -> int:
  """A phase's steps at `length` times its configured `steps` (rounded up, at least 1)."""
  return steps if length == 1.0 else max(1, math.ceil(length * steps))


def _rule_runs(config) -> list[Run]:
  """The runs at the configured steps, seed by seed."""
  settings = config.learned_invariance
  runs = []
  for classes in settings.pretrain_class_counts:
    headline = classes == settings.headline_classes
    conditions = settings.conditions if headline else settings.class_sweep_conditions
    for seed in (settings.seeds if headline else settings.class_sweep_seeds):
      runs += [Run(NAME, f"{condition}_classes{classes}_seed{seed}", seed,
                   {"condition": condition, "pretrain_classes": classes})
               for condition in conditions]
  return sorted(runs, key=lambda run: run.seed)


def _classes(images, labels, classes):
  keep = np.isin(labels, classes)
  return images[keep], labels[keep]


def new_class_predictions(logits: jax.Array, new_classes=(5, 6, 7, 8, 9)) -> jax.Array:
  """The top-1 class among `new_classes` of logits `[N, 10]`, as labels `[N]`."""
  new_classes = jnp.asarray(new_classes)
  return new_classes[jnp.argmax(logits[:, new_classes], axis=-1)]


def randomly_placed(images: np.ndarray, canvas: int, seed: int) -> np.ndarray:
  """uint8 digits `[N, 28, 28, C]` on uint8 canvases, each at a random location (fixed by
  `seed`): the pretraining's validation and test images."""
  offsets = np.random.default_rng(seed).integers(0, canvas - DIGIT_SIZE + 1, (len(images), 2))
  canvases = np.zeros((len(images), canvas, canvas, images.shape[-1]), images.dtype)
  for canvas_image, image, (top, left) in zip(canvases, images, offsets):
    canvas_image[top:top + DIGIT_SIZE, left:left + DIGIT_SIZE] = image
  return canvases


def cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
  """`a . b / (|a| |b|)` per row of `[N, D]` features -> `[N]`; 0 where a vector is zero (a
  dead ReLU layer has no direction)."""
  norms = jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1)
  return jnp.where(norms > 0, jnp.sum(a * b, -1) / jnp.where(norms > 0, norms, 1.0), 0.0)


def _training_record(records) -> dict:
  return {"final_train_loss": records[-1].train_loss,
          "record_steps": [r.step for r in records],
          "validation_accuracy": [r.validation_accuracy for r in records],
          "validation_loss": [r.validation_loss for r in records],
          "plateau_gain": plateau_gain(records)}


def execute(run: Run, config, digits: InMemoryDataset) -> dict:
  settings = config.learned_invariance
  canvas = settings.canvas
  condition = run.options["condition"]
  length = run.options.get("length", 1.0)
  old_classes, new_classes = class_split(run.options["pretrain_classes"])
  at_corner = lambda x: place_on_canvas(x, canvas)
  (train_images, train_labels), validation = validation_split(
      digits.train_images, digits.train_labels, config.validation_fraction)

  def training(seed: int, num_steps: int):
    # 8 validation records per training: the curve whose last quarter shows the plateau.
    return training_config("cnn", seed=seed, num_steps=num_steps, batch_size=config.batch_size,
                           learning_rate=settings.learning_rate,
                           record_every=max(num_steps // 8, 1), **model_fields(config))

  variables, metrics = None, {}
  if condition in PRETRAINED_CONDITIONS:
    images, labels = _classes(train_images, train_labels, old_classes)
    val_images, val_labels = _classes(*validation, old_classes)
    test_images, test_labels = _classes(digits.test_images, digits.test_labels, old_classes)
    if condition == "pretrained":
      placement = {"augment": random_placement(canvas)}
      val_images = randomly_placed(val_images, canvas, seed=1)
      test_images = randomly_placed(test_images, canvas, seed=2)
    else:
      placement = {"input_transform": at_corner}
    pretrained, pretrain_records = train_classifier(
        training(run.seed, scaled_steps(settings.pretrain_steps, length)), images, labels,
        validation=(val_images, val_labels), **placement)
    variables = pretrained.variables
    metrics.update({f"pretrain_{k}": v for k, v in _training_record(pretrain_records).items()})
    # Its own test distribution: random locations for 'pretrained', (0, 0) for 'fixed'.
    metrics["pretrain_clean_accuracy"] = pretrained.accuracy(test_images, test_labels)
  images, labels = _classes(train_images, train_labels, new_classes)
  one_location = training(run.seed + 1000, scaled_steps(settings.train_steps, length))
  if condition != "scratch":
    one_location.frozen_modules = FEATURE_MODULES
  trained, records = train_classifier(one_location, images, labels, input_transform=at_corner,
                                      variables=variables,
                                      validation=_classes(*validation, new_classes))
  metrics.update(_training_record(records))

  # Tested on canvases placed by hand, at every location.
  classifier = trained._replace(input_transform=identity)
  test_images, test_labels = _classes(*evaluation_subset(digits, 2 * config.eval_images),
                                      new_classes)
  test_images = to_unit_interval(test_images)
  features_fn = classifier.features_fn()

  def logits_and_features(offset):
    # One forward pass gives both the logits and the penultimate features.
    layers = dict(features_fn(place_on_canvas(test_images, canvas, offset)))
    return layers["logits"], layers[FEATURE_LAYER]

  offsets = test_offsets(config)
  _, trained_features = logits_and_features((0, 0))
  accuracy, similarity = [], []
  for top in offsets:
    accuracy.append([])
    similarity.append([])
    for left in offsets:
      logits, features = logits_and_features((top, left))
      accuracy[-1].append(float(jnp.mean(
          new_class_predictions(logits, new_classes) == test_labels)))
      similarity[-1].append(float(jnp.mean(cosine_similarity(trained_features, features))))
  # The reference: different digits (each with the next one of the subset) at the same place.
  different = float(jnp.mean(cosine_similarity(trained_features,
                                               jnp.roll(trained_features, 1, axis=0))))
  return {**metrics, "offsets": offsets, "accuracy": accuracy, "feature_similarity": similarity,
          "different_digit_similarity": different, "clean_accuracy": accuracy[0][0],
          "chance": 1.0 / len(new_classes), "test_digits": int(len(test_labels))}


def untrained_accuracy(metrics: dict) -> float:
  """Mean accuracy over every grid location but the trained one (offset (0, 0))."""
  return float(np.mean(np.delete(np.asarray(metrics["accuracy"], np.float64).ravel(), 0)))


def untrained_similarity(metrics: dict) -> float:
  """Mean cosine similarity of 'fc1' features, trained vs every untrained grid location."""
  return float(np.mean(np.delete(np.asarray(metrics["feature_similarity"],
                                            np.float64).ravel(), 0)))


def transfer_ratio(metrics: dict) -> float:
  """`(untrained - chance) / (trained - chance)`: 1 full transfer, 0 chance elsewhere; NaN when
  the trained location itself is at chance (nothing to transfer)."""
  gain = metrics["accuracy"][0][0] - metrics["chance"]
  if gain <= 0:
    return math.nan
  return (untrained_accuracy(metrics) - metrics["chance"]) / gain


def _values(group, metric):
  return [metric(r["metrics"]) if callable(metric) else r["metrics"].get(metric) for r in group]


def _seed_ordered(results, condition, classes):
  runs = [r for r in results if r["run"]["options"]["condition"] == condition
          and r["run"]["options"]["pretrain_classes"] == classes]
  return sorted(runs, key=lambda r: r["run"]["seed"])


def computed_contrasts(results: list[dict], config) -> list[dict]:
  """Biscione & Bowers' contrasts, Welch-tested over seeds: at the headline class count,
  random-location pretraining vs scratch and vs fixed-location pretraining (untrained-location
  accuracy, and the 'fc1' similarity); across class counts, the most vs the fewest pretraining
  classes (chance-corrected transfer). Each: `{claim, a, b, values_a, values_b, comparison,
  verdict}`; a contrast whose cells have fewer than 2 runs is left out."""
  settings = config.learned_invariance
  headline = settings.headline_classes
  fewest, most = min(settings.pretrain_class_counts), max(settings.pretrain_class_counts)
  planned = [
      (CENTRAL_CLAIMS[0], ("scratch", headline), ("pretrained", headline), untrained_accuracy,
       +1),
      (CENTRAL_CLAIMS[1], ("fixed_pretrained", headline), ("pretrained", headline),
       untrained_accuracy, +1),
      ("Random-location pretraining makes 'fc1' features of a digit similar across locations",
       ("fixed_pretrained", headline), ("pretrained", headline), untrained_similarity, +1),
      ("Frozen random features do not explain the transfer",
       ("random_features", headline), ("pretrained", headline), untrained_accuracy, +1),
  ]
  if fewest != most:
    planned.append((f"More pretraining classes ({most} vs {fewest}) transfer more "
                    "(chance-corrected)", ("pretrained", fewest), ("pretrained", most),
                    transfer_ratio, +1))
  tested = []
  for claim, a, b, metric, sign in planned:
    values_a = _values(_seed_ordered(results, *a), metric)
    values_b = _values(_seed_ordered(results, *b), metric)
    if min(len(seed_statistics.finite_values(v)) for v in (values_a, values_b)) < 2:
      continue
    comparison = seed_statistics.welch_test(values_a, values_b)
    tested.append({"claim": claim, "a": a, "b": b, "values_a": values_a, "values_b": values_b,
                   "metric": metric.__name__, "comparison": comparison,
                   "verdict": seed_statistics.verdict(sign, comparison, ALPHA)})
  return tested


def reproduction_statement(tested: list[dict]) -> str:
  """Which of Biscione & Bowers' contrasts reproduce, computed from the verdicts."""
  if not tested:
    return "No contrast could be tested (fewer than 2 seeds per cell)."
  supported = [t["claim"] for t in tested if t["verdict"] == "supported"]
  others = [f"{t['claim']} ({t['verdict']})" for t in tested if t["verdict"] != "supported"]
  core = [t for t in tested if t["claim"] in CENTRAL_CLAIMS]
  reproduces = len(core) == len(CENTRAL_CLAIMS) and all(
      t["verdict"] == "supported" for t in core)
  lines = [("Their central finding reproduces: " if reproduces else
            "Their central finding does not reproduce in full: ") +
           "random-location pretraining vs scratch and vs fixed-location pretraining are "
           + ", ".join(f"'{t['verdict']}'" for t in core) + f" (Welch, alpha = {ALPHA:g})."]
  if supported:
    lines.append("Supported: " + "; ".join(supported) + ".")
  if others:
    lines.append("Not supported or opposite: " + "; ".join(others) + ".")
  return " ".join(lines)


def _label(condition: str, classes: int) -> str:
  return f"{condition}, {classes} classes"


def _heatmaps(groups, offsets, out_dir) -> None:
  figure = Figure(figsize=(3.6 * len(groups) + 1.2, 3.6))
  axes = figure.subplots(1, len(groups), squeeze=False)[0]
  for axis, ((condition, classes), group) in zip(axes, groups.items()):
    mean_map = np.array([r["metrics"]["accuracy"] for r in group]).mean(0)
    image = axis.imshow(mean_map, vmin=0, vmax=1, cmap="viridis")
    axis.set_xticks(range(len(offsets)), offsets)
    axis.set_yticks(range(len(offsets)), offsets)
    axis.set_xlabel("digit left offset (px)")
    axis.set_ylabel("digit top offset (px)")
    axis.set_title(f"{condition}\n(mean of {len(group)} seeds)", fontsize=9)
    axis.add_patch(Rectangle((-0.5, -0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    for (i, j), value in np.ndenumerate(mean_map):
      axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6, color="white")
  figure.colorbar(image, ax=axes.tolist(), shrink=0.8,
                  label="test accuracy on the new classes (fraction)")
  figure.suptitle("Accuracy by digit location (red: the trained location)", fontsize=10)
  figure.savefig(os.path.join(out_dir, "location_heatmap.png"), dpi=100)


def _class_count_figure(results, counts, out_dir) -> None:
  figure = Figure(figsize=(5.5, 3.8), layout="constrained")
  axis = figure.subplots()
  for condition in SWEEP_CONDITIONS:
    points = [(k, seed_statistics.summarize(_values(_seed_ordered(results, condition, k),
                                                    untrained_accuracy))) for k in counts]
    points = [(k, s) for k, s in points if s.n > 0]
    if points:
      axis.errorbar([k for k, _ in points], [s.mean for _, s in points],
                    yerr=[0.0 if s.n < 2 else s.std for _, s in points], marker="o", capsize=3,
                    label=condition)
  axis.plot(counts, [1.0 / (NUM_CLASSES - k) for k in counts], "k:", label="chance")
  axis.set_xticks(counts)
  axis.set_xlabel("number of pretraining classes (new classes: the other digits)")
  axis.set_ylabel("accuracy at untrained locations (fraction)")
  axis.set_ylim(0, 1)
  axis.set_title("Transfer to untrained locations (mean ± sample std over seeds)", fontsize=9)
  axis.legend(fontsize=8)
  figure.savefig(os.path.join(out_dir, "class_count_transfer.png"), dpi=100)


def _similarity_figure(groups, offsets, out_dir) -> None:
  figure = Figure(figsize=(5.5, 3.8), layout="constrained")
  axis = figure.subplots()
  distances = np.hypot(*np.meshgrid(offsets, offsets, indexing="ij")).ravel()
  unique = np.unique(distances)
  for (condition, classes), group in groups.items():
    maps = np.array([np.asarray(r["metrics"]["feature_similarity"]).ravel() for r in group])
    per_seed = np.array([[m[distances == d].mean() for d in unique] for m in maps])
    std = per_seed.std(0, ddof=1) if len(per_seed) > 1 else np.zeros(len(unique))
    axis.errorbar(unique, per_seed.mean(0), yerr=std, marker="o", markersize=3, capsize=2,
                  label=condition)
  axis.set_xlabel("distance from the trained location (px)")
  axis.set_ylabel("cosine similarity of 'fc1' features")
  axis.set_title("Same digit, trained vs shifted location (mean ± sample std over seeds)",
                 fontsize=9)
  axis.legend(fontsize=8)
  figure.savefig(os.path.join(out_dir, "feature_similarity.png"), dpi=100)


def pretrain_validation_accuracy(metrics: dict) -> float:
  """The final validation accuracy of the pretraining phase."""
  return metrics["pretrain_validation_accuracy"][-1]


def phase_accuracies(condition: str) -> tuple:
  """The curves the stopping rule checks: the pretraining's (where there is one) and the new
  classes' (`stopping_rule.final_validation_accuracy`)."""
  return ((pretrain_validation_accuracy,) if condition in PRETRAINED_CONDITIONS
          else ()) + (stopping_rule.final_validation_accuracy,)


def collapsed(result: dict) -> bool:
  """Whether the run's training collapsed: a validation record of a phase (the pretraining, the
  new classes) after its first within `COLLAPSE_MARGIN` of chance among its classes (the
  network answered one class: it never trained, or diverged on the way)."""
  metrics = result["metrics"]
  classes = result["run"]["options"]["pretrain_classes"]
  phases = [(metrics["validation_accuracy"], 1.0 / (NUM_CLASSES - classes))]
  if "pretrain_validation_accuracy" in metrics:
    phases.append((metrics["pretrain_validation_accuracy"], 1.0 / classes))
  return any(min(curve[1:] or curve) <= chance + COLLAPSE_MARGIN for curve, chance in phases)


def cell_lengths(results: list[dict]) -> dict[tuple[str, int], dict[float, list[dict]]]:
  """`{(condition, pretrain_classes): {length: results}}` (1 = the configured steps), the
  `collapsed` runs left out."""
  return stopping_rule.by_length(
      [result for result in results if not collapsed(result)],
      lambda r: (r["run"]["options"]["condition"], r["run"]["options"]["pretrain_classes"]),
      1.0, option="length")


def reported_runs(results: list[dict], config) -> list[dict]:
  """Each cell at its reported length: the shortest at which every phase reached its plateau,
  else the longest (`stopping_rule.reported_length`)."""
  del config  # the lengths are in the runs' options
  return [result for (condition, _), lengths in cell_lengths(results).items()
          for result in lengths[stopping_rule.reported_length(lengths,
                                                              phase_accuracies(condition))]]


def _plateau_checks(results: list[dict]) -> dict[tuple[str, int], tuple[float, list]]:
  """`{cell: (reported length, [(phase, doubling gain or None), ...])}`."""
  checks = {}
  for (condition, classes), lengths in cell_lengths(results).items():
    accuracies = phase_accuracies(condition)
    length = stopping_rule.reported_length(lengths, accuracies)
    phases = ("pretraining", "new classes")[-len(accuracies):]
    checks[(condition, classes)] = (length, [
        (phase, stopping_rule.doubling_gain(lengths, length, accuracy))
        for phase, accuracy in zip(phases, accuracies)])
  return checks


def report(results: list[dict], config, out_dir: str) -> str:
  settings = config.learned_invariance
  checks = _plateau_checks(results)
  collapsed_runs = collections.Counter(
      (r["run"]["options"]["condition"], r["run"]["options"]["pretrain_classes"],
       r["run"]["options"].get("length", 1.0)) for r in filter(collapsed, results))
  results = reported_runs(results, config)
  headline = settings.headline_classes
  order = lambda key: (key[1] != headline, key[1], CONDITIONS.index(key[0]))
  groups = by_option(results, "condition", "pretrain_classes")
  groups = {key: groups[key] for key in sorted(groups, key=order)}
  offsets = results[0]["metrics"]["offsets"]
  headline_groups = {key: group for key, group in groups.items() if key[1] == headline}
  _heatmaps(headline_groups or groups, offsets, out_dir)
  _similarity_figure(headline_groups or groups, offsets, out_dir)
  counts = sorted({key[1] for key in groups})
  _class_count_figure(results, counts, out_dir)
  step = settings.location_step

  training_rows, location_rows = [], []
  for (condition, classes), group in groups.items():
    pretrained = condition in PRETRAINED_CONDITIONS
    length, gains = checks[(condition, classes)]
    gains = dict(gains)
    training_rows.append([
        condition, classes, len(group), collapsed_runs.get((condition, classes, length), 0),
        f"{length:g}",
        cell(_values(group, "pretrain_clean_accuracy")) if pretrained else "–",
        cell(_values(group, "pretrain_final_train_loss")) if pretrained else "–",
        cell(_values(group, "pretrain_plateau_gain")) if pretrained else "–",
        stopping_rule.gain_cell(gains["pretraining"]) if pretrained else "–",
        cell(_values(group, "clean_accuracy")), cell(_values(group, "final_train_loss")),
        cell(_values(group, "plateau_gain")), stopping_rule.gain_cell(gains["new classes"])])
    maps = [np.asarray(r["metrics"]["accuracy"]) for r in group]
    neighbours = [np.mean([m[0, 1], m[1, 0]]) if len(offsets) > 1 else np.nan for m in maps]
    location_rows.append([
        condition, classes, f"{group[0]['metrics']['chance']:.3f}", cell(neighbours),
        cell(_values(group, untrained_accuracy)), cell([m[-1, -1] for m in maps]),
        cell(_values(group, transfer_ratio)), cell(_values(group, untrained_similarity)),
        cell(_values(group, "different_digit_similarity"))])

  checked = [(cell_key, length, gains) for cell_key, (length, gains) in checks.items()
             if all(gain is not None for _, gain in gains)]
  rising = [f"{_label(*cell_key)} at {length:g}x ("
            + ", ".join(f"{phase} {gain.difference:+.4f}, p "
                        f"{seed_statistics.format_p(gain.p_value)}"
                        for phase, gain in gains if not stopping_rule.reached_plateau(gain))
            + ")" for cell_key, length, gains in checked
            if not all(stopping_rule.reached_plateau(gain) for _, gain in gains)]
  tested = computed_contrasts(results, config)
  contrast_rows = [[
      t["claim"], _label(*t["a"]), _label(*t["b"]), t["metric"],
      f"{t['comparison'].difference:+.3f}", seed_statistics.format_p(t["comparison"].p_value),
      t["verdict"]] for t in tested]
  full_sweep = (tuple(settings.class_sweep_seeds) == tuple(settings.seeds)
                and tuple(settings.class_sweep_conditions) == SWEEP_CONDITIONS)
  seeds_note = ("" if full_sweep or len(counts) == 1 else
                f" Budget cut: the other class counts ran {tuple(settings.class_sweep_conditions)} "
                f"only, on {len(settings.class_sweep_seeds)} seeds "
                f"{tuple(settings.class_sweep_seeds)}; the 'gpu' config runs every condition on "
                "every seed.")
  return "\n".join([
      f"Canvas {settings.canvas}x{settings.canvas} (digit offsets up to "
      f"{settings.canvas - DIGIT_SIZE} px); the small CNN at {tuple(settings.conv_features)} "
      f"channels with a dense layer ('fc1') of {settings.hidden_width} units. Of the digits, "
      "the first k classes are the pretraining classes and the rest the new ones, "
      f"k in {tuple(counts)} (headline k = {headline}). New classes trained at offset (0, 0) "
      f"only ({settings.train_steps} steps): 'scratch' trains all weights; 'pretrained' first "
      "trains all weights on the pretraining classes at uniformly random locations, "
      "'fixed_pretrained' at offset (0, 0) only (Biscione & Bowers' control), both for "
      f"{settings.pretrain_steps} steps, then only the classifier head (conv and dense layers "
      f"frozen); every phase at peak rate {settings.learning_rate:g} per 256 examples (batch "
      f"{config.batch_size}); 'random_features' trains only the head on a random "
      f"initialization's frozen layers. {len(settings.seeds)} seeds at k = {headline}."
      f"{seeds_note} Stopping rule: fixed lengths, checked on a class-stratified "
      f"{config.validation_fraction:.0%} validation split of the training digits (never the "
      "test set), placed as in that training: 'plateau gain' "
      "= mean validation accuracy over the last quarter of the 8 records minus the quarter "
      "before; and by training both phases for half their steps: a cell is at its plateau at a "
      "length (column 'length', 1 = the steps above) when the final validation accuracy of each "
      f"phase rose by at most {stopping_rule.PLATEAU_TOLERANCE:g} from half that length "
      "(columns 'gain from half', seeds paired); each cell is reported at the shortest such "
      "length trained, else at its longest. A run with a phase whose validation accuracy fell "
      f"within {COLLAPSE_MARGIN:g} of chance after its first record collapsed (its network "
      "answered one class: it never trained or diverged) and is left out of its cell (column "
      "'collapsed': such seeds at the reported length; 'seeds': the others). Test: the new "
      f"classes among a fixed subset of {2 * config.eval_images} test digits, at every offset "
      f"in {offsets}^2; top-1 among the new classes.", "",
      "Training (clean accuracy: pretraining on its own test placement; new classes at the "
      "trained location):", "",
      markdown_table(["condition", "pretraining classes", "seeds", "collapsed", "length",
                      "pretrain clean acc", "pretrain train loss", "pretrain plateau gain",
                      "pretrain gain from half (p)", "clean acc (trained location)",
                      "train loss", "plateau gain", "gain from half (p)"], training_rows), "",
      *([f"Stopping-rule check: {stopping_rule.checked_count(rising, len(checked))}", ""]
        if checked else []),
      "Accuracy away from the trained location, and the cosine similarity of the same digit's "
      "'fc1' features at the trained vs the untrained locations (reference: different digits "
      "at the trained location):", "",
      markdown_table(["condition", "pretraining classes", "chance",
                      f"acc {step} px away (2 locations)", "mean acc at untrained locations",
                      "acc at the farthest location", "transfer (chance-corrected)",
                      "fc1 cosine, same digit moved", "fc1 cosine, different digits"],
                     location_rows), "",
      f"Contrasts (Welch t over seeds, alpha = {ALPHA:g}; all predicted b > a):", "",
      markdown_table(["claim", "a", "b", "metric", "b - a", "p", "verdict"], contrast_rows), "",
      reproduction_statement(tested), "",
      f"![accuracy by location, k = {headline}](location_heatmap.png)", "",
      "![accuracy at untrained locations vs number of pretraining classes]"
      "(class_count_transfer.png)", "",
      f"![fc1 cosine similarity vs distance, k = {headline}](feature_similarity.png)"])
