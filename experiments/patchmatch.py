"""PatchMatch on the scikit-image photos: the field's accuracy and speed, and hole filling.

    python -m experiments.patchmatch --out=experiments/results/patchmatch

Writes `<out>/README.md` (generated), `<out>/results.json` and the PNG figures:

* Nearest-neighbour field: each photo, grey at 96x96, split into its top half (source A) and
  bottom half (target B); 7x7 patches. PatchMatch's field after each iteration against the
  exact field of the brute-force search (`exact_nearest_neighbours`): the ratio of mean patch
  distances and the fraction of patches whose match is as close as the exact one. Speed: both
  timed on halves of the camera photo at 96, 128 and 192 pixels, after a warm-up call (no
  compilation inside).
* Hole filling: every photo at 128x128 (grey ones as 3 equal channels), square 24x24 holes at
  `HOLES_PER_IMAGE` positions drawn with a fixed seed, filled by `complete_hole` (PatchMatch +
  patch voting, coarse to fine) and by the two baselines (border mean, harmonic). Error inside
  the hole against the true pixels: RMSE, RMSE of the image gradients (forward differences with
  at least one end in the hole) and the texture ratio, the mean gradient magnitude of the fill
  over that of the truth (1: as much texture as the photo; 0: flat). The same on white noise: each
  photo's pixels shuffled (its colours kept, its structure gone). Per image the mean over its
  holes; differences between methods are paired over images, with the Wilcoxon signed-rank test
  and the paired t test.
"""

from __future__ import annotations

import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from matplotlib.figure import Figure

from cnn_jax import runtime
from cnn_jax.priors import (border_mean_fill, complete_hole, exact_nearest_neighbours,
                            harmonic_fill, nearest_neighbour_field)
from cnn_jax.priors.inpaint import default_levels

from experiments.report_tables import markdown_table

PHOTOS = ("brick", "grass", "gravel", "camera", "coins", "moon", "page", "text", "clock",
          "coffee", "chelsea", "astronaut", "rocket", "immunohistochemistry")
FILL_SIZE = 128
HOLE_SIDE = 24
HOLES_PER_IMAGE = 3
# Hole corners on a grid of 4 pixels and 24 away from the edges: the hole's window then has the
# same shape at every pyramid level for every position, so the fill compiles once.
HOLE_GRID, HOLE_MARGIN = 4, 24
PATCH_SIZE = 7
EM_ITERATIONS, SEARCH_ITERATIONS = 5, 3
NNF_SIZE = 96
NNF_PHOTOS = PHOTOS[:10]
NNF_ITERATIONS = 8
SPEED_SIZES = (96, 128, 192)
SPEED_REPEATS = 5
PATCHMATCH_SPEED_ITERATIONS = 5
SEED = 0
METHODS = ("patchmatch", "harmonic", "border_mean")

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags, defined when run, not on import."""
  flags.DEFINE_string("out", "experiments/results/patchmatch", "Directory for the report.")


def load_photo(name: str, size: int) -> np.ndarray:
  """A scikit-image photo, centre-cropped to a square and resized: `[size, size, 3]` in [0, 1]."""
  import skimage.data
  import skimage.transform
  photo = getattr(skimage.data, name)().astype(np.float64) / 255.0
  if photo.ndim == 2:
    photo = np.repeat(photo[..., None], 3, axis=-1)
  photo = photo[..., :3]
  side = min(photo.shape[:2])
  top, left = (photo.shape[0] - side) // 2, (photo.shape[1] - side) // 2
  photo = photo[top:top + side, left:left + side]
  return skimage.transform.resize(photo, (size, size), anti_aliasing=True).astype(np.float32)


def grey(image: np.ndarray) -> np.ndarray:
  return image.mean(-1, keepdims=True)


def shuffled_pixels(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """The image's pixels (colour vectors) in a random order: same colours, no structure."""
  flat = image.reshape(-1, image.shape[-1])
  return flat[rng.permutation(len(flat))].reshape(image.shape)


