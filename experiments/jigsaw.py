"""The seed notes' jigsaw prior, measured: `python -m experiments.jigsaw --out=<dir>`.

For every condition (grid, tile side, image kind, edge measure) and every photo, each seed crops
the photo at a random offset (so seeds are different puzzles: the solver sees only pixels and
gives the same arrangement for any shuffle of the same tiles), shuffles the tiles, solves the
puzzle with `cnn_jax.priors.jigsaw` and scores the direct and neighbour comparisons. Image kinds:
'photo'; 'white_noise' (i.i.d. uniform pixels, the photo's shape); 'pixels_shuffled' (the
cropped photo's pixels in a random order: its colours, no structure). Writes into `--out`:
`README.md` (generated), `results.json` and the PNG figures.

    python -m experiments.jigsaw --out=experiments/results/jigsaw
    python -m experiments.jigsaw --out=/tmp/jigsaw --config=experiments/configs/jigsaw.py:smoke
"""

from __future__ import annotations

import functools
import json
import math
import os
import time

import jax
import jax.numpy as jnp
from matplotlib.figure import Figure
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags
from scipy import stats

from cnn_jax import runtime
from cnn_jax.priors.jigsaw import (assemble_tiles, chance_levels, compatibility, cut_tiles,
                                   direct_comparison, edge_dissimilarity, neighbour_comparison,
                                   place_greedily, shuffle_tiles)
from experiments.configs.jigsaw import PHOTOS
from experiments.report_tables import markdown_table

KINDS = ("photo", "white_noise", "pixels_shuffled")
MEASURE_NAMES = {"prediction": "prediction-based (Pomeranz)", "lpq": "plain colour jump (L_p)^q"}
# Published results on Cho et al. 2010's 20 images, 432 pieces of 28x28 pixels, known piece
# orientation (percent). NOT VERIFIED: the search available to the session that wrote this
# returned no table text of these papers; the figures are recalled from the literature and
# must be checked against the tables named before being cited.
PUBLISHED_432 = (
    ("Cho et al. 2010 (probabilistic, no clues)", "Pomeranz et al. 2011, Table 1", 10.0, 55.0),
    ("Pomeranz et al. 2011 (greedy + shift)", "Pomeranz et al. 2011, Table 1", 94.0, 95.0),
    ("Gallagher 2012 (MGC + tree), known orientation", "Gallagher 2012, Table 2", 95.3, 95.1),
)


def load_photo(name: str) -> np.ndarray:
  """A shipped photo as float32 `[H, W, C]` in [0, 1] (grey photos get C = 1)."""
  sources = dict(PHOTOS)
  if name not in sources:
    raise ValueError(f"photo must be one of {sorted(sources)}, got {name!r}")
  if sources[name] == "sklearn":
    from sklearn.datasets import load_sample_image
    photo = load_sample_image(f"{name}.jpg")
  else:
    import skimage.data
    photo = getattr(skimage.data, name)()
  photo = np.asarray(photo, np.float32) / 255.0
  return photo[..., None] if photo.ndim == 2 else photo


@functools.lru_cache(maxsize=64)
def _covering_photo(name: str, height: int, width: int) -> np.ndarray:
  """The photo resized (aspect kept) to cover `height x width` plus a margin for random crops."""
  import skimage.transform
  photo = load_photo(name)
  scale = max(height / photo.shape[0], width / photo.shape[1]) * 1.1
  shape = (math.ceil(photo.shape[0] * scale), math.ceil(photo.shape[1] * scale))
  return skimage.transform.resize(photo, shape, anti_aliasing=scale < 1).astype(np.float32)


