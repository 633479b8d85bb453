"""Experiment 1: augmentation {none, translate, rotate, both} x model, every invariance metric.

Each (dataset, model, augmentation, seed) is trained on the dataset's train split (the 4,000 offline
digits; the same digits at random positions on a 40 x 40 canvas, 'mnist_canvas', where crop and
circular shifts differ and padding meets the digit; CIFAR-10's 50,000 images where it is prepared in
`config.data_dir`, else its runs are not planned), then measured on test images (on the [0, 1]
scale, black = 0; normalization is inside the classifier): clean accuracy (the whole test split),
shift consistency (Zhang 2019; crop shifts and circular shifts), P(top-1 change) and MAC under
1-pixel diagonal shifts (Azulay & Weiss 2019), accuracy vs horizontal / vertical translation and vs
rotation angle, per-layer equivariance error (circular shifts), and the Lie derivative (Gruver et
al. 2022) of the log-probabilities (comparable between models) and of the logits under translation
and rotation, per layer (in each layer's own feature space) and split over the layers that introduce
it.

Stopping rule: `num_epochs` (on the canvas `canvas.num_epochs`), checked. Every run on the
digits of a model in `half_length_models` (the grid's and the dose-response's; on the canvas
`canvas.half_length_models`) also trains for half that length on the same seed (option
'epochs', name `cnn_translate_e7.5_seed3`), and the cells of `schedule_epochs`
('<model>_<augmentation>'; on the canvas `canvas.schedule_epochs`) for longer. Each cell is
reported at the shortest length at which it reached its plateau, else at its longest
(`experiments.stopping_rule.reported_length`): its tables and contrasts use those runs
(`reported_runs`). CIFAR-10's runs, counted in steps, are not checked this way.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
from matplotlib.figure import Figure
import numpy as np

from cnn_jax import analysis
from cnn_jax.data import get_dataset_info
from cnn_jax.data.augment import rotate
from cnn_jax.train.preprocess import to_unit_interval
from experiments import report_figures, stopping_rule
from experiments.in_memory_training import (CANVAS_DATASET, DATASET, IN_MEMORY_DATASETS,
                                            InMemoryDataset,
                                            evaluation_subset, is_prepared, not_prepared_message,
                                            plateau_gain, prng_key, train_classifier,
                                            training_config, validation_split)
from experiments.model_zoo import MODELS, check_names, check_positive_number, check_seeds
from experiments.report_tables import by_option, cell, markdown_table
from experiments.runs import Run
from experiments.seed_statistics import Comparison, format_p
from experiments.stopping_rule import (PLATEAU_TOLERANCE, doubling_gain, reached_plateau,
                                       reported_length)

NAME = "augmentation"
AUGMENTATIONS = ("none", "translate", "rotate", "both")
# The datasets whose runs are counted in epochs and checked by the stopping rule.
EPOCH_DATASETS = (DATASET, CANVAS_DATASET)
# Dose-response: the kinds of augmentation trained over a range of strengths, and their specs.
DOSE_KINDS = {"translate": "crop", "rotate": "rotate"}
DATASET_TITLES = {"mnist_offline": "Offline MNIST digits ('mnist_offline')",
                  "mnist_canvas": "Offline MNIST digits on a 40 x 40 canvas ('mnist_canvas')",
                  "cifar10": "CIFAR-10 ('cifar10')"}
assert tuple(DATASET_TITLES) == IN_MEMORY_DATASETS
# What a dataset's section says about its images, before its tables.
DATASET_NOTES = {
    "mnist_canvas": "Each digit's ink (the bounding box of its nonzero pixels) at a uniformly "
                    "random position on a black 40 x 40 canvas, fixed per image "
                    "(`cnn_jax.data.digit_canvas`); unlike the 28 x 28 digits, whose ink stays "
                    "4 pixels from the border, ink reaches the border, so crop and circular "
                    "shifts differ and the padding of the convolutions meets the digit."}


def augmentation_spec(name: str, config) -> str:
  """The `cnn_jax.data.augment` spec of augmentation `name`: one of AUGMENTATIONS, or a
  dose-response level 'translate<pixels>' / 'rotate<degrees>' (see `dose_name`)."""
  for kind, spec in DOSE_KINDS.items():
    if name.startswith(kind) and name != kind:
      return f"{spec}={name[len(kind):]}"
  translate = f"crop={config.augmentation.max_shift}"
  rotation = f"rotate={config.augmentation.max_degrees}"
  return {"none": "", "translate": translate, "rotate": rotation,
          "both": f"{translate},{rotation}"}[name]


def dose_ranges(config) -> dict[str, tuple]:
  """The dose-response training ranges: {'translate': pixels, 'rotate': degrees}."""
  return {"translate": tuple(config.augmentation.translation_ranges),
          "rotate": tuple(config.augmentation.rotation_ranges)}


def dose_name(kind: str, value: float, config) -> str:
  """The augmentation name of training range `value` of `kind`: 'none' at 0, the grid's
  'translate' / 'rotate' at its own range (one run serves both), else e.g. 'translate2'."""
  grid_range = {"translate": config.augmentation.max_shift,
                "rotate": config.augmentation.max_degrees}[kind]
  if value == 0:
    return "none"
  return kind if value == grid_range else f"{kind}{value:g}"


def validate(config) -> None:
  check_seeds(f"config.{NAME}.seeds", config.augmentation.seeds)
  check_names(f"config.{NAME}.datasets", config.augmentation.datasets, IN_MEMORY_DATASETS)
  check_names(f"config.{NAME}.models", config.augmentation.models, tuple(MODELS))
  check_names(f"config.{NAME}.augmentations", config.augmentation.augmentations, AUGMENTATIONS)
  if not isinstance(config.augmentation.cifar10_num_steps, int) or (
      config.augmentation.cifar10_num_steps < 1):
    raise ValueError(f"config.{NAME}.cifar10_num_steps must be an int >= 1, got "
                     f"{config.augmentation.cifar10_num_steps!r}")
  check_positive_number(f"config.{NAME}.num_epochs", config.augmentation.num_epochs)
  if config.augmentation.reduced_models:
    check_names(f"config.{NAME}.reduced_models", config.augmentation.reduced_models,
                tuple(MODELS))
  if config.augmentation.dose_models:
    check_names(f"config.{NAME}.dose_models", config.augmentation.dose_models, tuple(MODELS))
  for kind, values in dose_ranges(config).items():
    if any(not isinstance(v, (int, float)) or v < 0 for v in values):
      raise ValueError(f"config.{NAME} {kind} ranges must be numbers >= 0, got {values!r}")
  canvas = config.augmentation.canvas
  check_names(f"config.{NAME}.canvas.models", canvas.models, tuple(MODELS))
  check_names(f"config.{NAME}.canvas.augmentations", canvas.augmentations, AUGMENTATIONS)
  if canvas.reduced_models:
    check_names(f"config.{NAME}.canvas.reduced_models", canvas.reduced_models, tuple(MODELS))
  check_positive_number(f"config.{NAME}.canvas.num_epochs", canvas.num_epochs)
  for dataset, field in ((DATASET, f"config.{NAME}"), (CANVAS_DATASET, f"config.{NAME}.canvas")):
    _validate_lengths(config, dataset, field)
  if not 0.0 < config.validation_fraction < 1.0:
    raise ValueError(f"config.validation_fraction must be in (0, 1), got "
                     f"{config.validation_fraction!r}")


def _validate_lengths(config, dataset: str, field: str) -> None:
  """Checks the stopping rule's settings of `dataset` (`half_length_models`, `schedule_epochs`
  of its grid's settings, named from `field`)."""
  settings = _grid_settings(config, dataset)
  if settings.half_length_models:
    check_names(f"{field}.half_length_models", settings.half_length_models, tuple(MODELS))
  cells = {f"{run.options['model']}_{run.options['augmentation']}" for run in _full_runs(config)
           if run.options["dataset"] == dataset}
  what = "the digits grid or dose-response" if dataset == DATASET else "the canvas grid"
  stopping_rule.check_schedule(f"{field}.schedule_epochs", settings.schedule_epochs, cells,
                               f"'<model>_<augmentation>' cells of {what}",
                               _num_epochs(config, dataset))


