"""Experiment 6: rotation equivariance by construction (P4CNN) against rotation augmentation.

Cohen & Welling 2016's comparison in miniature. Six conditions, each at every seed: the plain
CNN `MATCHED_CNN` ('cnn'), its twin with the P4CNN's batch norm after every conv ('cnn_bn': the
same depth, layout and normalization as the P4CNN, only the convolutions plain) and the p4
group-equivariant `P4CNN` (`cnn_jax.models.p4cnn`), within 5% of each other's parameter counts,
each trained on upright digits without augmentation ('none') and with a rotation by an angle
uniform over the full circle ('rotate', `cnn_jax.data.augment`'s 'rotate=180'). Training: the
sweep's recipe on the training digits less the validation split for `num_epochs`. Stopping-rule
check: the conditions of `schedule_epochs` also train for other numbers of epochs (the cosine
schedule stretched to each length, every seed); a condition has reached its plateau at E epochs
when doubling the length from E / 2 raised its final validation accuracy by at most
`PLATEAU_TOLERANCE` (`experiments.stopping_rule`). Measured on the test digits (the [0, 1]
scale, black background):

- clean accuracy, and accuracy against the test angle over the full circle;
- accuracy on the test digits each rotated by its own angle uniform in [0°, 360°) (one fixed
  draw for every run): the rotated-MNIST-like number;
- per layer l (by name) and test angle theta, the equivariance error inside the inscribed disk
  D of each map (the corners of a rotated square leave it):

    error_l(theta) = min_k ||D (f_l(R_theta x) - T'_k f_l(x))|| / ||D f_l(x)||,

  with R_theta exact (`jnp.rot90`) at multiples of 90° and bilinear otherwise; T'_k rotates a
  map's space the same way and, on the P4CNN's p4 maps (layers before 'rotation_pool'), shifts
  the rotation axis by k (`p4cnn.rotate_p4`): k = theta / 90 on the group, else the better of
  the two neighbouring k (no group element matches). Layers without space (global pool, dense,
  logits) compare with the identity: an invariance error; the logits' is the network's.
"""

from __future__ import annotations

import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from cnn_jax import analysis
from cnn_jax.data.augment import rotate
from cnn_jax.models.p4cnn import rotate_images, rotate_p4
from cnn_jax.train.preprocess import to_unit_interval
from experiments import stopping_rule
from experiments.in_memory_training import (InMemoryDataset, evaluation_subset, plateau_gain,
                                            prng_key,
                                            train_classifier, training_config, validation_split)
from experiments.model_zoo import MODELS as ZOO_MODELS
from experiments.model_zoo import check_names, check_positive_number, check_seeds
from experiments.published import PUBLISHED
from experiments.report_tables import cell, markdown_table
from experiments.runs import Run
from experiments.seed_statistics import format_p, summarize, welch_test
from experiments.stopping_rule import (PLATEAU_TOLERANCE, doubling_gain,
                                       final_validation_accuracy, plateau_verdict,
                                       reported_length)

NAME = "rotation"
MODELS = ("cnn", "cnn_bn", "p4cnn")
MODEL_TITLES = {"cnn": "CNN", "cnn_bn": "CNN + batch norm", "p4cnn": "P4CNN"}
AUGMENTATIONS = ("none", "rotate")
# Errors below this are float32 rounding (a rotated window sums its products in another order):
# the layer is exactly equivariant; figures say so instead of drawing them on a log axis.
EXACT_ERROR = 1e-5
# The fixed draw of per-digit angles of the randomly rotated test set (the same in every run).
RANDOM_ROTATION_SEED = 0


def validate(config) -> None:
  settings = config.rotation
  check_seeds(f"config.{NAME}.seeds", settings.seeds)
  check_names(f"config.{NAME}.models", settings.models, MODELS)
  for field in ("cnn_features", "p4cnn_features"):
    features = tuple(settings[field])
    if len(features) != 3 or any(not isinstance(f, int) or f < 1 for f in features):
      raise ValueError(f"config.{NAME}.{field} must be 3 channel counts >= 1 (one per conv "
                       f"layer), got {features!r}")
  check_names(f"config.{NAME}.augmentations", settings.augmentations, AUGMENTATIONS)
  for field in ("num_epochs", "max_degrees", "learning_rate"):
    check_positive_number(f"config.{NAME}.{field}", settings[field])
  stopping_rule.check_schedule(
      f"config.{NAME}.schedule_epochs", settings.schedule_epochs,
      {f"{model}_{augmentation}" for model in settings.models
       for augmentation in settings.augmentations},
      f"'<model>_<augmentation>' of the configured models {tuple(settings.models)!r} and "
      f"augmentations {tuple(settings.augmentations)!r}", settings.num_epochs)
  for field in ("test_angles", "layer_angles"):
    angles = tuple(settings[field])
    if not angles or any(not isinstance(a, (int, float)) or isinstance(a, bool)
                         or not 0 <= a <= 360 for a in angles):
      raise ValueError(f"config.{NAME}.{field} must be a non-empty list of angles in [0, 360] "
                       f"degrees, got {angles!r}")