def puzzle_image(name: str, kind: str, grid, tile_size: int, seed: int) -> np.ndarray:
  """The `[rows T, cols T, C]` image of one puzzle: a random crop of the photo, or noise."""
  height, width = grid[0] * tile_size, grid[1] * tile_size
  # The crop depends on (seed, photo, size) only: a photo's pixels_shuffled puzzle is its photo
  # puzzle's pixels.
  photo_index = [photo for photo, _ in PHOTOS].index(name)
  crop_rng = np.random.default_rng([seed, height, width, photo_index])
  rng = np.random.default_rng([seed, height, width, photo_index, KINDS.index(kind)])
  covering = _covering_photo(name, height, width)
  top = crop_rng.integers(0, covering.shape[0] - height + 1)
  left = crop_rng.integers(0, covering.shape[1] - width + 1)
  crop = covering[top:top + height, left:left + width]
  if kind == "white_noise":
    return rng.random(crop.shape, np.float32)
  if kind == "pixels_shuffled":
    pixels = crop.reshape(-1, crop.shape[-1])
    return pixels[rng.permutation(len(pixels))].reshape(crop.shape)
  return crop


@functools.partial(jax.jit, static_argnames=("measure", "p", "q"))
def _batched_compatibility(tiles, measure, p, q):
  """`tiles [B, n, T, T, C]` -> `[B, 4, n, n]`, every puzzle of the batch at once."""
  return jax.vmap(lambda one: compatibility(edge_dissimilarity(one, measure, p, q)))(tiles)


def solve_batch(images: list[np.ndarray], tile_size: int, keys, measure: str, config):
  """Shuffles (one key each) and solves same-shape puzzles: placements `[B, n]` of original
  tile indices, and the grid."""
  cut = [cut_tiles(image, tile_size) for image in images]
  grid = cut[0][1]
  shuffled = [shuffle_tiles(key, tiles) for (tiles, _), key in zip(cut, keys)]
  compat = np.asarray(_batched_compatibility(jnp.stack([tiles for tiles, _ in shuffled]), measure,
                                             config.p, config.q))
  placements = [np.asarray(permutation)[place_greedily(c, grid)]
                for c, (_, permutation) in zip(compat, shuffled)]
  return np.stack(placements), grid


def conditions(config) -> list[dict]:
  """Every (kind, grid, tile side, measure) once."""
  keys = [("photo", tuple(grid), config.count_tile_size) for grid in config.count_grids]
  keys += [("photo", tuple(config.size_grid), size) for size in config.tile_sizes]
  keys += [(kind, tuple(grid), config.count_tile_size) for kind in KINDS[1:]
           for grid in config.noise_grids]
  unique = list(dict.fromkeys(keys))
  return [{"kind": kind, "grid": list(grid), "tile_size": size, "measure": measure}
          for kind, grid, size in unique for measure in config.measures]


def summarize(per_image: dict[str, list[float]]) -> dict:
  """Mean over images of their seed means, sample std across images, 95% t interval."""
  means = np.array([np.mean(values) for values in per_image.values()])
  mean, std = float(means.mean()), float(means.std(ddof=1)) if len(means) > 1 else 0.0
  half = float(stats.t.ppf(0.975, len(means) - 1) * std / math.sqrt(len(means))) \
      if len(means) > 1 else math.nan
  return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "images": len(means),
          "runs": int(sum(len(values) for values in per_image.values())),
          "per_image_mean": {name: float(np.mean(v)) for name, v in per_image.items()},
          "per_image_std": {name: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
                            for name, v in per_image.items()}}


def run_experiment(config) -> dict:
  """Solves every puzzle of every condition; returns the results as plain data."""
  start = time.time()
  results = []
  for condition in conditions(config):
    grid, size = tuple(condition["grid"]), condition["tile_size"]
    direct, neighbour = {}, {}
    condition_start = time.time()
    for index, name in enumerate(config.photos):
      images = [puzzle_image(name, condition["kind"], grid, size, seed) for seed in config.seeds]
      keys = [jax.random.fold_in(jax.random.key(seed), index) for seed in config.seeds]
      placements, _ = solve_batch(images, size, keys, condition["measure"], config)
      direct[name] = [float(v) for v in direct_comparison(placements)]
      neighbour[name] = [float(v) for v in neighbour_comparison(placements, grid)]
    chance_direct, chance_neighbour = chance_levels(grid)
    results.append({**condition, "tiles": grid[0] * grid[1],
                    "chance": {"direct": chance_direct, "neighbour": chance_neighbour},
                    "direct": summarize(direct), "neighbour": summarize(neighbour),
                    "seconds": time.time() - condition_start})
    logging.info("%s %s T=%d %s: neighbour %.3f direct %.3f (%.1f s)", condition["kind"], grid,
                 size, condition["measure"], results[-1]["neighbour"]["mean"],
                 results[-1]["direct"]["mean"], results[-1]["seconds"])
  return {"config": config.to_dict(), "conditions": results, "tests": significance_tests(results),
          "published_432": [dict(zip(("method", "source", "direct", "neighbour"), row))
                            for row in PUBLISHED_432],
          "seconds": time.time() - start}