def num_steps(config, dataset: str, num_train: int, epochs: float | None = None) -> int:
  """Training steps of a run on `dataset` with `num_train` training examples: on the digits
  and the canvas `ceil(epochs * num_train / batch_size)` (at least 1; default epochs:
  `num_epochs`, on the canvas `canvas.num_epochs`), CIFAR-10 `cifar10_num_steps`."""
  settings = config.augmentation
  if dataset == "cifar10":
    return settings.cifar10_num_steps
  epochs = _num_epochs(config, dataset) if epochs is None else epochs
  return max(1, math.ceil(epochs * num_train / config.batch_size))


def _num_epochs(config, dataset: str) -> float:
  settings = config.augmentation
  return settings.canvas.num_epochs if dataset == CANVAS_DATASET else settings.num_epochs


def _training_length(config, dataset: str) -> str:
  if dataset != "cifar10":
    return f"{_num_epochs(config, dataset):g} epochs"
  return f"{config.augmentation.cifar10_num_steps} training steps"


def name_prefix(dataset: str) -> str:
  """'' for the digits (the names runs and figures had before CIFAR-10), else '<dataset>_'."""
  return "" if dataset == DATASET else f"{dataset}_"


def _epochs_of(result: dict, config) -> float:
  """The number of epochs a run trained for (its 'epochs' option, else its dataset's)."""
  return float(result["run"]["options"].get("epochs", _num_epochs(config, result_dataset(result))))


def result_dataset(result: dict) -> str:
  """The dataset of a finished run (results written before CIFAR-10 runs name none: digits)."""
  return result["run"]["options"].get("dataset", DATASET)


def absent_datasets(config) -> tuple[str, ...]:
  """The datasets of `config.augmentation.datasets` that are not prepared in `config.data_dir`."""
  return tuple(name for name in config.augmentation.datasets
               if not is_prepared(name, config.data_dir))


def _grid_settings(config, dataset: str):
  """The canvas's own grid (`config.augmentation.canvas`: its models, augmentations and budget
  cut), else `config.augmentation`."""
  return config.augmentation.canvas if dataset == CANVAS_DATASET else config.augmentation


def dataset_models(config, dataset: str = DATASET) -> tuple[str, ...]:
  """The grid's models on `dataset` (`config.augmentation.canvas.models` on the canvas)."""
  return tuple(_grid_settings(config, dataset).models)


