"""Experiment 4: the priors of the seed notes — locality, self-similarity — and data size.

* A data-size curve, CNN vs MLP at matched parameter counts (the MLP's hidden width from
  `cnn_jax.models.mlp_width_for_params` for the sweep's 'cnn', `model_zoo.SMALL_CNN`). A fixed
  class-stratified validation split (`config.validation_fraction` of the 4,000 training digits,
  `validation_split` with seed 0) is set aside once; each run trains on a class-balanced subset
  of `train_size` of the remaining digits, drawn with the run's seed. Pixels 'natural', or
  'permuted' by one fixed random permutation of the 784 positions (the same for every run and
  every image: locality destroyed, information kept). An MLP does not know which pixels are
  neighbours: with i.i.d. initial weights, permuting its input permutes the rows of its first
  weight matrix, so its accuracy has the same distribution on both; the CNN's advantage should
  vanish.
* Stopping rule: `max(min_steps, ceil(num_epochs[architecture] * train_size / batch_size))`
  steps (`training_steps`): a fixed number of epochs for large sets, a floor of steps for small
  ones (100 digits are 2 batches: 10 epochs would be 16 steps, far from the plateau). The
  validation curve (accuracy on the validation split, one record per epoch or at most
  `MAX_RECORDS` per run) and its `plateau_gain` are stored per run. Checked
  (`experiments.stopping_rule`): with `half_length_check` every training run also trains for
  half the rule's steps on its seed (option 'length' 0.5, name `cnn_natural_100_x0.5_seed3`),
  and the cells of `schedule_lengths` ('<architecture>_<pixels>_<size>') for these multiples of
  it. Each cell is reported at the shortest length at which its final validation accuracy rose
  by at most `stopping_rule.PLATEAU_TOLERANCE` from half that length, else at its longest
  (`reported_runs`).
* Self-similarity (`cnn_jax.analysis.self_similarity_ratio`) of the scikit-image photos, grey
  and resized to 128x128, against three controls per photo: its pixels shuffled, Gaussian noise
  of its mean and standard deviation (both destroy smoothness and self-similarity together),
  and the photo with its Fourier phases randomized (`phase_randomized`: the same power spectrum,
  so the same smoothness and second-order statistics, but no repeated structure). Photos more
  self-similar than their phase-randomized copies: self-similarity beyond smoothness.
"""

from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
from matplotlib.figure import Figure
import numpy as np

from cnn_jax import models
from cnn_jax.analysis.self_similarity import self_similarity_ratio
from cnn_jax.train.step import identity
from experiments import stopping_rule
from experiments.in_memory_training import (InMemoryDataset, plateau_gain, train_classifier,
                                            training_config, validation_split)
from experiments.model_zoo import SMALL_CNN, check_seeds
from experiments.report_tables import by_option, cell, markdown_table
from experiments.runs import Run
from experiments.seed_statistics import (format_p, format_summary, paired_test, summarize,
                                         verdict, welch_test)

NAME = "priors"
ARCHITECTURES = ("cnn", "mlp")
PIXEL_ORDERS = ("natural", "permuted")
PHOTOS = ("camera", "astronaut", "coins", "moon", "text", "page", "brick", "grass", "gravel",
          "coffee", "chelsea", "clock")
PHOTO_SIZE = 128
# The self-similarity images: the photo and its controls, in the report's order.
IMAGE_KINDS = ("photo", "phase_randomized", "shuffled", "gaussian")
IMAGE_TITLES = {"photo": "photo", "phase_randomized": "phases randomized",
                "shuffled": "pixels shuffled", "gaussian": "Gaussian noise"}
# One permutation for all runs: a property of the dataset, not of the seed.
PERMUTATION_SEED = 1234
# The 4,000 training digits of 'mnist_offline' hold 400 of each class.
TRAIN_DIGITS_PER_CLASS = 400
# Validation records per run at most (one per epoch when there are fewer epochs): each costs an
# evaluation of the validation split and a retrace of the model (~0.25 CPU-s, most of a small
# run's overhead); 8 give plateau_gain two records per quarter.
MAX_RECORDS = 8
ALPHA = 0.05  # the level of every test in the section