def model_spec(model: str, config) -> tuple[str, dict]:
  """`(cnn_jax.models name, overrides)` of 'cnn' (`MATCHED_CNN`'s layers), 'cnn_bn' (the same
  with the P4CNN's batch norm after every conv, `model_zoo`'s 'cnn_matched_bn') or 'p4cnn' at
  the config's widths; the defaults, 16-32-64 and 8-16-32 p4 channels, are matched in parameters
  (23,946, 24,058 and 23,554), and halving both keeps them matched (see
  `cnn_jax.models.p4cnn`)."""
  if model == "p4cnn":
    return "p4cnn", {"features": tuple(config.rotation.p4cnn_features)}
  name, fields = ZOO_MODELS["cnn_matched_bn" if model == "cnn_bn" else "cnn_matched"]
  return name, {**fields, "features": tuple(config.rotation.cnn_features)}


def plan(config) -> list[Run]:
  """Every (model, augmentation) at every seed; then, seed by seed, each condition of
  `schedule_epochs` at each of its other lengths (option 'epochs')."""
  settings = config.rotation
  conditions = [(model, augmentation) for model in settings.models
                for augmentation in settings.augmentations]
  runs = [Run(NAME, f"{model}_{augmentation}_seed{seed}", seed,
              {"model": model, "augmentation": augmentation})
          for seed in settings.seeds for model, augmentation in conditions]
  for seed in settings.seeds:
    for model, augmentation in conditions:
      for epochs in settings.schedule_epochs.get(f"{model}_{augmentation}", ()):
        runs.append(Run(NAME, f"{model}_{augmentation}_e{epochs:g}_seed{seed}", seed,
                        {"model": model, "augmentation": augmentation,
                         "epochs": float(epochs)}))
  return runs