def _find(results, **match):
  return next(r for r in results if all(r[k] == v for k, v in match.items()))


def significance_tests(results) -> list[dict]:
  """Photos vs no structure (one-sided Mann-Whitney U on per-image neighbour means), no
  structure vs chance (two-sided one-sample t test), prediction vs plain jump on photos (paired
  Wilcoxon signed-rank over photos)."""
  tests = []
  for r in results:
    if r["kind"] == "photo":
      continue
    photo = _find(results, kind="photo", grid=r["grid"], tile_size=r["tile_size"],
                  measure=r["measure"])
    photos = list(photo["neighbour"]["per_image_mean"].values())
    noise = list(r["neighbour"]["per_image_mean"].values())
    tests.append({"test": "photos > no structure (Mann-Whitney U, one-sided)",
                  "kind": r["kind"], "grid": r["grid"], "measure": r["measure"],
                  "p": float(stats.mannwhitneyu(photos, noise, alternative="greater").pvalue)})
    tests.append({"test": "no structure = chance (one-sample t, two-sided)", "kind": r["kind"],
                  "grid": r["grid"], "measure": r["measure"],
                  "p": float(stats.ttest_1samp(noise, r["chance"]["neighbour"]).pvalue)})
  measures = {r["measure"] for r in results}
  if {"prediction", "lpq"} <= measures:
    for r in results:
      if r["kind"] != "photo" or r["measure"] != "prediction":
        continue
      other = _find(results, kind="photo", grid=r["grid"], tile_size=r["tile_size"],
                    measure="lpq")
      a = np.array(list(r["neighbour"]["per_image_mean"].values()))
      b = np.array(list(other["neighbour"]["per_image_mean"].values()))
      p = float(stats.wilcoxon(a, b).pvalue) if np.any(a != b) else 1.0
      tests.append({"test": "prediction vs plain jump on photos (Wilcoxon signed-rank)",
                    "kind": "photo", "grid": r["grid"], "tile_size": r["tile_size"],
                    "mean_difference": float(np.mean(a - b)), "p": p})
  return tests


def _cell(summary, digits=3):
  low, high = summary["ci95"]
  return (f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f} "
          f"[{low:.{digits}f}, {high:.{digits}f}]")


def example_figure(config, path: str) -> None:
  """The example photo, shuffled, and its reassembly with each measure."""
  grid, size, seed = tuple(config.example_grid), config.count_tile_size, config.seeds[0]
  image = puzzle_image(config.example_photo, "photo", grid, size, seed)
  tiles, _ = cut_tiles(image, size)
  shuffled, permutation = shuffle_tiles(jax.random.key(seed), tiles)
  panels = [("original", image), ("shuffled", assemble_tiles(tiles, permutation, grid))]
  for measure in config.measures:
    placement, _ = solve_batch([image], size, [jax.random.key(seed)], measure, config)
    panels.append((f"solved, {MEASURE_NAMES[measure]}\ndirect comparison "
                   f"{float(direct_comparison(placement[0])):.2f}, neighbour "
                   f"{float(neighbour_comparison(placement[0], grid)):.2f}",
                   assemble_tiles(tiles, placement[0], grid)))
  figure = Figure(figsize=(3.2 * len(panels), 3.0))
  axes = figure.subplots(1, len(panels))
  for axis, (title, panel) in zip(axes, panels):
    panel = np.clip(np.asarray(panel), 0, 1)
    axis.imshow(panel[..., 0] if panel.shape[-1] == 1 else panel, cmap="gray", vmin=0, vmax=1)
    axis.set_title(title, fontsize=8)
    axis.axis("off")
  figure.suptitle(f"{config.example_photo}: {grid[0]}x{grid[1]} = {grid[0] * grid[1]} tiles of "
                  f"{size}x{size} pixels (seed {seed})", fontsize=9)
  figure.tight_layout()
  figure.savefig(path, dpi=80)