def available_per_class(config) -> int:
  """Training digits per class left after the validation split (as `validation_split` rounds)."""
  return TRAIN_DIGITS_PER_CLASS - max(round(config.validation_fraction * TRAIN_DIGITS_PER_CLASS),
                                      1)


def validate(config) -> None:
  settings = config.priors
  check_seeds(f"config.{NAME}.seeds", settings.seeds)
  if not 0.0 < config.validation_fraction < 1.0:
    raise ValueError(f"config.validation_fraction must be in (0, 1), got "
                     f"{config.validation_fraction!r}")
  largest = 10 * available_per_class(config)
  for field in ("train_sizes", "permuted_train_sizes"):
    sizes = tuple(settings[field])
    if not sizes or not all(isinstance(s, int) and 10 <= s <= largest and s % 10 == 0
                            for s in sizes):
      raise ValueError(f"config.{NAME}.{field} must be a non-empty list of multiples of 10 in "
                       f"[10, {largest}] (the training digits left after the validation split), "
                       f"got {settings[field]!r}")
  extra = sorted(set(settings.permuted_train_sizes) - set(settings.train_sizes))
  if extra:
    raise ValueError(f"config.{NAME}.permuted_train_sizes must be a subset of train_sizes "
                     f"{tuple(settings.train_sizes)!r}, got {settings.permuted_train_sizes!r} "
                     f"(not in train_sizes: {extra})")
  epochs = dict(settings.num_epochs)
  if set(epochs) != set(ARCHITECTURES) or not all(
      isinstance(e, (int, float)) and e > 0 for e in epochs.values()):
    raise ValueError(f"config.{NAME}.num_epochs must map each of {ARCHITECTURES} to a number "
                     f"> 0, got {epochs!r}")
  if not isinstance(settings.min_steps, int) or settings.min_steps < 1:
    raise ValueError(f"config.{NAME}.min_steps must be an int >= 1, got {settings.min_steps!r}")
  if not isinstance(settings.control_draws, int) or settings.control_draws < 1:
    raise ValueError(f"config.{NAME}.control_draws must be an int >= 1, got "
                     f"{settings.control_draws!r}")
  stopping_rule.check_schedule(
      f"config.{NAME}.schedule_lengths", settings.schedule_lengths,
      {cell_name(run) for run in _rule_runs(config)},
      "'<architecture>_<pixels>_<size>' cells of the data-size curve", 1.0)


def plan(config) -> list[Run]:
  """Both architectures with natural pixels at every training size, with permuted pixels at
  `permuted_train_sizes`, at every seed; then one self-similarity run; then the stopping rule's
  runs at other lengths (option 'length'): half of every training run with
  `half_length_check`, and each length of `schedule_lengths`."""
  settings = config.priors
  runs = _rule_runs(config)
  lengths = lambda run: (((0.5,) if settings.half_length_check else ())
                         + tuple(settings.schedule_lengths.get(cell_name(run), ())))
  return (runs + [Run(NAME, "self_similarity", settings.seeds[0], {"kind": "self_similarity"})]
          + stopping_rule.runs_at_lengths(runs, lengths, "length", "x"))


def _rule_runs(config) -> list[Run]:
  """The data-size curve's training runs at the stopping rule's length."""
  settings = config.priors
  return [Run(NAME, f"{arch}_{order}_{size}_seed{seed}", seed,
              {"kind": "training", "architecture": arch, "pixels": order, "train_size": size})
          for seed in settings.seeds for size in settings.train_sizes
          for order in PIXEL_ORDERS for arch in ARCHITECTURES
          if order == "natural" or size in settings.permuted_train_sizes]


def cell_name(run: Run) -> str:
  """'<architecture>_<pixels>_<size>', the key of `schedule_lengths`."""
  options = run.options
  return f"{options['architecture']}_{options['pixels']}_{options['train_size']}"


def training_steps(config, architecture: str, train_size: int, length: float = 1.0) -> int:
  """The stopping rule: `max(min_steps, ceil(num_epochs[architecture] * train_size /
  batch_size))` steps, times `length` (rounded up; the stopping-rule check's other lengths)."""
  settings = config.priors
  steps = max(settings.min_steps, math.ceil(settings.num_epochs[architecture] * train_size
                                            / config.batch_size))
  return steps if length == 1.0 else max(1, math.ceil(length * steps))