def model_augmentations(config, model: str, dataset: str = DATASET) -> tuple[str, ...]:
  """The grid's augmentations of `model` on `dataset`: `config.augmentation.augmentations`
  (on the canvas `canvas.augmentations`), less for the models `reduced_models` names (a budget
  cut: those get only the first)."""
  settings = _grid_settings(config, dataset)
  augmentations = tuple(settings.augmentations)
  return augmentations[:1] if model in settings.reduced_models else augmentations


def plan(config) -> list[Run]:
  """Every (dataset, model, augmentation) at every seed (on the canvas its own models and
  augmentations, `config.augmentation.canvas`), datasets that are not prepared left out; then
  on the digits the dose-response levels of each dose model the grid does not have; then the
  stopping rule's runs at other lengths (option 'epochs'), on the digits and the canvas: half
  the length of every run of `half_length_models`, and each length of `schedule_epochs`
  (the canvas's: `canvas.half_length_models`, `canvas.schedule_epochs`)."""
  runs = _full_runs(config)

  def lengths(run: Run) -> tuple[float, ...]:
    dataset = run.options["dataset"]
    if dataset not in EPOCH_DATASETS:
      return ()
    settings = _grid_settings(config, dataset)
    half = ((_num_epochs(config, dataset) / 2,)
            if run.options["model"] in settings.half_length_models else ())
    return half + tuple(settings.schedule_epochs.get(
        f"{run.options['model']}_{run.options['augmentation']}", ()))

  return runs + stopping_rule.runs_at_lengths(runs, lengths, "epochs", "e")


def _full_runs(config) -> list[Run]:
  """The grid's and the dose-response's runs at the configured length."""
  absent = absent_datasets(config)
  grid = [Run(NAME, f"{name_prefix(dataset)}{model}_{augmentation}_seed{seed}", seed,
              {"model": model, "augmentation": augmentation, "dataset": dataset})
          for seed in config.augmentation.seeds
          for dataset in config.augmentation.datasets if dataset not in absent
          for model in dataset_models(config, dataset)
          for augmentation in model_augmentations(config, model, dataset)]
  names = {run.name for run in grid}
  dose = []
  for seed in config.augmentation.seeds:
    for model in config.augmentation.dose_models:
      for kind, values in dose_ranges(config).items():
        for value in values:
          augmentation = dose_name(kind, value, config)
          name = f"{model}_{augmentation}_seed{seed}"
          if name not in names:
            names.add(name)
            dose.append(Run(NAME, name, seed, {"model": model, "augmentation": augmentation,
                                               "dataset": DATASET}))
  return grid + dose