def accuracy_figure(results, config, path: str, against: str) -> None:
  """Neighbour and direct comparison (mean, 95% interval over photos) vs tile count or size."""
  figure = Figure(figsize=(10, 3.8))
  axes = figure.subplots(1, 2)
  for axis, metric in zip(axes, ("neighbour", "direct")):
    for measure, style in zip(config.measures, ("-o", "--s")):
      if against == "count":
        chosen = [r for r in results if r["kind"] == "photo" and r["measure"] == measure
                  and r["tile_size"] == config.count_tile_size
                  and tuple(r["grid"]) in {tuple(g) for g in config.count_grids}]
        xs = [r["tiles"] for r in chosen]
      else:
        chosen = [r for r in results if r["kind"] == "photo" and r["measure"] == measure
                  and tuple(r["grid"]) == tuple(config.size_grid)
                  and r["tile_size"] in config.tile_sizes]
        xs = [r["tile_size"] for r in chosen]
      order = np.argsort(xs)
      chosen, xs = [chosen[i] for i in order], [xs[i] for i in order]
      means = np.array([r[metric]["mean"] for r in chosen])
      errors = np.abs(np.array([r[metric]["ci95"] for r in chosen]).T - means)
      axis.errorbar(xs, means, yerr=errors, fmt=style, capsize=3,
                    label=f"photos, {MEASURE_NAMES[measure]}")
      if against == "count":
        for kind, marker in (("white_noise", "x"), ("pixels_shuffled", "+")):
          noise = [r for r in results if r["kind"] == kind and r["measure"] == measure]
          if noise:
            axis.errorbar([r["tiles"] for r in noise], [r[metric]["mean"] for r in noise],
                          yerr=np.abs(np.array([r[metric]["ci95"] for r in noise]).T
                                      - [r[metric]["mean"] for r in noise]),
                          fmt=marker, capsize=3, label=f"{kind.replace('_', ' ')}, {measure}")
    if against == "count":
      counts = sorted({r["tiles"] for r in results})
      grids = {r["tiles"]: tuple(r["grid"]) for r in results}
      axis.plot(counts, [chance_levels(grids[c])[0 if metric == "direct" else 1] for c in counts],
                ":k", label="chance (random placement)")
      axis.set_xscale("log")
      axis.set_xticks(counts, [str(c) for c in counts])
      axis.minorticks_off()
      axis.set_xlabel(f"tiles in the puzzle ({config.count_tile_size}x{config.count_tile_size}"
                      "-pixel tiles)")
    else:
      axis.plot(config.tile_sizes, [chance_levels(tuple(config.size_grid))[
          0 if metric == "direct" else 1]] * len(config.tile_sizes), ":k",
                label="chance (random placement)")
      axis.set_xscale("log", base=2)
      axis.set_xticks(list(config.tile_sizes), [str(t) for t in config.tile_sizes])
      axis.minorticks_off()
      axis.set_xlabel(f"tile side (pixels), {config.size_grid[0]}x{config.size_grid[1]} tiles")
    axis.set_ylabel(f"{metric} comparison (fraction)")
    axis.set_title(f"mean over {len(config.photos)} photos, error bars: 95% t interval",
                   fontsize=8)
    axis.set_ylim(-0.03, 1.03)
    axis.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(path, dpi=100)