def parameter_count(model_name: str, overrides: dict) -> int:
  """The number of parameters of the model for 28x28 digits and 10 classes."""
  model = models.get_model(model_name, num_classes=10, **overrides)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)),
                                             train=False))
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes["params"]))


@functools.cache
def matched_mlp_width() -> int:
  """The one-hidden-layer MLP width with as many parameters as the small CNN."""
  return models.mlp_width_for_params(parameter_count("cnn", SMALL_CNN), 28 * 28, 10)


def pixel_permutation(images: jax.Array) -> jax.Array:
  """The fixed permutation of the 784 pixel positions, applied to `[N, 28, 28, 1]`."""
  order = np.random.default_rng(PERMUTATION_SEED).permutation(28 * 28)
  return images.reshape(images.shape[0], -1)[:, order].reshape(images.shape)


def balanced_subset(images, labels, size: int, seed: int):
  """`size / 10` digits of each class, drawn with `seed`."""
  rng = np.random.default_rng(seed)
  keep = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:size // 10]
                         for c in range(10)])
  return images[keep], labels[keep]


def training_and_validation(images: np.ndarray, labels: np.ndarray, size: int, seed: int,
                            validation_fraction: float):
  """A run's training digits and the validation split: `validation_split` of the whole training
  set (seed 0: the same for every run), then a class-balanced subset of `size` of the rest
  (`balanced_subset` with the run's `seed`).

  Returns:
    `(train_images, train_labels), (validation_images, validation_labels)`.
  """
  pool, validation = validation_split(images, labels, validation_fraction)
  return balanced_subset(*pool, size, seed), validation