def hole_masks(rng: np.random.Generator) -> list[np.ndarray]:
  corners = np.arange(HOLE_MARGIN, FILL_SIZE - HOLE_MARGIN - HOLE_SIDE + 1, HOLE_GRID)
  masks = []
  for _ in range(HOLES_PER_IMAGE):
    top, left = rng.choice(corners, 2)
    mask = np.zeros((FILL_SIZE, FILL_SIZE), bool)
    mask[top:top + HOLE_SIDE, left:left + HOLE_SIDE] = True
    masks.append(mask)
  return masks


def hole_errors(fill: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
  """RMSE, gradient RMSE and texture ratio inside the hole (see the module docstring)."""
  rmse = float(np.sqrt(np.mean((fill - truth)[mask] ** 2)))
  gradient_errors, fill_magnitudes, truth_magnitudes = [], [], []
  for axis in (0, 1):
    touches = np.logical_or(np.take(mask, range(1, mask.shape[axis]), axis),
                            np.take(mask, range(mask.shape[axis] - 1), axis))
    fill_gradient, truth_gradient = np.diff(fill, axis=axis), np.diff(truth, axis=axis)
    gradient_errors.append((fill_gradient - truth_gradient)[touches])
    fill_magnitudes.append(np.abs(fill_gradient[touches]))
    truth_magnitudes.append(np.abs(truth_gradient[touches]))
  gradient_rmse = float(np.sqrt(np.mean(np.concatenate(gradient_errors) ** 2)))
  texture = float(np.mean(np.concatenate(fill_magnitudes))
                  / np.mean(np.concatenate(truth_magnitudes)))
  return {"rmse": rmse, "gradient_rmse": gradient_rmse, "texture_ratio": texture}


def fill_all(image: np.ndarray, masks: list[np.ndarray], key) -> dict[str, list]:
  """Per method, the filled images and their errors for each mask."""
  fills = {method: [] for method in METHODS}
  for mask, mask_key in zip(masks, jax.random.split(key, len(masks))):
    fills["patchmatch"].append(np.asarray(complete_hole(
        image, mask, mask_key, patch_size=PATCH_SIZE, em_iterations=EM_ITERATIONS,
        nnf_iterations=SEARCH_ITERATIONS)))
    fills["harmonic"].append(np.asarray(harmonic_fill(image, mask)))
    fills["border_mean"].append(np.asarray(border_mean_fill(image, mask)))
  errors = {method: [hole_errors(fill, image, mask) for fill, mask in zip(fills[method], masks)]
            for method in METHODS}
  return {"fills": fills, "errors": errors}


def mean_interval(values) -> dict[str, float]:
  """Mean, sample std (ddof=1) and the 95% t interval of the mean."""
  from scipy import stats
  values = np.asarray(values, np.float64)
  mean, std = float(values.mean()), float(values.std(ddof=1))
  half = float(stats.t.ppf(0.975, len(values) - 1) * std / np.sqrt(len(values)))
  return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": len(values)}


def paired_tests(first, second) -> dict:
  """`first - second` over images: its mean and interval, Wilcoxon and paired-t p values."""
  from scipy import stats
  first, second = np.asarray(first), np.asarray(second)
  return {"difference": mean_interval(first - second),
          "wilcoxon_p": float(stats.wilcoxon(first, second).pvalue),
          "paired_t_p": float(stats.ttest_rel(first, second).pvalue)}


def nnf_accuracy(photos: dict[str, np.ndarray]) -> dict:
  """Per photo and iteration: mean distance / exact mean distance, and the fraction exact."""
  ratios, exact_fractions = [], []
  for index, name in enumerate(NNF_PHOTOS):
    image = grey(photos[name])
    half = NNF_SIZE // 2
    source, target = image[:half], image[half:]
    exact = exact_nearest_neighbours(source, target, patch_size=PATCH_SIZE)
    _, history = nearest_neighbour_field(source, target, jax.random.key(SEED + index),
                                         patch_size=PATCH_SIZE, iterations=NNF_ITERATIONS,
                                         every_iteration=True)
    exact_mean = float(jnp.mean(exact.distances))
    ratios.append([float(m) / exact_mean for m in jnp.mean(history.distances, axis=(1, 2))])
    # "As close as the exact match", up to float32 rounding of the same sums.
    tolerance = 1e-5 * exact.distances + 1e-6
    exact_fractions.append([float(f) for f in jnp.mean(
        history.distances <= exact.distances + tolerance, axis=(1, 2))])
  return {"photos": list(NNF_PHOTOS), "distance_ratio": ratios, "fraction_exact": exact_fractions}


def paired_seconds(first, second) -> tuple[float, float]:
  """The fastest of SPEED_REPEATS timed calls of each function, alternating the two so that
  both see the same machine load, after one untimed call each (compilation)."""
  jax.block_until_ready(first())
  jax.block_until_ready(second())
  times = {0: [], 1: []}
  for _ in range(SPEED_REPEATS):
    for index, function in enumerate((first, second)):
      start = time.perf_counter()
      jax.block_until_ready(function())
      times[index].append(time.perf_counter() - start)
  return min(times[0]), min(times[1])


def speed() -> list[dict]:
  import skimage.data
  import skimage.transform
  rows = []
  for size in SPEED_SIZES:
    photo = skimage.data.camera() / 255.0  # 512x512: every size is a downsampling
    image = skimage.transform.resize(photo, (size, size), anti_aliasing=True).astype(np.float32)
    source, target = image[:size // 2], image[size // 2:]
    patchmatch_seconds, exact_seconds = paired_seconds(
        lambda: nearest_neighbour_field(source, target, jax.random.key(SEED),
                                        patch_size=PATCH_SIZE,
                                        iterations=PATCHMATCH_SPEED_ITERATIONS)[0].distances,
        lambda: exact_nearest_neighbours(source, target, patch_size=PATCH_SIZE).distances)
    patches = (size // 2 - PATCH_SIZE + 1) * (size - PATCH_SIZE + 1)
    rows.append({"image": f"{size // 2}x{size}", "patches_per_image": patches,
                 "patchmatch_seconds": patchmatch_seconds, "exact_seconds": exact_seconds,
                 "speedup": exact_seconds / patchmatch_seconds})
  return rows


def hole_filling(photos: dict[str, np.ndarray]) -> tuple[dict, dict]:
  rng = np.random.default_rng(SEED)
  per_image, examples = {"photo": {}, "noise": {}}, {}
  for index, name in enumerate(PHOTOS):
    masks = hole_masks(rng)
    noise = shuffled_pixels(photos[name], rng)
    for kind, image in (("photo", photos[name]), ("noise", noise)):
      result = fill_all(image, masks, jax.random.key(1000 * index + (kind == "noise")))
      per_image[kind][name] = {method: {metric: float(np.mean([e[metric] for e in errors]))
                                        for metric in errors[0]}
                               for method, errors in result["errors"].items()}
      examples[(kind, name)] = (image, masks[0], {m: f[0] for m, f in result["fills"].items()})
    logging.info("filled %s", name)
  return per_image, examples


def fill_statistics(per_image: dict) -> dict:
  statistics = {}
  for kind, images in per_image.items():
    names = list(images)
    statistics[kind] = {}
    for metric in ("rmse", "gradient_rmse", "texture_ratio"):
      values = {method: [images[name][method][metric] for name in names] for method in METHODS}
      statistics[kind][metric] = {
          "summary": {method: mean_interval(values[method]) for method in METHODS},
          "patchmatch_minus_harmonic": paired_tests(values["patchmatch"], values["harmonic"]),
          "patchmatch_minus_border_mean": paired_tests(values["patchmatch"],
                                                       values["border_mean"]),
          "patchmatch_wins_over_harmonic": int(np.sum(np.asarray(values["patchmatch"])
                                                      < np.asarray(values["harmonic"]))),
      }
  return statistics


def show(axes, image):
  axes.imshow(np.clip(image, 0, 1), interpolation="nearest")
  axes.set_xticks([])
  axes.set_yticks([])


def fill_figure(examples: dict, names, path: str) -> None:
  columns = ("image", "hole", "PatchMatch", "harmonic", "border mean")
  figure = Figure(figsize=(2.0 * len(columns), 2.0 * len(names)))
  axes = figure.subplots(len(names), len(columns), squeeze=False)
  for row, key in enumerate(names):
    image, mask, fills = examples[key]
    masked = np.where(mask[..., None], 0.0, image)
    for column, panel in enumerate((image, masked, fills["patchmatch"], fills["harmonic"],
                                    fills["border_mean"])):
      show(axes[row, column], panel)
    axes[row, 0].set_ylabel(f"{key[1]} ({key[0]})", fontsize=8)
  for column, title in enumerate(columns):
    axes[0, column].set_title(title, fontsize=9)
  figure.tight_layout()
  figure.savefig(path, dpi=80)


def convergence_figure(accuracy: dict, path: str) -> None:
  figure = Figure(figsize=(9, 3.6))
  ratio_axes, fraction_axes = figure.subplots(1, 2)
  iterations = np.arange(NNF_ITERATIONS + 1)
  for axes, key, label in ((ratio_axes, "distance_ratio", "mean distance / exact mean distance"),
                           (fraction_axes, "fraction_exact", "fraction of exact matches")):
    values = np.asarray(accuracy[key])
    axes.errorbar(iterations, values.mean(0), yerr=values.std(0, ddof=1), marker="o", capsize=3,
                  label=f"PatchMatch, mean ± std over {len(values)} photos")
    axes.set_xlabel("iteration (0 = random start)")
    axes.set_ylabel(label)
    axes.grid(alpha=0.3)
  ratio_axes.set_yscale("log")
  ratio_axes.axhline(1.0, color="black", linewidth=0.8, label="exact search")
  ratio_axes.legend(fontsize=8)
  fraction_axes.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=100)


def error_figure(per_image: dict, path: str) -> None:
  figure = Figure(figsize=(9, 4))
  axes_list = figure.subplots(1, 2)
  for axes, baseline in zip(axes_list, ("harmonic", "border_mean")):
    for kind, marker in (("photo", "o"), ("noise", "x")):
      images = per_image[kind]
      x = [images[name][baseline]["rmse"] for name in images]
      y = [images[name]["patchmatch"]["rmse"] for name in images]
      name = "photos" if kind == "photo" else "shuffled-pixel noise"
      axes.scatter(x, y, marker=marker, label=f"{name} ({len(x)} images)")
    limits = [0, max(axes.get_xlim()[1], axes.get_ylim()[1])]
    axes.plot(limits, limits, color="black", linewidth=0.8, label="equal error")
    axes.set_xlabel(f"{baseline.replace('_', ' ')} fill: RMSE in the hole (intensity, 0-1)")
    axes.set_ylabel("PatchMatch fill: RMSE in the hole (intensity, 0-1)")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
  figure.tight_layout()
  figure.savefig(path, dpi=100)


def interval_cell(summary: dict, digits: int = 3) -> str:
  low, high = summary["ci95"]
  return (f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f} "
          f"[{low:.{digits}f}, {high:.{digits}f}]")


def report(results: dict) -> str:
  accuracy, statistics = results["nnf_accuracy"], results["fill_statistics"]
  ratios, fractions = np.asarray(accuracy["distance_ratio"]), np.asarray(accuracy["fraction_exact"])
  nnf_rows = [[k, interval_cell(mean_interval(ratios[:, k])),
               interval_cell(mean_interval(fractions[:, k]))]
              for k in range(NNF_ITERATIONS + 1)]
  speed_rows = [[row["image"], row["patches_per_image"], f"{row['patchmatch_seconds']:.3f}",
                 f"{row['exact_seconds']:.3f}", f"{row['speedup']:.1f}"]
                for row in results["speed"]]
  lines = [
      "# PatchMatch: nearest-neighbour fields and hole filling",
      "",
      "Generated by `python -m experiments.patchmatch --out=experiments/results/patchmatch`; "
      "every number below comes from `results.json` of that run (definitions in the module "
      "docstring of `experiments/patchmatch.py` and in `docs/priors_patchmatch.md`).",
      "",
      f"Machine: {results['machine']['cpu_count']} CPU threads, load average "
      f"{results['machine']['load_average_at_start']} at the start (a shared machine: times are "
      f"noisy); jax {results['machine']['jax']}. Whole run: {results['wall_seconds']:.0f} s.",
      "",
      "## The field against exact search",
      "",
      f"{len(accuracy['photos'])} photos, grey {NNF_SIZE}x{NNF_SIZE}: source = top half, "
      f"target = bottom half, {PATCH_SIZE}x{PATCH_SIZE} patches. Mean ± std over photos "
      "[95% interval of the mean]. 'Exact' = as close as the brute-force nearest neighbour "
      "(up to float32 rounding). Propagation is jump flooding (8 neighbours at distances "
      "2^m, ..., 1), not Barnes et al.'s sequential scan.",
      "",
      markdown_table(["iteration", "mean distance / exact", "fraction exact"], nnf_rows),
      "",
      "![convergence](nnf_convergence.png)",
      "",
      f"Speed ({PATCHMATCH_SPEED_ITERATIONS} PatchMatch iterations against the brute-force "
      f"search on the camera photo, grey: the fastest of {SPEED_REPEATS} calls of each, "
      f"alternated, after a compiling one; {PATCH_SIZE}x{PATCH_SIZE} patches; on this loaded "
      "machine, so ratios are more reliable than times):",
      "",
      markdown_table(["source and target", "patches each", "PatchMatch (s)", "exact (s)",
                      "exact / PatchMatch"], speed_rows),
      "",
      "## Hole filling",
      "",
      f"{len(PHOTOS)} scikit-image photos at {FILL_SIZE}x{FILL_SIZE} ({', '.join(PHOTOS)}), "
      f"{HOLES_PER_IMAGE} square {HOLE_SIDE}x{HOLE_SIDE} holes each (seed {SEED}); 'noise' = the "
      f"same photo with its pixels shuffled. PatchMatch completion: {PATCH_SIZE}x{PATCH_SIZE} "
      f"patches, {default_levels((FILL_SIZE, FILL_SIZE), PATCH_SIZE)} pyramid levels, "
      f"{EM_ITERATIONS} search/vote rounds per level, {SEARCH_ITERATIONS} PatchMatch iterations "
      "per search. Per image the mean over its holes; mean ± std over images [95% interval]; "
      "the paired differences PatchMatch - baseline over images with their p values.",
      "",
  ]
  metric_names = {"rmse": "RMSE in the hole (lower is better)",
                  "gradient_rmse": "gradient RMSE in the hole (lower is better)",
                  "texture_ratio": "texture ratio, fill / truth mean gradient magnitude (1 = "
                                   "as textured as the truth)"}
  for kind in ("photo", "noise"):
    lines += [f"### {'Photos' if kind == 'photo' else 'White noise (pixels shuffled)'}", ""]
    rows = []
    for metric, title in metric_names.items():
      entry = statistics[kind][metric]
      cells = [interval_cell(entry["summary"][method]) for method in METHODS]
      harmonic, border = entry["patchmatch_minus_harmonic"], entry["patchmatch_minus_border_mean"]
      rows.append([title, *cells,
                   f"{harmonic['difference']['mean']:+.3f} "
                   f"[{harmonic['difference']['ci95'][0]:+.3f}, "
                   f"{harmonic['difference']['ci95'][1]:+.3f}], Wilcoxon p = "
                   f"{harmonic['wilcoxon_p']:.2g}, t p = {harmonic['paired_t_p']:.2g}",
                   f"{border['difference']['mean']:+.3f}, Wilcoxon p = {border['wilcoxon_p']:.2g}"
                   f", t p = {border['paired_t_p']:.2g}"])
    lines += [markdown_table(["metric", "PatchMatch", "harmonic", "border mean",
                              "PatchMatch - harmonic", "PatchMatch - border mean"], rows), ""]
    rmse = statistics[kind]["rmse"]
    lines += [f"PatchMatch has the lower RMSE than the harmonic fill on "
              f"{rmse['patchmatch_wins_over_harmonic']} of {rmse['summary']['patchmatch']['n']} "
              "images.", ""]
  per_photo = results["per_image"]["photo"]
  rows = [[name, *(f"{per_photo[name][method]['rmse']:.3f}" for method in METHODS),
           f"{per_photo[name]['patchmatch']['texture_ratio']:.2f}",
           f"{per_photo[name]['harmonic']['texture_ratio']:.2f}"] for name in per_photo]
  lines += ["Per photo (mean over its holes):", "",
            markdown_table(["photo", "RMSE PatchMatch", "RMSE harmonic", "RMSE border mean",
                            "texture PatchMatch", "texture harmonic"], rows), "",
            "![fills](fills.png)", "", "![errors](fill_errors.png)", ""]
  return "\n".join(lines)


def main(argv):
  runtime.setup()
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  start = time.time()
  os.makedirs(FLAGS.out, exist_ok=True)
  machine = {"cpu_count": os.cpu_count(), "load_average_at_start": [round(v, 1) for v in
                                                                    os.getloadavg()],
             "jax": jax.__version__, "platform": platform.platform(),
             "backend": jax.default_backend()}
  photos = {name: load_photo(name, FILL_SIZE) for name in PHOTOS}
  small = {name: load_photo(name, NNF_SIZE) for name in NNF_PHOTOS}
  accuracy = nnf_accuracy(small)
  logging.info("field accuracy done (%.0f s)", time.time() - start)
  speed_rows = speed()
  logging.info("speed done (%.0f s)", time.time() - start)
  per_image, examples = hole_filling(photos)
  results = {"machine": machine, "nnf_accuracy": accuracy, "speed": speed_rows,
             "per_image": per_image, "fill_statistics": fill_statistics(per_image),
             "settings": {"patch_size": PATCH_SIZE, "fill_size": FILL_SIZE,
                          "hole_side": HOLE_SIDE, "holes_per_image": HOLES_PER_IMAGE,
                          "nnf_size": NNF_SIZE, "nnf_iterations": NNF_ITERATIONS, "seed": SEED}}
  convergence_figure(accuracy, os.path.join(FLAGS.out, "nnf_convergence.png"))
  fill_figure(examples, [("photo", "brick"), ("photo", "camera"), ("photo", "chelsea"),
                         ("photo", "grass"), ("noise", "brick")],
              os.path.join(FLAGS.out, "fills.png"))
  error_figure(per_image, os.path.join(FLAGS.out, "fill_errors.png"))
  results["wall_seconds"] = time.time() - start
  with open(os.path.join(FLAGS.out, "results.json"), "w") as file:
    json.dump(results, file, indent=1)
  with open(os.path.join(FLAGS.out, "README.md"), "w") as file:
    file.write(report(results))
  logging.info("Report: %s (%.0f s)", os.path.join(FLAGS.out, "README.md"), results["wall_seconds"])


if __name__ == "__main__":
  define_flags()
  app.run(main)