def write_report(output: dict, config, out_dir: str) -> str:
  """README.md, results.json and the figures in `out_dir`; returns the README's path."""
  os.makedirs(out_dir, exist_ok=True)
  results = output["conditions"]
  with open(os.path.join(out_dir, "results.json"), "w") as file:
    json.dump(output, file, indent=1)
  example_figure(config, os.path.join(out_dir, "jigsaw_example.png"))
  accuracy_figure(results, config, os.path.join(out_dir, "jigsaw_accuracy_vs_tiles.png"), "count")
  accuracy_figure(results, config, os.path.join(out_dir, "jigsaw_accuracy_vs_tile_size.png"),
                  "size")
  colour = [n for n in config.photos if load_photo(n).shape[-1] == 3]
  grey = [n for n in config.photos if n not in colour]
  header = ["kind", "grid", "tiles", "tile px", "measure", "neighbour", "direct",
            "chance (neighbour / direct)", "s"]
  rows = [[r["kind"], f"{r['grid'][0]}x{r['grid'][1]}", r["tiles"], r["tile_size"], r["measure"],
           _cell(r["neighbour"]), _cell(r["direct"]),
           f"{r['chance']['neighbour']:.4f} / {r['chance']['direct']:.4f}", f"{r['seconds']:.0f}"]
          for r in results]
  test_rows = [[t["test"], t["kind"], f"{t['grid'][0]}x{t['grid'][1]}"
                + (f", {t['tile_size']} px" if "tile_size" in t else ""),
                t.get("measure", "") or f"mean difference {t['mean_difference']:+.3f}",
                f"{t['p']:.2g}"] for t in output["tests"]]
  lines = [
      "# The jigsaw prior: reassembling shuffled photos from the colour jump across tile edges",
      "",
      "Generated by `python -m experiments.jigsaw --out=<this folder>` "
      f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {output['seconds']:.0f} s on "
      f"{os.cpu_count()} CPU cores, JAX {jax.__version__}); numbers in `results.json`.", "",
      "## Protocol", "",
      f"- Photos ({len(config.photos)}): colour {', '.join(colour) or 'none'}; grey "
      f"{', '.join(grey) or 'none'} (scikit-image's `skimage.data`, scikit-learn's "
      "`load_sample_image` for china and flower), values in [0, 1], RGB or grey (Pomeranz et "
      "al. work in L*a*b*).",
      "- Each photo is resized (aspect kept, bilinear, anti-aliased when shrinking) to 1.1x the "
      "size that covers the puzzle; each seed then takes a random crop of the puzzle's size and "
      "a random shuffle of its tiles. Seeds: "
      f"{list(config.seeds)}. No clues, known grid size, known orientation (Type 1).",
      f"- Solver: `cnn_jax.priors.jigsaw.solve_jigsaw`, (L_p)^q with p = {config.p:g}, q = "
      f"{config.q:g}, compatibility exp(-D / first quartile), best-buddy-first greedy placement "
      "floating in the frame, then Pomeranz's segment re-growth.",
      "- Cells: mean ± sample std over the photos (each photo the mean of its seeds), [95% t "
      "interval over photos]. 'chance' = the expectation for a uniformly random placement "
      "(`chance_levels`). Direct comparison counts a correct but shifted assembly as wrong.",
      "", "## Results", "", markdown_table(header, rows), "",
      "![shuffled and reassembled](jigsaw_example.png)", "",
      "![accuracy vs tile count](jigsaw_accuracy_vs_tiles.png)", "",
      "![accuracy vs tile size](jigsaw_accuracy_vs_tile_size.png)", "",
      "## Tests", "", "Per-photo neighbour-comparison means (n = number of photos per group).", "",
      markdown_table(["test", "kind", "grid", "measure", "p"], test_rows), "",
      _multiple_comparisons(output["tests"]), "",
  ]
  lines += _per_photo_section(results, config, colour)
  lines += _published_section(output, results, len(config.photos))
  path = os.path.join(out_dir, "README.md")
  with open(path, "w") as file:
    file.write("\n".join(lines) + "\n")
  return path