def random_phases(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
  """The Fourier phases of white noise: `[H, W]` angles with `phase[-k] = -phase[k]` (mod 2 pi),
  the Hermitian symmetry of a real image's spectrum, otherwise uniform on the circle."""
  return np.angle(np.fft.fft2(rng.standard_normal(shape)))


def phase_randomized(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """The image with the same power spectrum and random phases: `[H, W]` -> `[H, W]`.

  `F = fft2(image)`; `out = ifft2(|F| exp(i phi))` with `phi = random_phases`, except the
  zero frequency, which keeps its value (the mean). `|F|` is symmetric and `phi` antisymmetric
  under `k -> -k`, so the spectrum is Hermitian and `out` is real up to rounding (its
  imaginary part, dropped, is ~1e-16 of it): `|fft2(out)| = |F|`.
  """
  spectrum = np.fft.fft2(image)
  randomized = np.abs(spectrum) * np.exp(1j * random_phases(image.shape, rng))
  randomized[0, 0] = spectrum[0, 0]
  return np.real(np.fft.ifft2(randomized))


def _grey_photo(name: str) -> np.ndarray:
  import skimage.color
  import skimage.data
  import skimage.transform
  photo = getattr(skimage.data, name)()
  photo = skimage.color.rgb2gray(photo) if photo.ndim == 3 else photo / 255.0
  return skimage.transform.resize(photo, (PHOTO_SIZE, PHOTO_SIZE), anti_aliasing=True)


def control_images(photo: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """The three controls of a grey photo `[H, W]`, by kind (IMAGE_KINDS but 'photo')."""
  return {"phase_randomized": phase_randomized(photo, rng),
          "shuffled": rng.permutation(photo.ravel()).reshape(photo.shape),
          "gaussian": rng.normal(photo.mean(), photo.std(), photo.shape)}


def _self_similarity(config, seed: int) -> dict:
  """Per photo, the ratio of the photo and the mean ratio of `control_draws` draws of each
  control."""
  settings = config.priors
  ratio = lambda image: self_similarity_ratio(image, settings.patch_size, settings.patch_stride)
  rng = np.random.default_rng(seed)
  rows = {}
  for name in PHOTOS:
    photo = _grey_photo(name)
    draws = [{kind: ratio(image) for kind, image in control_images(photo, rng).items()}
             for _ in range(settings.control_draws)]
    rows[name] = {"photo": ratio(photo),
                  **{kind: float(np.mean([draw[kind] for draw in draws])) for kind in draws[0]}}
  return {"ratios": rows, "control_draws": settings.control_draws}


def execute(run: Run, config, digits: InMemoryDataset) -> dict:
  if run.options["kind"] == "self_similarity":
    return _self_similarity(config, run.seed)
  architecture = run.options["architecture"]
  overrides = SMALL_CNN if architecture == "cnn" else {"widths": (matched_mlp_width(),)}
  size = run.options["train_size"]
  (images, labels), validation = training_and_validation(
      digits.train_images, digits.train_labels, size, run.seed, config.validation_fraction)
  steps = training_steps(config, architecture, size, run.options.get("length", 1.0))
  steps_per_epoch = math.ceil(size / config.batch_size)
  transform = pixel_permutation if run.options["pixels"] == "permuted" else identity
  classifier, records = train_classifier(
      training_config(architecture, seed=run.seed, num_steps=steps,
                      batch_size=config.batch_size, learning_rate=config.learning_rate,
                      record_every=max(steps_per_epoch, math.ceil(steps / MAX_RECORDS)),
                      **overrides),
      images, labels, input_transform=transform, validation=validation)
  return {"test_accuracy": classifier.accuracy(digits.test_images, digits.test_labels),
          "final_train_loss": records[-1].train_loss,
          "parameters": parameter_count(architecture, overrides),
          "train_steps": steps,
          "epochs": steps * config.batch_size / size,
          "record_steps": [r.step for r in records],
          "train_loss": [r.train_loss for r in records],
          "validation_accuracy": [r.validation_accuracy for r in records],
          "validation_loss": [r.validation_loss for r in records],
          "plateau_gain": plateau_gain(records)}


def _values(group: list[dict], name: str) -> list[float]:
  return [result["metrics"][name] for result in group]


def _accuracy_by_seed(group: list[dict]) -> list[float]:
  return [r["metrics"]["test_accuracy"] for r in sorted(group, key=lambda r: r["run"]["seed"])]


def training_contrasts(groups: dict[tuple, list[dict]]) -> list[dict]:
  """The data-size curve's contrasts, Welch t tests on test accuracy over seeds:

  - CNN vs MLP at each size, natural pixels (locality prior: CNN > MLP predicted);
  - CNN natural vs permuted at each size with both (its prior is spatial: permuted < natural);
  - MLP natural vs permuted (no difference predicted: it has no spatial prior).

  Each: `{'contrast', 'size', 'a', 'b', 'comparison', 'expected_sign' (0: no difference),
  'verdict'}`, for sizes whose cells have at least 2 seeds.
  """
  specs = [("CNN vs MLP, natural pixels", ("mlp", "natural"), ("cnn", "natural"), +1),
           ("CNN: permuted vs natural pixels", ("cnn", "natural"), ("cnn", "permuted"), -1),
           ("MLP: permuted vs natural pixels", ("mlp", "natural"), ("mlp", "permuted"), 0)]
  rows = []
  for label, a, b, sign in specs:
    sizes = sorted({size for (arch, pixels, size) in groups if (arch, pixels) == a}
                   & {size for (arch, pixels, size) in groups if (arch, pixels) == b})
    for size in sizes:
      a_values = _accuracy_by_seed(groups[(*a, size)])
      b_values = _accuracy_by_seed(groups[(*b, size)])
      if min(len(a_values), len(b_values)) < 2:
        continue
      comparison = welch_test(a_values, b_values)
      if sign:
        outcome = verdict(sign, comparison, ALPHA)
      else:
        outcome = ("no significant difference (as predicted)"
                   if math.isnan(comparison.p_value) or comparison.p_value >= ALPHA
                   else "differs (not predicted)")
      rows.append({"contrast": label, "size": size, "a": summarize(a_values),
                   "b": summarize(b_values), "comparison": comparison, "expected_sign": sign,
                   "verdict": outcome})
  return rows


def similarity_contrasts(ratios: dict[str, dict[str, float]]) -> list[dict]:
  """Photos vs each control, paired t tests over the photos (same photo, two images): lower
  ratio = more self-similar, so the photos' ratio is predicted below each control's."""
  names = sorted(ratios)
  photo = [ratios[name]["photo"] for name in names]
  rows = []
  for kind in IMAGE_KINDS[1:]:
    control = [ratios[name][kind] for name in names]
    comparison = paired_test(control, photo)
    rows.append({"control": kind, "a": summarize(control), "b": summarize(photo),
                 "comparison": comparison, "verdict": verdict(-1, comparison, ALPHA)})
  return rows


def _errorbar(axes, x, groups_values, **style) -> None:
  """Mean ± sample std (ddof=1; none for one seed) over seeds at each x."""
  summaries = [summarize(values) for values in groups_values]
  stds = [0.0 if math.isnan(s.std) else s.std for s in summaries]
  axes.errorbar(x, [s.mean for s in summaries], yerr=stds, capsize=3, **style)


def _data_size_figure(groups, path: str) -> None:
  figure = Figure(figsize=(6, 4))
  axes = figure.subplots()
  styles = {("cnn", "natural"): "-o", ("cnn", "permuted"): "--s", ("mlp", "natural"): "-^",
            ("mlp", "permuted"): "--v"}
  for (arch, pixels), style in styles.items():
    sizes = sorted(size for (a, p, size) in groups if (a, p) == (arch, pixels))
    if sizes:
      _errorbar(axes, sizes, [_values(groups[(arch, pixels, s)], "test_accuracy")
                              for s in sizes], fmt=style, label=f"{arch.upper()}, {pixels} pixels")
  axes.set_xscale("log")
  axes.set_xlabel("training digits (log scale)")
  axes.set_ylabel("test accuracy (1,000 digits)")
  axes.set_title("Test accuracy vs training-set size (mean ± std over seeds)", fontsize=9)
  axes.grid(alpha=0.3, which="both")
  axes.legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(path, dpi=100)


def _validation_figure(groups, path: str) -> None:
  """Per (architecture, pixels): the validation accuracy against the fraction of training, one
  line per size (mean ± std over seeds as a band)."""
  panels = [key for key in (("cnn", "natural"), ("mlp", "natural"), ("cnn", "permuted"),
                            ("mlp", "permuted")) if any(k[:2] == key for k in groups)]
  all_sizes = sorted({size for (_, _, size) in groups})  # one colour per size in every panel
  figure = Figure(figsize=(3.6 * len(panels), 3.4))
  axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
  for axis, (arch, pixels) in zip(axes, panels):
    for size in sorted(size for (a, p, size) in groups if (a, p) == (arch, pixels)):
      colour = f"C{all_sizes.index(size) % 10}"
      group = groups[(arch, pixels, size)]
      curves = np.asarray([r["metrics"]["validation_accuracy"] for r in group], np.float64)
      steps = np.asarray(group[0]["metrics"]["record_steps"], np.float64)
      progress = steps / group[0]["metrics"]["train_steps"]
      mean = np.mean(curves, 0)
      std = np.std(curves, 0, ddof=1) if len(curves) > 1 else np.zeros_like(mean)
      axis.plot(progress, mean, marker=".", color=colour, label=f"{size} digits")
      axis.fill_between(progress, mean - std, mean + std, color=colour, alpha=0.2)
    axis.set_title(f"{arch.upper()}, {pixels} pixels", fontsize=9)
    axis.set_xlabel("training progress (step / total steps)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=6)
  axes[0].set_ylabel("validation accuracy")
  figure.suptitle("Validation curves (mean ± std over seeds): the plateau of each run",
                  fontsize=10)
  figure.tight_layout()
  figure.savefig(path, dpi=100)


def _similarity_figure(ratios: dict, path: str) -> None:
  figure = Figure(figsize=(6, 3.6))
  axes = figure.subplots()
  positions = np.arange(len(IMAGE_KINDS))
  for position, kind in zip(positions, IMAGE_KINDS):
    values = [ratios[name][kind] for name in ratios]
    summary = summarize(values)
    axes.bar(position, summary.mean, yerr=0.0 if math.isnan(summary.std) else summary.std,
             capsize=4, color="C0" if kind == "photo" else "C7", alpha=0.6)
    axes.scatter(np.full(len(values), position), values, s=10, color="k", zorder=3)
  for name in ratios:  # each photo's line through its controls: the tests are paired
    axes.plot(positions, [ratios[name][kind] for kind in IMAGE_KINDS], color="k", alpha=0.15,
              linewidth=0.8)
  axes.set_xticks(positions, [IMAGE_TITLES[kind] for kind in IMAGE_KINDS], fontsize=8)
  axes.set_xlabel("image: the photo or one of its controls")
  axes.set_ylabel("self-similarity ratio (lower = more self-similar)")
  axes.set_title(f"Self-similarity of {len(ratios)} photos and their controls "
                 "(bars: mean ± std over photos; dots and lines: each photo)", fontsize=8)
  axes.grid(alpha=0.3, axis="y")
  figure.tight_layout()
  figure.savefig(path, dpi=100)


def cell_lengths(results: list[dict]) -> dict[tuple[str, str, int], dict[float, list[dict]]]:
  """`{(architecture, pixels, size): {length: results}}` of the training runs (length relative
  to the stopping rule, 1 = the rule)."""
  options = lambda result: result["run"]["options"]
  return stopping_rule.by_length(
      [result for result in results if options(result)["kind"] == "training"],
      lambda result: (options(result)["architecture"], options(result)["pixels"],
                      options(result)["train_size"]), 1.0, option="length")


def reported_runs(results: list[dict], config) -> list[dict]:
  """The runs the tables and contrasts use: each training cell at its reported length
  (`stopping_rule.reported_length`), and the self-similarity run."""
  del config  # the lengths are in the runs' options
  training = [result for lengths in cell_lengths(results).values()
              for result in lengths[stopping_rule.reported_length(lengths)]]
  return training + [result for result in results
                     if result["run"]["options"]["kind"] != "training"]


def _training_report(results: list[dict], config, out_dir: str) -> list[str]:
  settings = config.priors
  lengths = cell_lengths(results)
  gains = {key: stopping_rule.doubling_gain(by_length, stopping_rule.reported_length(by_length))
           for key, by_length in lengths.items()}
  training = [r for r in reported_runs(results, config) if r["run"]["options"]["kind"]
              == "training"]
  groups = by_option(training, "architecture", "pixels", "train_size")
  rows = []
  for (arch, pixels, size), group in sorted(groups.items()):
    first = group[0]["metrics"]
    rows.append([arch, pixels, size, first["parameters"], f"{first['train_steps']}",
                 f"{first['epochs']:.3g}",
                 f"{group[0]['run']['options'].get('length', 1.0):g}", len(group),
                 cell(_values(group, "test_accuracy")),
                 cell(_values(group, "final_train_loss")),
                 cell(_values(group, "plateau_gain")),
                 stopping_rule.gain_cell(gains[(arch, pixels, size)])])
  checked = {key: gain for key, gain in gains.items() if gain is not None}
  rising = [f"{' '.join(map(str, key))} at {stopping_rule.reported_length(lengths[key]):g}x "
            f"the rule ({gain.difference:+.4f} from half, p {format_p(gain.p_value)})"
            for key, gain in checked.items() if not stopping_rule.reached_plateau(gain)]
  _data_size_figure(groups, os.path.join(out_dir, "priors_data_size.png"))
  _validation_figure(groups, os.path.join(out_dir, "priors_validation_curves.png"))
  contrast_rows = [
      [row["contrast"], row["size"], format_summary(row["a"]), format_summary(row["b"]),
       "b > a" if row["expected_sign"] > 0 else "b < a" if row["expected_sign"] < 0 else "b = a",
       f"{row['comparison'].difference:+.4f}", format_p(row["comparison"].p_value),
       row["verdict"]]
      for row in training_contrasts(groups)]
  permuted_sizes = tuple(settings.permuted_train_sizes)
  cut = ("" if set(permuted_sizes) >= set(settings.train_sizes) else
         f" Budget cut: permuted pixels only at {', '.join(map(str, permuted_sizes))} digits "
         "(the 'gpu' config runs them at every size).")
  return [
      f"CNN (`model_zoo.SMALL_CNN`) vs a one-hidden-layer MLP of matched parameter count (width "
      f"{matched_mlp_width()}), no augmentation. A class-stratified "
      f"{config.validation_fraction:.0%} validation split of the 4,000 training digits is held "
      "out once (never the test set); each run trains on a class-balanced subset of the rest "
      "drawn with its seed. 'permuted' = one fixed random permutation of the 784 pixel "
      "positions (train, validation and test)." + cut + " Stopping rule: "
      f"max({settings.min_steps}, ceil(epochs x digits / {config.batch_size})) steps of batch "
      f"{config.batch_size} (cosine schedule to zero), with "
      + " and ".join(f"{settings.num_epochs[arch]:g} epochs for the {arch.upper()}"
                     for arch in ARCHITECTURES) + ", "
      "checked on the validation curve: 'plateau gain' = mean validation accuracy over the "
      "last quarter of the records minus the quarter before (under the cosine schedule it also "
      "counts what the annealing buys), and by training for half the steps: a cell is at its "
      "plateau at a length (column 'length', 1 = the rule) when its final validation accuracy "
      f"rose by at most {stopping_rule.PLATEAU_TOLERANCE:g} from half that length (column 'gain "
      "from half', seeds paired); each cell is reported at the shortest such length trained, "
      "else at its longest.", "",
      markdown_table(["model", "pixels", "train digits", "parameters", "steps", "epochs",
                      "length", "seeds", "test accuracy", "final train loss", "plateau gain",
                      "gain from half (p)"], rows), "",
      *([f"Stopping-rule check: {stopping_rule.checked_count(rising, len(checked))}", ""]
        if checked else []),
      "![accuracy vs training-set size](priors_data_size.png)", "",
      "![validation curves](priors_validation_curves.png)", "",
      f"Contrasts (Welch t test on test accuracy over seeds, alpha = {ALPHA:g}; a and b as "
      "mean ± std [95% interval]; 'supported' = significant in the predicted direction, "
      "'opposite' = significant the other way, 'not supported' = not significant):", "",
      markdown_table(["contrast", "train digits", "a", "b", "predicted", "b - a", "p",
                      "verdict"], contrast_rows) if contrast_rows else
      "None tested: no contrast has 2 or more seeds in both cells.", ""]


def _similarity_report(metrics: dict, config) -> list[str]:
  ratios = metrics["ratios"]
  rows = [[name, *(f"{values[kind]:.3f}" for kind in IMAGE_KINDS)]
          for name, values in ratios.items()]
  over_photos = {kind: summarize([values[kind] for values in ratios.values()])
                 for kind in IMAGE_KINDS}
  rows.append(["**mean ± std**", *(f"**{format_summary(over_photos[kind])}**"
                                   for kind in IMAGE_KINDS)])
  contrast_rows = [[IMAGE_TITLES[row["control"]], format_summary(row["a"]),
                    format_summary(row["b"]), f"{row['comparison'].difference:+.3f}",
                    format_p(row["comparison"].p_value), row["verdict"]]
                   for row in similarity_contrasts(ratios)]
  settings = config.priors
  return [
      "Self-similarity ratio `mean_i min_j ||p_i - p_j|| / mean_ij ||p_i - p_j||` over "
      f"{settings.patch_size}x{settings.patch_size} patches (stride {settings.patch_stride}, "
      f"non-overlapping pairs only) of the scikit-image photos at {PHOTO_SIZE}x{PHOTO_SIZE}: "
      "lower = a patch has a closer copy elsewhere in the image. Controls (each the mean over "
      f"random draws, {metrics['control_draws']} per photo): the photo with its Fourier phases "
      "replaced by those of white noise (same power spectrum, so the same smoothness), its "
      "pixels shuffled, Gaussian noise of its mean and std (the last two also destroy "
      "smoothness).", "",
      markdown_table(["image", *(IMAGE_TITLES[kind] for kind in IMAGE_KINDS)], rows), "",
      "![self-similarity](priors_self_similarity.png)", "",
      f"Photos vs each control (paired t test over the {len(ratios)} photos, alpha = "
      f"{ALPHA:g}; predicted: photo < control):", "",
      markdown_table(["control (a)", "control ratio", "photo ratio (b)", "b - a", "p",
                      "verdict"], contrast_rows)]


def report(results: list[dict], config, out_dir: str) -> str:
  training = [r for r in results if r["run"]["options"]["kind"] == "training"]
  similarity = [r for r in results if r["run"]["options"]["kind"] == "self_similarity"]
  sections = []
  if training:
    sections += _training_report(training, config, out_dir)
  if similarity:
    _similarity_figure(similarity[0]["metrics"]["ratios"],
                       os.path.join(out_dir, "priors_self_similarity.png"))
    sections += _similarity_report(similarity[0]["metrics"], config)
  return "\n".join(sections)