def rotate_by(images: jax.Array, degrees: float) -> jax.Array:
  """`[N, H, W, C]` rotated counterclockwise by `degrees`: exact (`rot90`) at multiples of 90°,
  bilinear (`augment.rotate`, zeros entering) otherwise."""
  if degrees % 90 == 0:
    return rotate_images(images, int(degrees // 90) % 4)
  return rotate(images, float(degrees))


def disk_mask(side: int) -> jax.Array:
  """`[side, side]` 1 inside the disk of radius (side - 1) / 2 about the centre, else 0: the
  pixels whose rotation about the centre stays inside the map (for bilinear sampling too)."""
  coordinates = jnp.arange(side) - (side - 1) / 2
  radius = jnp.hypot(coordinates[:, None], coordinates[None, :])
  return (radius <= (side - 1) / 2 + 1e-6).astype(jnp.float32)


def feature_rotations(features: jax.Array, degrees: float, p4: bool) -> list[jax.Array]:
  """The candidate actions T'_k of a rotation by `degrees` on one layer's activation.

  `[N, D]` -> `[features]` (invariance); `[N, h, w, C]` -> space rotated by `rotate_by`, and for
  a p4 map the rotation axis shifted by k: k = degrees / 90 on the group, else both neighbours.
  """
  if features.ndim != 4:
    return [features]
  if not p4:
    return [rotate_by(features, degrees)]
  quarter_turns = {math.floor(degrees / 90), math.ceil(degrees / 90)}
  spatial = rotate_by(features, degrees)
  # rotate_p4 rotates space by k quarter turns, then shifts the axis: undo the spatial part.
  return [rotate_p4(rotate_images(spatial, -k), k) for k in sorted(quarter_turns)]


def p4_layer_names(names: list[str], model: str) -> set[str]:
  """The layers whose activations are p4 maps: the P4CNN's, before 'rotation_pool'."""
  if model != "p4cnn":
    return set()
  return set(names[:names.index("rotation_pool")])


def layer_rotation_errors(features_fn, images: jax.Array, degrees: float,
                          p4_layers: set[str]) -> list[dict]:
  """`[{'name', 'error'}]` per layer in forward order (module docstring), the logits last.

  Args:
    features_fn: `images -> [(name, activation), ...]` (`Classifier.features_fn`).
    images: `[N, H, W, C]` on the [0, 1] scale.
    degrees: the rotation angle theta.
    p4_layers: names of the layers whose activations are p4 maps.
  """
  reference, rotated = features_fn(images), features_fn(rotate_by(images, degrees))
  return [{"name": name, "error": float(_relative_error(features, rotated_features, degrees,
                                                        name in p4_layers))}
          for (name, features), (_, rotated_features) in zip(reference, rotated)]


@jax.jit(static_argnums=(2, 3))
def _relative_error(features: jax.Array, rotated_features: jax.Array, degrees: float,
                    p4: bool) -> jax.Array:
  """min_k ||D (rotated_features - T'_k features)|| / ||D features|| (module docstring); one
  compiled program per layer shape instead of one per eager operation."""
  mask = disk_mask(features.shape[1])[None, :, :, None] if features.ndim == 4 else 1.0
  norm = jnp.linalg.norm((mask * features).ravel())
  return jnp.min(jnp.stack([jnp.linalg.norm((mask * (rotated_features - candidate)).ravel())
                            for candidate in feature_rotations(features, degrees, p4)])) / norm


def random_rotation_test_set(images: np.ndarray) -> jax.Array:
  """The test digits (uint8 `[N, 28, 28, 1]`) on the [0, 1] scale, each rotated by its own angle
  uniform in [0°, 360°), the same draw in every run (`RANDOM_ROTATION_SEED`)."""
  angles = jax.random.uniform(prng_key(RANDOM_ROTATION_SEED), (len(images),), maxval=360.0)
  return rotate(to_unit_interval(images), angles)


def num_steps(config, num_train: int, epochs: float | None = None) -> int:
  """`ceil(epochs * num_train / batch_size)` (default epochs: `num_epochs`), at least 1."""
  epochs = config.rotation.num_epochs if epochs is None else epochs
  return max(1, math.ceil(epochs * num_train / config.batch_size))


def execute(run: Run, config, dataset: InMemoryDataset) -> dict:
  """Trains the run's model upright (or with rotations), then measures it; JSON-ready."""
  settings = config.rotation
  (train_images, train_labels), validation = validation_split(
      dataset.train_images, dataset.train_labels, config.validation_fraction)
  steps = num_steps(config, len(train_labels), run.options.get("epochs"))
  steps_per_epoch = math.ceil(len(train_labels) / config.batch_size)
  model = run.options["model"]
  model_name, fields = model_spec(model, config)
  training = training_config(model_name, seed=run.seed, num_steps=steps,
                             batch_size=config.batch_size, learning_rate=settings.learning_rate,
                             record_every=max(min(steps_per_epoch, steps // 4), 1), **fields)
  training.augmentation = ("" if run.options["augmentation"] == "none"
                           else f"rotate={settings.max_degrees:g}")
  start = time.time()
  classifier, records = train_classifier(training, train_images, train_labels,
                                         dataset=dataset.name, validation=validation)
  train_seconds = time.time() - start
  apply_fn = classifier.apply_fn()
  test_images = to_unit_interval(dataset.test_images)
  labels = dataset.test_labels
  top1 = lambda images: np.asarray(analysis.top1(apply_fn, images, 500))
  curve_images, curve_labels = evaluation_subset(dataset, config.eval_images)
  curve_images = to_unit_interval(curve_images)
  features_fn = classifier.features_fn()
  layer_images = test_images[:config.layer_images]
  names = [name for name, _ in features_fn(layer_images)]
  p4_layers = p4_layer_names(names, model)
  layer_errors = [{"angle": float(angle),
                   "layers": layer_rotation_errors(features_fn, layer_images, angle, p4_layers)}
                  for angle in settings.layer_angles]
  return {
      "parameters": int(sum(np.size(p) for p in jax.tree.leaves(classifier.variables["params"]))),
      "clean_accuracy": float(np.mean(top1(test_images) == labels)),
      "final_train_loss": records[-1].train_loss,
      "train_loss": [r.train_loss for r in records],
      "train_steps": steps,
      "train_examples": len(train_labels),
      "test_examples": len(labels),
      "steps_per_epoch": steps_per_epoch,
      "train_seconds": train_seconds,
      "record_steps": [r.step for r in records],
      "validation_accuracy": [r.validation_accuracy for r in records],
      "validation_loss": [r.validation_loss for r in records],
      "plateau_gain": plateau_gain(records),
      "random_rotation_accuracy": float(np.mean(
          top1(random_rotation_test_set(dataset.test_images)) == labels)),
      "test_angles": [float(a) for a in settings.test_angles],
      "angle_images": len(curve_labels),
      "accuracy_vs_angle": [float(np.mean(top1(rotate_by(curve_images, angle)) == curve_labels))
                            for angle in settings.test_angles],
      "p4_layers": sorted(p4_layers),
      "layer_errors": layer_errors,
  }


# ----------------------------------------------------------------------------------- report


def _metric(group: list[dict], name: str) -> list[float]:
  return [result["metrics"][name] for result in group]


def accuracy_at(metrics: dict, angle: float) -> float:
  """Accuracy at test angle `angle` (NaN if it was not measured)."""
  for measured, accuracy in zip(metrics["test_angles"], metrics["accuracy_vs_angle"]):
    if measured % 360 == angle % 360:
      return accuracy
  return math.nan


def layer_error(metrics: dict, angle: float, name: str) -> float:
  """The error of layer `name` at layer angle `angle` (NaN if not measured)."""
  for entry in metrics["layer_errors"]:
    if entry["angle"] == angle:
      for layer in entry["layers"]:
        if layer["name"] == name:
          return layer["error"]
  return math.nan


def _label(model: str, augmentation: str) -> str:
  return MODEL_TITLES[model] + (" + rotation augmentation" if augmentation == "rotate" else "")


def contrasts(config) -> list[tuple]:
  """`(question, a, b, metric, expected sign of b - a or 0 for none, why)`: the section's tests.

  a and b are (model, augmentation) cells; metric(metrics) -> one value per run.
  """
  random_rotation = lambda metrics: metrics["random_rotation_accuracy"]
  at = lambda angle: (lambda metrics: accuracy_at(metrics, angle))
  off_group = [a for a in config.rotation.test_angles if a % 90][:1] or [45.0]
  clean = lambda metrics: metrics["clean_accuracy"]
  rows = []
  for plain in ("cnn", "cnn_bn"):
    norm = "" if plain == "cnn" else ", against the CNN with the P4CNN's batch norm"
    rows += [
        ("accuracy at 90°, trained upright", (plain, "none"), ("p4cnn", "none"), at(90), +1,
         "P4CNN is invariant to 90° rotations by construction"),
        ("accuracy on randomly rotated digits", (plain, "rotate"), ("p4cnn", "none"),
         random_rotation, 0, "90° invariance by construction vs full-circle invariance learned"),
        ("accuracy on randomly rotated digits", (plain, "rotate"), ("p4cnn", "rotate"),
         random_rotation, +1, f"Cohen & Welling 2016: P4CNN beats a CNN on rotated digits{norm}"),
    ]
    for angle in sorted({45.0, float(off_group[0])}):
      rows.append((f"accuracy at {angle:g}°, trained upright", (plain, "none"), ("p4cnn", "none"),
                   at(angle), 0, "off the group: no guarantee"))
      rows.append((f"accuracy at {angle:g}°, trained with rotations", (plain, "rotate"),
                   ("p4cnn", "rotate"), at(angle), 0, "off the group: no guarantee"))
  rows.append(("clean accuracy, trained with rotations", ("cnn", "rotate"), ("cnn_bn", "rotate"),
               clean, 0, "does batch norm alone change how well the plain CNN fits rotated "
               "digits?"))
  return rows


def contrast_result(expected_sign: int, difference: float, p_value: float,
                    alpha: float = 0.05) -> str:
  """The computed outcome of a test: with a predicted sign, 'supported' / 'opposite' / 'not
  supported'; without one (0), which side is significantly higher, or no significant difference."""
  significant = not math.isnan(p_value) and p_value < alpha and difference != 0
  if expected_sign == 0:
    if not significant:
      return "no significant difference"
    return "b higher" if difference > 0 else "a higher"
  if not significant:
    return "not supported"
  return "supported" if np.sign(difference) == expected_sign else "opposite"


def condition_of(result: dict) -> tuple[str, str]:
  return result["run"]["options"]["model"], result["run"]["options"]["augmentation"]


def by_length(results: list[dict], config) -> dict[tuple[str, str], dict[float, list[dict]]]:
  """`{(model, augmentation): {epochs: results}}`, lengths in increasing order."""
  return stopping_rule.by_length(results, condition_of, config.rotation.num_epochs)


def _plateau_note(lengths_by_condition, epochs: float) -> str:
  """The stopping-rule check of every condition, computed from the runs."""
  lines = [f"Stopping-rule check (a condition is at its plateau at E epochs when its mean final "
           f"validation accuracy rose by at most {PLATEAU_TOLERANCE:g} from E / 2 to E epochs; "
           "paired t over seeds):", ""]
  lines += [f"- {_label(*key)}: {plateau_verdict(lengths, epochs)}"
            for key, lengths in lengths_by_condition.items()]
  return "\n".join(lines)


def _contrast_table(groups, reported, config) -> str:
  rows = []
  for question, a, b, metric, sign, why in contrasts(config):
    if not (groups.get(a) and groups.get(b)):
      continue
    values_a = [metric(r["metrics"]) for r in groups[a]]
    values_b = [metric(r["metrics"]) for r in groups[b]]
    expected = {1: "b > a", -1: "b < a", 0: "none"}[sign]
    if min(summarize(values_a).n, summarize(values_b).n) < 2:
      outcome, difference, p_value = "fewer than 2 seeds per cell", "–", "–"
    else:
      comparison = welch_test(values_a, values_b)
      outcome = contrast_result(sign, comparison.difference, comparison.p_value)
      difference, p_value = f"{comparison.difference:+.4f}", format_p(comparison.p_value)
    rows.append([question, f"{_label(*a)}, {reported[a]:g} epochs: {cell(values_a)}",
                 f"{_label(*b)}, {reported[b]:g} epochs: {cell(values_b)}",
                 f"{expected} ({why})", difference, p_value, outcome])
  return markdown_table(["measure", "a", "b", "prediction", "b - a", "p (Welch t)", "result"],
                        rows)


def _published_comparison(groups, reported) -> str:
  """Our rotated-test errors of the models trained with rotations against Cohen & Welling's."""
  rows = []
  errors = {}
  for model, key in (("cnn", "cohen_welling_cnn_error"), ("cnn_bn", "cohen_welling_cnn_error"),
                     ("p4cnn", "cohen_welling_p4cnn_error")):
    group = groups.get((model, "rotate"))
    if not group:
      continue
    values = [1.0 - value for value in _metric(group, "random_rotation_accuracy")]
    summary = summarize(values)
    errors[model] = summary.mean
    published = PUBLISHED[key].value
    inside = (summary.n >= 2 and summary.low <= published <= summary.high)
    rows.append([f"{_label(model, 'rotate')}, {reported[(model, 'rotate')]:g} epochs",
                 cell(values, 4), f"{published:.4f}",
                 "yes" if inside else "no", f"{summary.mean / published:.2f}"])
  if not rows:
    return ""
  lines = [markdown_table(["model", "test error here (randomly rotated digits)",
                           f"published ({PUBLISHED['cohen_welling_cnn_error'].source})",
                           "published value inside our 95% interval",
                           "ratio here / published"], rows)]
  theirs = 1.0 - (PUBLISHED["cohen_welling_p4cnn_error"].value
                  / PUBLISHED["cohen_welling_cnn_error"].value)
  ours = [f"{1.0 - errors['p4cnn'] / errors[plain]:.1%} over the {MODEL_TITLES[plain]}"
          for plain in ("cnn", "cnn_bn") if plain in errors and "p4cnn" in errors]
  if ours:
    lines += ["", f"Relative error reduction of the P4CNN: {', '.join(ours)} here, "
              f"{theirs:.1%} over their CNN published."]
  return "\n".join(lines)


def _longest_against_p4cnn(lengths_by_condition, config) -> list[list[str]]:
  """Each plain CNN trained with rotations at its longest length (beyond `num_epochs`) against
  the P4CNN trained with rotations at `num_epochs` and at its own longest length, on randomly
  rotated digits (Welch t), with the mean training time per run of each: does more training
  close the gap?"""
  epochs = float(config.rotation.num_epochs)
  p4cnn = lengths_by_condition.get(("p4cnn", "rotate"), {})
  p4cnn_lengths = sorted({e for e in (epochs, max(p4cnn, default=epochs))
                          if len(p4cnn.get(e, ())) >= 2})
  seconds = lambda group: np.mean(_metric(group, "train_seconds"))
  rows = []
  for model in ("cnn", "cnn_bn"):
    lengths = lengths_by_condition.get((model, "rotate"), {})
    longest = max(lengths, default=0.0)
    if longest <= epochs or len(lengths[longest]) < 2:
      continue
    for p4cnn_epochs in p4cnn_lengths:
      a, b = lengths[longest], p4cnn[p4cnn_epochs]
      values_a, values_b = (_metric(g, "random_rotation_accuracy") for g in (a, b))
      comparison = welch_test(values_a, values_b)
      rows.append([f"{_label(model, 'rotate')}, {longest:g} epochs: {cell(values_a)} "
                   f"({seconds(a):.0f} s per run)",
                   f"{_label('p4cnn', 'rotate')}, {p4cnn_epochs:g} epochs: {cell(values_b)} "
                   f"({seconds(b):.0f} s per run)",
                   f"{comparison.difference:+.4f}", format_p(comparison.p_value),
                   contrast_result(+1, comparison.difference, comparison.p_value)])
  return rows


def _schedule_section(lengths_by_condition, config, out_dir: str) -> str:
  """The conditions trained for more than one length: a table, a figure, and the longest
  plain CNN with rotations against the P4CNN."""
  multiple = {key: lengths for key, lengths in lengths_by_condition.items() if len(lengths) > 1}
  if not multiple:
    return ""
  rows = []
  for key, lengths in multiple.items():
    for epochs, group in lengths.items():
      rows.append([_label(*key), f"{epochs:g}", len(group),
                   cell(_metric(group, "clean_accuracy")),
                   cell([final_validation_accuracy(r["metrics"]) for r in group]),
                   cell(_metric(group, "random_rotation_accuracy")),
                   cell(_metric(group, "final_train_loss")),
                   stopping_rule.gain_cell(doubling_gain(lengths, epochs)),
                   f"{np.mean(_metric(group, 'train_seconds')):.0f}"])
  _schedule_figure(multiple, os.path.join(out_dir, "rotation_training_length.png"))
  lines = ["Training length: each condition also trained for other numbers of epochs (the "
           "cosine schedule stretched to each length, every seed). 'Gain from E / 2': the "
           "change of the final validation accuracy from half the length, paired over seeds "
           "(p: paired t).", "",
           markdown_table(["condition", "epochs", "seeds", "clean acc", "final val acc",
                           "acc, randomly rotated", "train loss", "gain from E / 2 (p)",
                           "train s per run"], rows), "",
           "![accuracy against training length](rotation_training_length.png)"]
  contrast_rows = _longest_against_p4cnn(lengths_by_condition, config)
  if contrast_rows:
    lines += ["", "Longer training of the plain CNN against the P4CNN, on randomly rotated "
              "digits (prediction b > a: the P4CNN's built-in quarter-turn invariance is not "
              "matched by more augmented training; Welch t, alpha = 0.05):", "",
              markdown_table(["a", "b", "b - a", "p (Welch t)", "result"], contrast_rows)]
  return "\n".join(lines)


def _schedule_figure(lengths_by_condition, path: str) -> None:
  """Final validation accuracy and accuracy on randomly rotated digits against the number of
  epochs (log scale), a line per condition, error bars: sample std over seeds."""
  figure = Figure(figsize=(10.0, 3.8))
  axes = figure.subplots(1, 2)
  measures = (("final validation accuracy (upright digits)", final_validation_accuracy),
              ("test accuracy, randomly rotated digits",
               lambda m: m["random_rotation_accuracy"]))
  all_epochs = sorted({e for lengths in lengths_by_condition.values() for e in lengths})
  for axis, (ylabel, measure) in zip(axes, measures):
    for (model, augmentation), lengths in lengths_by_condition.items():
      summaries = [summarize([measure(r["metrics"]) for r in group])
                   for group in lengths.values()]
      axis.errorbar(list(lengths), [s.mean for s in summaries],
                    yerr=[0.0 if math.isnan(s.std) else s.std for s in summaries],
                    fmt="-o" if augmentation == "none" else "--s", markersize=4, capsize=3,
                    color=f"C{MODELS.index(model)}", label=_label(model, augmentation))
    axis.set_xscale("log", base=2)
    axis.set_xticks(all_epochs, [f"{e:g}" for e in all_epochs])
    axis.minorticks_off()
    axis.set_xlabel("training length (epochs, log scale)")
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
  axes[0].set_title("At the end of training (mean ± sample std over seeds)", fontsize=9)
  axes[1].set_title("Rotated test digits (mean ± sample std over seeds)", fontsize=9)
  axes[1].legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(path, dpi=100)


def _validation_figure(groups, path: str) -> None:
  figure = Figure(figsize=(6.4, 3.6))
  axis = figure.subplots()
  for (model, augmentation), group in groups.items():
    epochs = np.asarray(group[0]["metrics"]["record_steps"]) / group[0]["metrics"][
        "steps_per_epoch"]
    values = np.asarray(_metric(group, "validation_accuracy"))
    mean = values.mean(0)
    std = values.std(0, ddof=1) if len(values) > 1 else np.zeros_like(mean)
    color = f"C{MODELS.index(model)}"
    axis.plot(epochs, mean, marker=".", label=_label(model, augmentation), color=color,
              linestyle="-" if augmentation == "none" else "--")
    axis.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.2)
  axis.set_xlabel("epoch")
  axis.set_ylabel("validation accuracy (upright digits)")
  axis.set_title("Validation curves: mean ± sample std over seeds", fontsize=9)
  axis.grid(alpha=0.3)
  axis.legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(path, dpi=100)


def _angle_figure(groups, path: str) -> None:
  figure = Figure(figsize=(7.5, 3.8))
  axis = figure.subplots()
  for (model, augmentation), group in groups.items():
    color = f"C{MODELS.index(model)}"
    angles = list(group[0]["metrics"]["test_angles"])
    values = np.asarray(_metric(group, "accuracy_vs_angle"))
    if 0.0 in angles and 360.0 not in angles:  # close the circle: 360° is 0°
      angles.append(360.0)
      values = np.concatenate([values, values[:, angles.index(0.0)][:, None]], axis=1)
    mean = values.mean(0)
    std = values.std(0, ddof=1) if len(values) > 1 else np.zeros_like(mean)
    axis.plot(angles, mean, marker=".", label=_label(model, augmentation), color=color,
              linestyle="-" if augmentation == "none" else "--")
    axis.fill_between(angles, mean - std, mean + std, color=color, alpha=0.2)
  axis.set_xticks(np.arange(0, 361, 45))
  axis.set_xlabel("test rotation angle (degrees, counterclockwise)")
  axis.set_ylabel("test accuracy")
  axis.set_ylim(0, 1)
  axis.set_title("Accuracy against test angle (mean ± sample std over seeds)", fontsize=9)
  axis.grid(alpha=0.3)
  axis.legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(path, dpi=100)


def _layer_figure(groups, models: list[str], path: str) -> None:
  """One panel per model (their layers differ); a line per (test angle, training)."""
  figure = Figure(figsize=(6.0 * len(models), 5.2))
  axes = figure.subplots(1, len(models), squeeze=False)[0]
  for axis, model in zip(axes, models):
    bottom_marks = []
    color_index = 0
    for augmentation in AUGMENTATIONS:
      group = groups.get((model, augmentation))
      if not group:
        continue
      names = [layer["name"] for layer in group[0]["metrics"]["layer_errors"][0]["layers"]]
      for entry in group[0]["metrics"]["layer_errors"]:
        angle = entry["angle"]
        values = [[layer_error(r["metrics"], angle, name) for r in group] for name in names]
        summaries = [summarize(v) for v in values]
        means = np.array([s.mean for s in summaries])
        stds = np.array([0.0 if math.isnan(s.std) else s.std for s in summaries])
        exact = means < EXACT_ERROR
        color = f"C{color_index}"
        color_index += 1
        x = np.arange(len(names))
        shown = np.where(exact, np.nan, means)
        training = "upright" if augmentation == "none" else "with rotations"
        axis.errorbar(x, shown, yerr=np.where(exact, 0, stds),
                      fmt="-o" if augmentation == "none" else "--s", color=color, markersize=4,
                      capsize=3, label=f"{angle:g}°, trained {training}")
        bottom_marks += [(i, color) for i in np.flatnonzero(exact)]
      axis.set_xticks(np.arange(len(names)), names, rotation=45, fontsize=7)
    axis.set_yscale("log")
    axis.set_title(f"{MODEL_TITLES[model]}: per-layer rotation equivariance error", fontsize=9)
    axis.set_xlabel("layer (forward order; no spatial axes from global_pool on: invariance)")
    axis.set_ylabel("‖D(f(Rx) − T′f(x))‖ / ‖D f(x)‖")
    axis.grid(alpha=0.3, which="both")
    if bottom_marks:
      offsets = {}
      for i, color in bottom_marks:
        level = offsets.get(i, 0)
        offsets[i] = level + 1
        axis.annotate("0", (i, 0.0), xycoords=axis.get_xaxis_transform(),
                      xytext=(0, 4 + 9 * level), textcoords="offset points", ha="center",
                      fontsize=8, color=color, fontweight="bold")
      axis.set_title(f"{MODEL_TITLES[model]}: per-layer rotation equivariance error\n'0': exactly "
                     f"equivariant (error < {EXACT_ERROR:g}, float32 rounding), not drawn",
                     fontsize=8)
    axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.4), ncol=2)
  figure.tight_layout()
  figure.savefig(path, dpi=100)


def reported_lengths(lengths_by_condition) -> dict[tuple[str, str], float]:
  """Each condition's reported length: the shortest at which it reached its plateau
  (`stopping_rule.plateau_length`), else the longest it trained for."""
  return {key: reported_length(lengths) for key, lengths in lengths_by_condition.items()}


def reported_runs(results: list[dict], config) -> list[dict]:
  """The runs of each condition at its reported length (`reported_lengths`)."""
  lengths_by_condition = by_length(results, config)
  return [result for key, epochs in reported_lengths(lengths_by_condition).items()
          for result in lengths_by_condition[key][epochs]]


def report(results: list[dict], config, out_dir: str) -> str:
  """The table, the contrasts, the comparison with Cohen & Welling and three figures, each
  condition at its reported length (`reported_lengths`)."""
  settings = config.rotation
  lengths = by_length(results, config)
  order = [(m, a) for m in MODELS for a in AUGMENTATIONS if lengths.get((m, a))]
  lengths = {key: lengths[key] for key in order}
  reported = reported_lengths(lengths)
  groups = {key: lengths[key][reported[key]] for key in order}
  angles = [a for a in (90.0, 180.0, 45.0) if a in map(float, settings.test_angles)]
  off_layer = [a for a in settings.layer_angles if a % 90]
  logit_angles = [a for a in settings.layer_angles if a % 90 == 0][:1] + off_layer[:1]
  rows = []
  for (model, augmentation), group in groups.items():
    epochs = reported[(model, augmentation)]
    rows.append([_label(model, augmentation), len(group), group[0]["metrics"]["parameters"],
                 f"{epochs:g}",
                 stopping_rule.gain_cell(doubling_gain(lengths[(model, augmentation)], epochs)),
                 cell(_metric(group, "clean_accuracy")),
                 cell(_metric(group, "final_train_loss")),
                 cell(_metric(group, "random_rotation_accuracy"))]
                + [cell([accuracy_at(r["metrics"], a) for r in group]) for a in angles]
                + [cell([layer_error(r["metrics"], a, "logits") for r in group], 3, True)
                   for a in logit_angles])
  table = markdown_table(["condition", "seeds", "parameters", "epochs",
                          "gain from half (p)", "clean acc",
                          "train loss", "acc, randomly rotated"]
                         + [f"acc at {a:g}°" for a in angles]
                         + [f"logit invariance error at {a:g}°" for a in logit_angles], rows)
  _validation_figure(groups, os.path.join(out_dir, "rotation_validation.png"))
  _angle_figure(groups, os.path.join(out_dir, "rotation_accuracy_vs_angle.png"))
  models = [m for m in MODELS if any(key[0] == m for key in groups)]
  _layer_figure(groups, models, os.path.join(out_dir, "rotation_layer_equivariance.png"))
  per_epoch = {m: np.mean([r["metrics"]["train_seconds"] / reported[key]
                           for key, group in groups.items() if key[0] == m for r in group])
               for m in models}
  timing = ", ".join(f"{MODEL_TITLES[m]} {per_epoch[m]:.2f} s" for m in models)
  plain = next((m for m in ("cnn", "cnn_bn") if m in per_epoch), None)
  if "p4cnn" in per_epoch and plain:
    timing += (f" (the P4CNN trains {per_epoch['p4cnn'] / per_epoch[plain]:.1f}x slower than "
               f"the {MODEL_TITLES[plain]}: its inner layers do 4x the multiply-adds at the same "
               "parameter count)")
  first = next(iter(groups.values()))[0]["metrics"]
  layer_rows = []
  for (model, augmentation), group in groups.items():
    for name in [layer["name"] for layer in group[0]["metrics"]["layer_errors"][0]["layers"]]:
      layer_rows.append([_label(model, augmentation), name,
                         "yes" if name in group[0]["metrics"]["p4_layers"] else "no"]
                        + [cell([layer_error(r["metrics"], a, name) for r in group], 3, True)
                           for a in settings.layer_angles])
  comparison = _published_comparison(groups, reported)
  return "\n".join([
      f"Trained upright on the training digits less the {config.validation_fraction:.0%} "
      f"validation split (batch {config.batch_size}, peak rate {settings.learning_rate:g} per "
      f"256 examples, {settings.num_epochs:g} epochs and the other lengths below), then tested "
      "rotated. Stopping rule: each condition is reported at the shortest length at which it "
      f"reached its plateau (the final validation accuracy rose by at most {PLATEAU_TOLERANCE:g} "
      "from half that length, seeds paired; `experiments.stopping_rule`), a condition that "
      "reached it at none at its longest (column 'gain from half': bold where above the "
      "tolerance). "
      "'Rotation augmentation': "
      f"an angle uniform in ±{settings.max_degrees:g}° per training digit. CNN: "
      "`get_model('cnn', **MATCHED_CNN)` (three 3x3 convs of "
      f"{'-'.join(map(str, settings.cnn_features))} channels, global average pooling, no "
      "normalization); CNN + batch norm: the same with batch norm after every conv (no conv "
      "bias), as the P4CNN's; P4CNN: `get_model('p4cnn')` (three 3x3 p4 convs of "
      f"{'-'.join(map(str, settings.p4cnn_features))} p4 channels, group batch norm, max over "
      "rotations, global average pooling); models trained here: "
      f"{', '.join(MODEL_TITLES[m] for m in models)}; parameter counts in the table. 'Randomly "
      f"rotated': the {first['test_examples']:,} test digits, each rotated by its own angle "
      "uniform in [0°, 360°) (one draw for all runs); accuracy at a test angle: "
      f"{first['angle_images']:,} test digits rotated by it (exact at multiples of 90°, bilinear "
      "otherwise). Mean training time per epoch (compilation and validation included): "
      f"{timing}.", "",
      table, "",
      _plateau_note(lengths, float(settings.num_epochs)), "",
      _schedule_section(lengths, config, out_dir), "",
      "Validation curves: ![validation](rotation_validation.png)", "",
      "Accuracy against the test angle: "
      "![accuracy vs angle](rotation_accuracy_vs_angle.png)", "",
      "Tests (Welch's t on the per-seed values, each condition at its reported length; "
      "alpha = 0.05):", "",
      _contrast_table(groups, reported, config), "",
      "Per-layer equivariance error inside the inscribed disk of each map (module docstring "
      "of `experiments/rotation.py`; p4 maps: rotation of space and cyclic shift of the "
      f"rotation axis; {config.layer_images} test digits; off the group, the best neighbouring "
      "shift and a bilinear rotation of the map, so part of that error is interpolation):", "",
      markdown_table(["condition", "layer", "p4 map"]
                     + [f"error at {a:g}°" for a in settings.layer_angles], layer_rows), "",
      "![per-layer equivariance](rotation_layer_equivariance.png)", "",
      "Comparison with Cohen & Welling 2016 (models trained with rotations, tested on "
      "randomly rotated digits). Protocol differences: they train on MNIST-rot (12,000 "
      "digits, each rotated by a random angle) and test on its 50,000 rotated digits, with "
      "deeper networks (7 layers of 3x3 convolutions) and their own training recipe; here "
      f"{first['train_examples']:,} upright training digits are rotated on the fly by the "
      f"augmentation, {first['test_examples']:,} test digits, the 3-layer models above and "
      "the sweep's recipe.", "",
      comparison or "No run trained with rotations."])