def execute(run: Run, config, dataset: InMemoryDataset) -> dict:
  """Trains the run's model on `dataset` (the run's) and measures it; the metrics, JSON-ready."""
  settings = config.augmentation
  (train_images, train_labels), validation = validation_split(
      dataset.train_images, dataset.train_labels, config.validation_fraction)
  steps = num_steps(config, dataset.name, len(train_labels), run.options.get("epochs"))
  steps_per_epoch = math.ceil(len(train_labels) / config.batch_size)
  model_name, fields = MODELS[run.options["model"]]
  # A validation record per epoch (at least 4 per run): the curve that shows the plateau.
  training = training_config(model_name, seed=run.seed, num_steps=steps,
                             batch_size=config.batch_size, learning_rate=config.learning_rate,
                             record_every=max(min(steps_per_epoch, steps // 4), 1), **fields)
  training.augmentation = augmentation_spec(run.options["augmentation"], config)
  classifier, records = train_classifier(training, train_images, train_labels,
                                         dataset=dataset.name, validation=validation)
  apply_fn = classifier.apply_fn()
  images, labels = evaluation_subset(dataset, config.eval_images)
  images = to_unit_interval(images)
  layer_images = images[:config.layer_images]
  key = prng_key(run.seed)
  consistency = {
      mode: analysis.shift_consistency(apply_fn, images, key, max_shift=settings.consistency_shift,
                                       mode=mode, num_passes=settings.consistency_passes)
      for mode in analysis.SHIFT_MODES}
  features_fn = classifier.features_fn()
  layers = analysis.layer_equivariance_errors(
      features_fn, layer_images, [tuple(shift) for shift in settings.layer_shifts])
  lie_layers = analysis.layer_lie_derivatives(features_fn, layer_images,
                                              analysis.translation("horizontal"))
  attributions = {
      transformation.name: analysis.lie_attribution(
          classifier.model, classifier.variables, layer_images, transformation,
          preprocess=classifier.model_input, train=False)
      for transformation in (analysis.translation("horizontal"), analysis.rotation())}
  lie = {name: float(jnp.mean(jnp.linalg.norm(attribution.total, axis=-1)))
         for name, attribution in attributions.items()}
  # The same derivatives of the log-probabilities: unlike the logits' (whose scale each model
  # sets freely), comparable between models.
  log_probabilities = lambda x: jax.nn.log_softmax(apply_fn(x), axis=-1)
  lie_log_softmax = {
      transformation.name: float(jnp.mean(jnp.linalg.norm(analysis.lie_derivative(
          log_probabilities, layer_images,
          lambda x, t, transformation=transformation: analysis.warp_images(x, transformation, t)),
          axis=-1)))
      for transformation in (analysis.translation("horizontal"), analysis.rotation())}
  return {
      "clean_accuracy": classifier.accuracy(dataset.test_images, dataset.test_labels),
      "final_train_loss": records[-1].train_loss,
      "train_steps": steps,
      "record_steps": [r.step for r in records],
      "validation_accuracy": [r.validation_accuracy for r in records],
      "validation_loss": [r.validation_loss for r in records],
      "plateau_gain": plateau_gain(records),
      "consistency_crop": consistency["crop"],
      "consistency_circular": consistency["circular"],
      **analysis.prediction_change_under_shift(apply_fn, images, mode="crop"),
      "translations": list(settings.translations),
      "accuracy_vs_translation": {
          axis: [float(v) for v in analysis.accuracy_vs_translation(
              apply_fn, images, labels, settings.translations, axis=axis)]
          for axis in ("horizontal", "vertical")},
      "angles": list(settings.angles),
      "accuracy_vs_rotation": [float(v) for v in analysis.accuracy_vs_transformation(
          apply_fn, images, labels, rotate, settings.angles)],
      "layers": [{"name": layer.name, "stride": layer.stride, "on_grid": layer.on_grid_error,
                  "off_grid": layer.off_grid_error} for layer in layers],
      "lie_translation_logits": lie["translation_horizontal"],
      "lie_rotation_logits": lie["rotation"],
      "lie_translation_log_softmax": lie_log_softmax["translation_horizontal"],
      "lie_rotation_log_softmax": lie_log_softmax["rotation"],
      "layer_lie_translation": [{"name": layer.name, "relative_norm": layer.relative_norm}
                                for layer in lie_layers],
      "lie_attribution": {name: [contribution._asdict()
                                 for contribution in attribution.contributions()]
                          for name, attribution in attributions.items()},
  }


def _metric(group: list[dict], name: str) -> list[float]:
  return [result["metrics"][name] for result in group]


def _figure_legend(figure, axes, **options) -> None:
  """One legend for the figure with every labelled artist actually drawn, each label once."""
  entries = {}
  for axis in np.ravel(axes):
    for handle, label in zip(*axis.get_legend_handles_labels()):
      entries.setdefault(label, handle)
  if entries:
    figure.legend(list(entries.values()), list(entries), **options)


def _curve_plot(groups, config, path: str, title: str, xlabel: str, rows, trained) -> None:
  """Test accuracy curves, one panel per (row, training augmentation): mean ± sample std band
  over seeds per model; `trained(augmentation)` is the training range to shade (or None).

  Args:
    rows: `[(row_label, curve), ...]`, `curve(group) -> (x, per-seed values [seeds, len(x)])`.
  """
  augmentations = [a for a in AUGMENTATIONS if a in config.augmentation.augmentations]
  models = list(config.augmentation.models)
  figure = Figure(figsize=(3.6 * len(augmentations), 3.0 * len(rows) + 0.9))
  axes = figure.subplots(len(rows), len(augmentations), sharey=True, squeeze=False)
  for (row_label, curve), row_axes in zip(rows, axes):
    for axis, augmentation_name in zip(row_axes, augmentations):
      extent = trained(augmentation_name)
      if extent:
        axis.axvspan(-extent, extent, color="0.9", label="training range")
      for index, model in enumerate(models):
        group = groups.get((model, augmentation_name))
        if not group:
          continue
        x, values = curve(group)
        mean, std = report_figures.seed_summary(np.asarray(values, np.float64).T)
        axis.plot(x, mean, marker=".", color=f"C{index}", label=model)
        axis.fill_between(x, mean - std, mean + std, color=f"C{index}", alpha=0.2)
      axis.set_title(f"trained with: {augmentation_name}; {row_label}", fontsize=9)
      axis.set_xlabel(xlabel)
      axis.grid(alpha=0.3)
    row_axes[0].set_ylabel("test accuracy (fraction)")
  seeds = len(config.augmentation.seeds)
  figure.suptitle(f"{title} (mean ± sample std over up to {seeds} seeds)", fontsize=10)
  _figure_legend(figure, axes, loc="lower center", ncol=len(models) + 1, fontsize=8)
  figure.tight_layout(rect=(0, 0.06, 1, 1))
  figure.savefig(path, dpi=100)


def _consistency_plot(groups, config, path: str) -> None:
  """Shift consistency per model, one panel per shift kind, bars per training augmentation."""
  models = [m for m in config.augmentation.models if any(key[0] == m for key in groups)]
  augmentations = [a for a in AUGMENTATIONS if any(key[1] == a for key in groups)]
  figure = Figure(figsize=(max(7.0, 1.3 * len(models) * 2), 3.8))
  axes = figure.subplots(1, 2, sharey=True)
  width = 0.8 / max(len(augmentations), 1)
  for axis, (metric, kind) in zip(axes, (("consistency_crop", "crop shifts (zeros enter)"),
                                         ("consistency_circular", "circular shifts"))):
    for offset, augmentation_name in enumerate(augmentations):
      present = [(i, groups[(m, augmentation_name)]) for i, m in enumerate(models)
                 if groups.get((m, augmentation_name))]
      if not present:
        continue
      means, stds = report_figures.seed_summary([_metric(g, metric) for _, g in present])
      x = np.array([i for i, _ in present]) + (offset - (len(augmentations) - 1) / 2) * width
      axis.bar(x, means, width, yerr=stds, capsize=2, color=f"C{offset}",
               label=f"trained with: {augmentation_name}")
    axis.set_xticks(np.arange(len(models)), models, rotation=20, ha="right", fontsize=8)
    axis.set_ylim(0.0, 1.0)
    axis.set_title(kind, fontsize=9)
    axis.set_xlabel("model")
    axis.grid(axis="y", alpha=0.3)
  axes[0].set_ylabel("shift consistency (fraction of pairs\nwith the same top-1 class)")
  figure.suptitle(f"Shift consistency (two random shifts within ±"
                  f"{config.augmentation.consistency_shift} px; mean ± sample std over seeds)",
                  fontsize=10)
  _figure_legend(figure, axes, loc="lower center", ncol=len(augmentations), fontsize=8)
  figure.tight_layout(rect=(0, 0.08, 1, 1))
  figure.savefig(path, dpi=100)


def _layer_plot(groups, config, path: str) -> None:
  """Per model (one row: its layers), per training augmentation: the equivariance error of each
  layer on-grid / off-grid (spatial layers) or invariance error over all shifts (the others),
  and the relative Lie derivative; exact zeros at 0 on a symmetric log axis."""
  models = [m for m in config.augmentation.models if any(key[0] == m for key in groups)]
  augmentations = [a for a in AUGMENTATIONS if any(key[1] == a for key in groups)]
  figure = Figure(figsize=(12, 3.4 * len(models) + 0.3))
  axes = figure.subplots(len(models), 2, squeeze=False)
  kinds = (("on_grid", "-o"), ("off_grid", "--s"))
  for (error_axis, lie_axis), model in zip(axes, models):
    errors_drawn, lie_drawn = [], []
    names = None
    for index, augmentation_name in enumerate(augmentations):
      group = groups.get((model, augmentation_name))
      if not group:
        continue
      layers = group[0]["metrics"]["layers"]
      names = [entry["name"] for entry in layers]
      spatial = [entry["stride"] is not None for entry in layers]
      x = np.arange(len(names)) + 0.06 * (index - (len(augmentations) - 1) / 2)
      values = lambda name, kind: [e[kind] for r in group for e in r["metrics"]["layers"]
                                   if e["name"] == name]
      label = f"trained with: {augmentation_name}"  # once per augmentation: colour says it
      for kind, style in kinds:
        per_layer = [values(name, kind) if is_spatial else [] for name, is_spatial
                     in zip(names, spatial)]
        drawn = report_figures.errorbar_over_seeds(
            error_axis, x, per_layer, clip_at_zero=True, fmt=style, color=f"C{index}",
            markersize=4, label=label)
        label = label if not drawn else None
        errors_drawn += drawn
      invariant = [values(name, "on_grid") if not is_spatial else [] for name, is_spatial
                   in zip(names, spatial)]
      errors_drawn += report_figures.errorbar_over_seeds(
          error_axis, x, invariant, clip_at_zero=True, fmt=":^", color=f"C{index}",
          markersize=5, label=label)
      lie = [[e["relative_norm"] for r in group for e in r["metrics"]["layer_lie_translation"]
              if e["name"] == name] for name in names]
      lie_drawn += report_figures.errorbar_over_seeds(
          lie_axis, x, lie, clip_at_zero=True, fmt="-o", color=f"C{index}", markersize=4,
          label=f"trained with: {augmentation_name}")
    for axis, drawn in ((error_axis, errors_drawn), (lie_axis, lie_drawn)):
      report_figures.layer_ticks(axis, names)
      report_figures.zero_aware_log_scale(axis, drawn)
      axis.set_xlabel(f"layer of {model} (forward order)")
      axis.grid(alpha=0.3)
      if drawn:
        axis.legend(fontsize=6)
    error_axis.set_ylabel("‖f(Tx) − T'f(x)‖ / ‖f(x)‖")
    error_axis.set_title(f"{model}: equivariance error under circular shifts\n(● on-grid, "
                         "■ off-grid; ▲ layers without space: invariance, all shifts)",
                         fontsize=8)
    lie_axis.set_ylabel("‖L f_l‖ / ‖f_l‖ (per pixel)")
    lie_axis.set_title(f"{model}: per-layer Lie derivative, horizontal translation", fontsize=9)
  figure.suptitle("Per-layer translation equivariance of the trained models (mean ± sample std "
                  "over seeds; symmetric log scale, 0 = exact)", fontsize=10)
  figure.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (3.4 * len(models) + 0.3)))
  figure.savefig(path, dpi=100)


def cell_lengths(results: list[dict], config) -> dict[tuple[str, str, str], dict[float, list]]:
  """`{(dataset, model, augmentation): {epochs: results}}` of the runs on the datasets whose
  length is counted in epochs (the digits and the canvas)."""
  cells = {}
  for dataset in EPOCH_DATASETS:
    cells |= stopping_rule.by_length(
        [result for result in results if result_dataset(result) == dataset],
        lambda result: (result_dataset(result), result["run"]["options"]["model"],
                        result["run"]["options"]["augmentation"]),
        _num_epochs(config, dataset))
  return cells


def reported_runs(results: list[dict], config) -> list[dict]:
  """The runs the tables and contrasts use: each cell of the digits and the canvas at its
  reported length (`stopping_rule.reported_length`), CIFAR-10's runs as configured."""
  checked = [result for by_length in cell_lengths(results, config).values()
             for result in by_length[reported_length(by_length)]]
  others = [result for result in results if result_dataset(result) not in EPOCH_DATASETS]
  return checked + others


def doubling_gains(results: list[dict], config) -> dict[tuple[str, str, str],
                                                        tuple[float, Comparison]]:
  """`{(dataset, model, augmentation): (epochs, gain)}` on the digits and the canvas: the cell's
  reported length and the change of its final validation accuracy from half that length, seeds
  paired (`stopping_rule.doubling_gain`), for every cell with both lengths."""
  gains = {}
  for key, by_length in cell_lengths(results, config).items():
    epochs = reported_length(by_length)
    gain = doubling_gain(by_length, epochs)
    if gain is not None:
      gains[key] = (epochs, gain)
  return gains


def gain_cell(gains: dict, key: tuple[str, str, str]) -> str:
  """`stopping_rule.gain_cell` of a cell's doubling gain at its reported length."""
  return stopping_rule.gain_cell(gains[key][1] if key in gains else None)


def plateau_summary(gains: dict) -> str:
  """How many checked cells reached their plateau, naming those that did not."""
  if not gains:
    return ""
  rising = [f"{model} {augmentation} at {epochs:g} epochs ({gain.difference:+.4f} from "
            f"{epochs / 2:g}, p {format_p(gain.p_value)})"
            for (_, model, augmentation), (epochs, gain) in gains.items()
            if not reached_plateau(gain)]
  return (f"Stopping-rule check (`experiments.stopping_rule`; columns 'epochs' and 'gain from "
          f"E / 2'): a cell is at its plateau at E epochs when its final validation accuracy "
          f"rose by at most {PLATEAU_TOLERANCE:g} from E / 2 epochs, seeds paired; each cell "
          "is reported at the shortest such length trained, else at its longest. "
          + stopping_rule.checked_count(rising, len(gains)))


def report(results: list[dict], config, out_dir: str) -> str:
  """One subsection per dataset: its finished runs, or why it was not run (not prepared)."""
  gains = doubling_gains(results, config)
  results = reported_runs(results, config)
  by_dataset = {}
  for result in results:
    by_dataset.setdefault(result_dataset(result), []).append(result)
  sections = []
  for dataset in sorted(set(by_dataset) | set(absent_datasets(config)),
                        key=IN_MEMORY_DATASETS.index):
    body = (_dataset_report(by_dataset[dataset], config, out_dir, dataset, gains)
            if dataset in by_dataset else
            f"Not run: {not_prepared_message(dataset, config.data_dir)}.")
    note = [DATASET_NOTES[dataset], ""] if dataset in DATASET_NOTES else []
    sections += [f"### {DATASET_TITLES[dataset]}", "", *note, body, ""]
  if config.augmentation.dose_models and by_dataset.get(DATASET):
    sections += ["### Dose-response: invariance against the training range", "",
                 _dose_report(by_dataset[DATASET], config, out_dir, gains), ""]
  return "\n".join(sections).rstrip()


def _accuracy_at(metrics: dict, kind: str, magnitude: float) -> float:
  """Mean accuracy at test shifts (both axes) or test angles of absolute value `magnitude`."""
  if kind == "translate":
    values = [acc for axis in ("horizontal", "vertical")
              for shift, acc in zip(metrics["translations"],
                                    metrics["accuracy_vs_translation"][axis])
              if abs(shift) == magnitude]
  else:
    values = [acc for angle, acc in zip(metrics["angles"], metrics["accuracy_vs_rotation"])
              if abs(angle) == magnitude]
  return float(np.mean(values)) if values else math.nan


def _dose_report(results: list[dict], config, out_dir: str, gains: dict) -> str:
  """Per dose model: consistency, P(top-1 change) and accuracy at each test shift / angle
  against the training range (figure `dose_response.png`)."""
  groups = by_option(results, "model", "augmentation")
  ranges = dose_ranges(config)
  dose_cells = {(DATASET, model, dose_name(kind, value, config))
                for model in config.augmentation.dose_models
                for kind, values in ranges.items() for value in values}
  dose_gains = {key: gain for key, gain in gains.items() if key in dose_cells}
  test_levels = {"translate": sorted({abs(t) for t in config.augmentation.translations}),
                 "rotate": sorted({abs(a) for a in config.augmentation.angles})}
  models = config.augmentation.dose_models
  figure = Figure(figsize=(13, 3.4 * 2 * len(models)))
  axes = figure.subplots(len(models) * 2, 3, squeeze=False)
  rows = []
  for m, model in enumerate(models):
    for k, (kind, values) in enumerate(ranges.items()):
      row_axes = axes[2 * m + k]
      present = [v for v in values if groups.get((model, dose_name(kind, v, config)))]
      cells = [groups[(model, dose_name(kind, v, config))] for v in present]
      unit = "px" if kind == "translate" else "°"
      panels = ((row_axes[0], "consistency_crop", "shift consistency (crop, fraction)"),
                (row_axes[1], "p_top1_change" if kind == "translate"
                 else "lie_rotation_log_softmax",
                 "P(top-1 change), 1-px shifts" if kind == "translate"
                 else "‖L_rotation log p‖ (per radian)"))
      for axis, metric, label in panels:
        report_figures.errorbar_over_seeds(axis, present,
                                           [_metric(group, metric) for group in cells], fmt="-o")
        axis.set_ylabel(label)
        axis.set_title(f"{model}: {label.split(' (')[0]} vs {kind} training range", fontsize=9)
      drawn = []
      for index, level in enumerate(test_levels[kind]):
        drawn += report_figures.errorbar_over_seeds(
            row_axes[2], present,
            [[_accuracy_at(r["metrics"], kind, level) for r in group] for group in cells],
            fmt="-o", markersize=3, color=f"C{index}", label=f"test ±{level:g}{unit}")
      row_axes[2].set_ylabel("test accuracy (fraction)")
      test_kind = "shift" if kind == "translate" else "angle"
      row_axes[2].set_title(f"{model}: accuracy at each test {test_kind}\nvs {kind} training "
                            "range", fontsize=8)
      if drawn:
        row_axes[2].legend(fontsize=6, ncol=2, loc="best")
      for axis in row_axes:
        axis.set_xlabel(f"{kind} training range (± {unit})")
        if present:
          axis.set_xticks(present, [f"{v:g}" for v in present], fontsize=8)
        axis.grid(alpha=0.3)
      for value, group in zip(present, cells):
        rows.append([model, kind, f"±{value:g}{unit}", len(group),
                     f"{_epochs_of(group[0], config):g}", cell(_metric(group, "clean_accuracy")),
                     gain_cell(gains, (DATASET, model, dose_name(kind, value, config))),
                     cell(_metric(group, "consistency_crop")),
                     cell(_metric(group, "p_top1_change")),
                     cell(_metric(group, "lie_rotation_log_softmax"), 2)]
                    + [cell([_accuracy_at(r["metrics"], kind, level) for r in group])
                       for level in (max(test_levels[kind]),)])
  figure.suptitle("Dose-response: invariance against the augmentation's training range (mean ± "
                  "sample std over seeds)", fontsize=10)
  figure.tight_layout()
  figure.savefig(os.path.join(out_dir, "dose_response.png"), dpi=100)
  return "\n".join([
      "Each dose model trained with translation ranges "
      f"{', '.join(f'{v:g}' for v in ranges['translate'])} px and rotation ranges "
      f"{', '.join(f'{v:g}' for v in ranges['rotate'])}° (0 = no augmentation), measured as "
      "in the grid above; error bars: sample std over seeds.", "",
      markdown_table(["model", "augmentation", "training range", "seeds", "epochs", "clean acc",
                      "gain from E / 2 (p)",
                      "consistency (crop)", "P(top-1 change)", "‖L_rotation log p‖",
                      "acc at the largest test shift / angle"], rows), "",
      *([plateau_summary(dose_gains), ""] if dose_gains else []),
      "Figure `dose_response.png`: per dose model and kind (one row each), shift consistency, "
      "P(top-1 change) (translation) or the rotation Lie derivative (rotation), and the test "
      "accuracy at each test shift / angle, against the training range.", "",
      "![dose-response](dose_response.png)"])


def _dataset_report(results: list[dict], config, out_dir: str, dataset: str,
                    gains: dict) -> str:
  """The tables and figures (files `<name_prefix(dataset)>*.png`) of one dataset's runs."""
  prefix = name_prefix(dataset)
  all_groups = by_option(results, "model", "augmentation")
  models = dataset_models(config, dataset)
  # In the grid's order (runs at other lengths finish after the rest).
  groups = {key: all_groups[key] for key in sorted(
      (key for key in all_groups if key[1] in AUGMENTATIONS and key[0] in models),
      key=lambda key: (models.index(key[0]), AUGMENTATIONS.index(key[1])))}
  rows = []
  for (model, augmentation_name), group in groups.items():
    rotation_90 = [np.mean([acc for angle, acc in zip(r["metrics"]["angles"],
                                                      r["metrics"]["accuracy_vs_rotation"])
                            if abs(angle) == 90] or [math.nan]) for r in group]
    shift_6 = [np.mean([acc for axis in ("horizontal", "vertical")
                        for shift, acc in zip(r["metrics"]["translations"],
                                              r["metrics"]["accuracy_vs_translation"][axis])
                        if abs(shift) == max(map(abs, r["metrics"]["translations"]))])
               for r in group]
    rows.append([model, augmentation_name, len(group), f"{_epochs_of(group[0], config):g}",
                 cell(_metric(group, "clean_accuracy")),
                 cell(_metric(group, "final_train_loss")), cell(_metric(group, "plateau_gain")),
                 gain_cell(gains, (dataset, model, augmentation_name)),
                 cell(_metric(group, "consistency_crop")),
                 cell(_metric(group, "consistency_circular")),
                 cell(_metric(group, "p_top1_change")), cell(_metric(group, "mean_abs_change")),
                 cell(shift_6), cell(rotation_90),
                 cell(_metric(group, "lie_translation_log_softmax"), 2),
                 cell(_metric(group, "lie_rotation_log_softmax"), 2)])
  largest_shift = max(map(abs, config.augmentation.translations))
  table = markdown_table(
      ["model", "augmentation", "seeds", "epochs", "clean acc", "train loss", "plateau gain",
       "gain from E / 2 (p)", "consistency (crop)",
       "consistency (circular)", "P(top-1 change)", "MAC", f"acc at ±{largest_shift} px",
       "acc at ±90°", "‖L_translation log p‖", "‖L_rotation log p‖"], rows)

  settings = config.augmentation
  shift_trained = lambda name: settings.max_shift if name in ("translate", "both") else None
  angle_trained = lambda name: settings.max_degrees if name in ("rotate", "both") else None
  _curve_plot(groups, config, os.path.join(out_dir, f"{prefix}accuracy_vs_shift.png"),
              "Test accuracy vs translation of the test image (zeros enter)",
              "test shift (pixels)",
              [(f"{axis} shift", lambda group, axis=axis: (
                  group[0]["metrics"]["translations"],
                  [r["metrics"]["accuracy_vs_translation"][axis] for r in group]))
               for axis in ("horizontal", "vertical")], shift_trained)
  _curve_plot(groups, config, os.path.join(out_dir, f"{prefix}accuracy_vs_angle.png"),
              "Test accuracy vs rotation angle of the test image", "test angle (degrees)",
              [("rotation", lambda group: (group[0]["metrics"]["angles"],
                                           [r["metrics"]["accuracy_vs_rotation"]
                                            for r in group]))], angle_trained)
  _consistency_plot(groups, config, os.path.join(out_dir, f"{prefix}consistency.png"))
  _layer_plot(groups, config, os.path.join(out_dir, f"{prefix}layer_equivariance.png"))
  dataset_gains = {key: gain for key, gain in gains.items()
                   if key[0] == dataset and key[1:] in groups}
  equal_consistency = [r["metrics"]["consistency_crop"] == r["metrics"]["consistency_circular"]
                       for group in groups.values() for r in group]

  layer_rows = []
  for model in config.augmentation.models:
    group = groups.get((model, "none")) or groups.get((model, config.augmentation.augmentations[0]))
    if not group:
      continue
    for entry in group[0]["metrics"]["layers"]:
      same = [e for r in group for e in r["metrics"]["layers"] if e["name"] == entry["name"]]
      lie = [e["relative_norm"] for r in group for e in r["metrics"]["layer_lie_translation"]
             if e["name"] == entry["name"]]
      shares = {name: [e["share"] for r in group for e in r["metrics"]["lie_attribution"][name]
                       if e["name"] == entry["name"]]
                for name in ("translation_horizontal", "rotation")}
      layer_rows.append([model, group[0]["run"]["options"]["augmentation"], entry["name"],
                         entry["stride"] or "–", cell([e["on_grid"] for e in same], 3),
                         cell([e["off_grid"] for e in same], 3), cell(lie, 3),
                         cell(shares["translation_horizontal"], 2), cell(shares["rotation"], 2)])
  return "\n".join([
      f"{_training_length(config, dataset)} of batch {config.batch_size} per run on the "
      f"training split less a class-stratified {config.validation_fraction:.0%} validation "
      "split (never the test set); stopping rule: a fixed length, checked on the validation "
      "curve: 'plateau gain' = mean validation accuracy over the last quarter of the records "
      "minus the quarter before (under the cosine schedule it also counts what the annealing "
      "buys, so it can miss under-training)"
      + ("" if dataset not in EPOCH_DATASETS else
         "; also by training for half the length and, where that still gained, for longer "
         "(columns 'epochs' and 'gain from E / 2', below the table)") + ". "
      f"augmentation 'translate' = random crop of the {settings.max_shift}-pixel zero-padded "
      f"image, 'rotate' = uniform in ±{settings.max_degrees}°, 'both' = the two in turn. "
      f"Metrics on {config.eval_images} test images (clean accuracy on all "
      f"{get_dataset_info(dataset).num_test:,}); consistency: two shifts "
      f"uniform in ±{settings.consistency_shift} px per axis, {settings.consistency_passes} "
      "passes; P(top-1 change) and MAC (mean absolute change of the top-class probability) over "
      "8 consecutive 1-pixel diagonal shifts with zeros entering; Lie derivatives of the "
      "log-probabilities `‖L log softmax(f)‖` (per image, then averaged) on "
      f"{config.layer_images} images, per pixel (translation) and per radian (rotation).", "",
      table, "",
      *([plateau_summary(dataset_gains), ""] if dataset_gains else []),
      f"Figures `{prefix}accuracy_vs_shift.png` and `{prefix}accuracy_vs_angle.png`: test "
      "accuracy against the horizontal and vertical shift and against the rotation angle of "
      "the test images, one panel per training augmentation (its training range shaded).", "",
      f"![accuracy vs shift]({prefix}accuracy_vs_shift.png)", "",
      f"![accuracy vs angle]({prefix}accuracy_vs_angle.png)", "",
      f"Figure `{prefix}consistency.png`: shift consistency under crop and circular shifts per "
      "model and training augmentation; the two are equal in "
      f"{sum(equal_consistency)} of {len(equal_consistency)} runs.", "",
      f"![consistency]({prefix}consistency.png)", "",
      "Per-layer equivariance error (circular shifts "
      f"{[tuple(s) for s in settings.layer_shifts]}; on-grid: shifts that are multiples of the "
      "layer's cumulative stride; layers without spatial axes: invariance error), relative "
      "per-layer Lie derivative `‖L_l‖/‖f_l‖` (each layer in its own feature space), and each "
      "layer's share of the logits' Lie derivative in Gruver et al.'s split "
      "`L f = sum_l J_{>l} L(layer_l)` (`cnn_jax.analysis.lie_attribution`: the norm of layer l's "
      "term over the sum of the terms' norms; a ReLU's aliasing of the bilinear warp counts "
      "towards its layer), models trained without augmentation:", "",
      markdown_table(["model", "augmentation", "layer", "stride", "error on grid",
                      "error off grid", "‖L_l‖/‖f_l‖ (translation)", "share of L f (translation)",
                      "share of L f (rotation)"], layer_rows), "",
      f"Figure `{prefix}layer_equivariance.png`: per model (its own layers, by name) the "
      "equivariance error of each layer for each training augmentation, on-grid and off-grid "
      "shifts drawn separately and the layers without spatial axes as an invariance error over "
      "all shifts; beside it the relative per-layer Lie derivative.", "",
      f"![per-layer equivariance]({prefix}layer_equivariance.png)"])
