"""Experiment 4: the priors of the seed notes — locality, self-similarity — and data size.

* CNN vs MLP at matched parameter counts (the MLP's hidden width from
  `cnn_jax.models.mlp_width_for_params`), trained on class-balanced subsets of the digits of
  several sizes, on natural digits and on digits whose pixels go through one fixed random
  permutation (the same for every run and every image: locality destroyed, information kept).
  An MLP does not know which pixels are neighbours, so the permutation changes nothing for it
  (up to its random initialization); the CNN's advantage should vanish.
* Self-similarity (`cnn_jax.analysis.self_similarity_ratio`) of the scikit-image photos,
  grey and resized to 128x128, against two noise images per photo with the same pixel values:
  its pixels shuffled, and Gaussian noise of its mean and standard deviation.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from matplotlib.figure import Figure
import numpy as np

from cnn_jax import models
from cnn_jax.analysis.self_similarity import self_similarity_ratio
from cnn_jax.train.step import identity
from experiments.in_memory_training import (InMemoryDataset, train_classifier,
                                            training_config)
from experiments.model_zoo import SMALL_CNN, check_seeds
from experiments.report_tables import by_option, cell, markdown_table
from experiments.runs import Run

NAME = "priors"
ARCHITECTURES = ("cnn", "mlp")
PIXEL_ORDERS = ("natural", "permuted")
PHOTOS = ("camera", "astronaut", "coins", "moon", "text", "page", "brick", "grass", "gravel",
          "coffee", "chelsea", "clock")
PHOTO_SIZE = 128
# One permutation for all runs: a property of the dataset, not of the seed.
PERMUTATION_SEED = 1234


def validate(config) -> None:
  settings = config.priors
  check_seeds(f"config.{NAME}.seeds", settings.seeds)
  sizes = tuple(settings.train_sizes)
  if not sizes or not all(isinstance(s, int) and 10 <= s <= 4000 and s % 10 == 0 for s in sizes):
    raise ValueError(f"config.{NAME}.train_sizes must be a non-empty list of multiples of 10 in "
                     f"[10, 4000], got {settings.train_sizes!r}")


def plan(config) -> list[Run]:
  runs = [Run(NAME, f"{arch}_{order}_{size}_seed{seed}", seed,
              {"kind": "training", "architecture": arch, "pixels": order, "train_size": size})
          for seed in config.priors.seeds for size in config.priors.train_sizes
          for order in PIXEL_ORDERS for arch in ARCHITECTURES]
  return runs + [Run(NAME, "self_similarity", config.priors.seeds[0], {"kind": "self_similarity"})]


def parameter_count(model_name: str, overrides: dict) -> int:
  """The number of parameters of the model for 28x28 digits and 10 classes."""
  model = models.get_model(model_name, num_classes=10, **overrides)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)),
                                             train=False))
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes["params"]))


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


def _grey_photo(name: str) -> np.ndarray:
  import skimage.color
  import skimage.data
  import skimage.transform
  photo = getattr(skimage.data, name)()
  photo = skimage.color.rgb2gray(photo) if photo.ndim == 3 else photo / 255.0
  return skimage.transform.resize(photo, (PHOTO_SIZE, PHOTO_SIZE), anti_aliasing=True)


def _self_similarity(config) -> dict:
  rng = np.random.default_rng(0)
  rows = {}
  for name in PHOTOS:
    photo = _grey_photo(name)
    shuffled = rng.permutation(photo.ravel()).reshape(photo.shape)
    gaussian = rng.normal(photo.mean(), photo.std(), photo.shape)
    rows[name] = {kind: self_similarity_ratio(image, config.priors.patch_size,
                                              config.priors.patch_stride)
                  for kind, image in (("photo", photo), ("shuffled", shuffled),
                                      ("gaussian", gaussian))}
  return {"ratios": rows}


def execute(run: Run, config, digits: InMemoryDataset) -> dict:
  if run.options["kind"] == "self_similarity":
    return _self_similarity(config)
  overrides = (SMALL_CNN if run.options["architecture"] == "cnn"
               else {"widths": (matched_mlp_width(),)})
  model_name = run.options["architecture"]
  images, labels = balanced_subset(digits.train_images, digits.train_labels,
                                   run.options["train_size"], run.seed)
  transform = pixel_permutation if run.options["pixels"] == "permuted" else identity
  classifier, records = train_classifier(
      training_config(model_name, seed=run.seed, num_steps=config.priors.num_steps,
                      batch_size=config.batch_size, learning_rate=config.learning_rate,
                      **overrides),
      images, labels, input_transform=transform)
  return {"test_accuracy": classifier.accuracy(digits.test_images, digits.test_labels),
          "final_train_loss": records[-1].train_loss,
          "parameters": parameter_count(model_name, overrides)}


def report(results: list[dict], config, out_dir: str) -> str:
  training = [r for r in results if r["run"]["options"]["kind"] == "training"]
  sections = []
  if training:
    groups = by_option(training, "architecture", "pixels", "train_size")
    rows = [[arch, pixels, size, group[0]["metrics"]["parameters"], len(group),
             cell([r["metrics"]["test_accuracy"] for r in group])]
            for (arch, pixels, size), group in sorted(groups.items())]
    figure = Figure(figsize=(5.5, 3.8))
    axes = figure.subplots()
    for arch in ARCHITECTURES:
      for pixels, style in (("natural", "-o"), ("permuted", "--x")):
        points = sorted((size, np.mean([r["metrics"]["test_accuracy"] for r in group]))
                        for (a, p, size), group in groups.items() if a == arch and p == pixels)
        if points:
          axes.plot(*zip(*points), style, label=f"{arch}, {pixels} pixels")
    axes.set_xscale("log")
    axes.set_xlabel("training digits")
    axes.set_ylabel("test accuracy")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(os.path.join(out_dir, "priors_data_size.png"), dpi=100)
    sections += [
        f"Matched parameter counts, {config.priors.num_steps} steps of batch "
        f"{config.batch_size} for every training-set size (so small sets are seen for more "
        "epochs), no augmentation; 'permuted' = one fixed random permutation of the 784 pixel "
        "positions (train and test).", "",
        markdown_table(["model", "pixels", "train digits", "parameters", "seeds",
                        "test accuracy"], rows), "",
        "![accuracy vs training-set size](priors_data_size.png)", ""]
  similarity = [r for r in results if r["run"]["options"]["kind"] == "self_similarity"]
  if similarity:
    ratios = similarity[0]["metrics"]["ratios"]
    rows = [[name, f"{values['photo']:.3f}", f"{values['shuffled']:.3f}",
             f"{values['gaussian']:.3f}"] for name, values in ratios.items()]
    rows.append(["**mean**", *(f"**{np.mean([v[kind] for v in ratios.values()]):.3f}**"
                               for kind in ("photo", "shuffled", "gaussian"))])
    sections += [
        "Self-similarity ratio `mean_i min_j ||p_i - p_j|| / mean_ij ||p_i - p_j||` over "
        f"{config.priors.patch_size}x{config.priors.patch_size} patches (stride "
        f"{config.priors.patch_stride}, non-overlapping pairs only) of the scikit-image photos "
        f"at {PHOTO_SIZE}x{PHOTO_SIZE}: lower = a patch has a closer copy elsewhere in the "
        "image.", "",
        markdown_table(["image", "photo", "pixels shuffled", "Gaussian noise"], rows)]
  return "\n".join(sections)