def _multiple_comparisons(tests) -> str:
  chance = [t["p"] for t in tests if t["test"].startswith("no structure = chance")]
  structure = [t["p"] for t in tests if t["test"].startswith("photos > no structure")]
  return (f"{sum(p < 0.05 for p in chance)} of the {len(chance)} tests of 'no structure = "
          f"chance' have p < 0.05 (about {0.05 * len(chance):.1f} expected by chance alone; "
          f"Bonferroni threshold {0.05 / max(len(chance), 1):.4f}, smallest p "
          f"{min(chance, default=float('nan')):.2g}); the largest p of 'photos > no structure' "
          f"is {max(structure, default=float('nan')):.2g}.")


def _per_photo_section(results, config, colour) -> list[str]:
  largest = max((r for r in results if r["kind"] == "photo"), key=lambda r: r["tiles"])
  chosen = [r for r in results if r["kind"] == "photo" and r["grid"] == largest["grid"]
            and r["tile_size"] == largest["tile_size"]]
  header = ["photo", "channels"] + [f"{metric} ({r['measure']})" for r in chosen
                                     for metric in ("neighbour", "direct")]
  rows = [[name, "colour" if name in colour else "grey"]
          + [f"{r[metric]['per_image_mean'][name]:.3f} ± {r[metric]['per_image_std'][name]:.3f}"
             for r in chosen for metric in ("neighbour", "direct")]
          for name in config.photos]
  return [f"## Per photo, {largest['tiles']} tiles of {largest['tile_size']} pixels", "",
          f"Mean ± sample std over the {len(config.seeds)} seeds (crops and shuffles).", "",
          markdown_table(header, rows), ""]


def _published_section(output, results, photos: int) -> list[str]:
  ours = [r for r in results if r["kind"] == "photo" and r["tiles"] == 432
          and r["tile_size"] == 28]
  if not ours:
    return []
  rows = [[row["method"], row["source"], f"{row['direct']:.1f}", f"{row['neighbour']:.1f}"]
          for row in output["published_432"]]
  rows += [[f"ours, {MEASURE_NAMES[r['measure']]}", f"this run, {photos} other photos",
            f"{100 * r['direct']['mean']:.1f}", f"{100 * r['neighbour']['mean']:.1f}"]
           for r in ours]
  return [
      "## Against the published 432-piece results", "",
      "Published: Cho et al. 2010's 20 images, 432 pieces of 28x28 pixels, known orientation "
      "(percent). **The published figures are not verified**: they are recalled, not read "
      "from the papers (no table text could be retrieved when this experiment was written); "
      "check the tables named before citing them.",
      "", markdown_table(["method", "source", "direct %", "neighbour %"], rows), "",
      "Protocol differences: our images are not Cho et al.'s 20 (these are scikit-image and "
      "scikit-learn photos, several smaller than 504x672 and so upsampled, which makes them "
      "smoother and easier; the grey ones are harder, one channel); we work in RGB, not "
      "L*a*b*; our placer has the shift stage only as a regrowth from the largest best-buddy "
      "segment, so its direct comparison suffers from shifted solutions more than Pomeranz's.",
      ""]


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags, defined when run (not on import, which would clash with another
  entry point's `--config` in one process)."""
  config_flags.DEFINE_config_file(
      "config", os.path.join(os.path.dirname(__file__), "configs", "jigsaw.py"),
      "Experiment config file (and :argument, e.g. ':smoke').", lock_config=True)
  flags.DEFINE_string("out", None, "Directory for README.md, results.json and the figures.")
  flags.DEFINE_bool("report_only", False, "Rewrite README.md and the figures from --out's "
                    "results.json (same config) without solving the puzzles again.")


def main(argv):
  runtime.setup()
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.out is None:
    raise app.UsageError("--out is required")
  config = FLAGS.config
  unknown = set(config.photos) - set(dict(PHOTOS))
  if unknown:
    raise app.UsageError(f"config.photos: unknown {sorted(unknown)}; allowed "
                         f"{sorted(dict(PHOTOS))}")
  if FLAGS.report_only:
    with open(os.path.join(FLAGS.out, "results.json")) as file:
      output = json.load(file)
  else:
    output = run_experiment(config)
  logging.info("Report: %s", write_report(output, config, FLAGS.out))


if __name__ == "__main__":
  define_flags()
  app.run(main)
