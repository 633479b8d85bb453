"""Experiment 5: depth — plain vs residual networks (He et al. 2016) of growing depth.

The CIFAR-style networks of `cnn_jax.models` (3x3 stem, three stages, global pooling) at widths
8-16-32 and depth `6n + 2`, with shortcuts ('resnet20' with `stage_sizes=(n, n, n)`) and
without ('plain20' likewise), trained on `train_size` class-balanced digits; recorded every few
steps: the training loss, the gradient norm of every top-level module (stem, each block, head)
on the current batch, and the cross-entropy and accuracy on a validation split of
`validation_size` other training digits (never the test set). At the end, in eval mode on the
training digits: the training error and cross-entropy (He et al.'s Figure 6 plots training
error).

Learning rates: the residual nets train at the sweep's `learning_rate`. The plain nets' rate is
chosen per depth on the validation split: on the first seed every rate of
`plain_learning_rates` is trained, and `chosen_plain_rates` (config data, one per depth) holds
the rate with the lowest final validation loss; the other seeds train at that rate only. The
report recomputes the choice from the first seed's runs (`choose_plain_rates`) and says whether
the config agrees. A run at the sweep's `learning_rate` has no 'learning_rate' option (and the
name `plain20_seed3`); one at another rate has it (and the name `plain20_lr0.1_seed0`).

Stopping-rule check (`half_length_check`): both headline cells of every depth (the plain net at
its chosen rate, the residual net) also train for `num_epochs / 2` on every seed (option
'epochs', name `plain20_e40_seed3`), and the cells of `schedule_epochs` at longer lengths; each
cell is reported at the shortest length that reached its plateau, else its longest
(`experiments.stopping_rule`), and the report says which.

He et al.'s observation ("degradation"): a deeper plain network has the higher training error;
the residual one of the same depth does not.
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
from experiments import seed_statistics, stopping_rule
from experiments.contrasts import final_train_loss
from experiments.in_memory_training import (DATASET, LABEL_SMOOTHING, InMemoryDataset,
                                            plateau_gain, prng_key, train_classifier,
                                            training_config, validation_scores)
from experiments.model_zoo import check_positive_number, check_seeds
from experiments.published import PUBLISHED
from experiments.report_tables import cell, markdown_table
from experiments.runs import Run

NAME = "depth"
KINDS = ("plain", "residual")


def validate(config) -> None:
  settings = config.depth
  check_seeds(f"config.{NAME}.seeds", settings.seeds)
  check_seeds(f"config.{NAME}.rate_sweep_seeds", settings.rate_sweep_seeds)
  if not set(settings.rate_sweep_seeds) <= set(settings.seeds):
    raise ValueError(f"config.{NAME}.rate_sweep_seeds must be among seeds "
                     f"{tuple(settings.seeds)!r}, got {settings.rate_sweep_seeds!r}")
  widths = tuple(settings.widths)
  if len(widths) != 3 or not all(isinstance(w, int) and w >= 1 for w in widths):
    raise ValueError(f"config.{NAME}.widths must be 3 ints >= 1 (one per stage), got "
                     f"{settings.widths!r}")
  if not isinstance(settings.train_size, int) or not 10 <= settings.train_size <= 4000 or (
      settings.train_size % 10):
    raise ValueError(f"config.{NAME}.train_size must be a multiple of 10 in [10, 4000], got "
                     f"{settings.train_size!r}")
  if not isinstance(settings.validation_size, int) or settings.validation_size < 10 or (
      settings.validation_size % 10) or settings.train_size + settings.validation_size > 4000:
    raise ValueError(f"config.{NAME}.validation_size must be a multiple of 10 >= 10 with "
                     f"train_size + validation_size <= 4000, got {settings.validation_size!r}")
  check_positive_number(f"config.{NAME}.num_epochs", settings.num_epochs)
  depths = tuple(settings.depths)
  if not depths or not all(isinstance(d, int) and d >= 8 and (d - 2) % 6 == 0 for d in depths):
    raise ValueError(f"config.{NAME}.depths must be a non-empty list of depths 6n + 2 >= 8, "
                     f"got {settings.depths!r}")
  rates = tuple(settings.plain_learning_rates)
  if not rates or not all(isinstance(r, (int, float)) and r > 0 for r in rates):
    raise ValueError(f"config.{NAME}.plain_learning_rates must be a non-empty list of numbers "
                     f"> 0, got {settings.plain_learning_rates!r}")
  chosen = tuple(settings.chosen_plain_rates)
  if len(chosen) != len(depths) or not all(rate in rates for rate in chosen):
    raise ValueError(f"config.{NAME}.chosen_plain_rates must hold one rate of "
                     f"plain_learning_rates {rates!r} per depth {depths!r}, got "
                     f"{settings.chosen_plain_rates!r}")
  stopping_rule.check_schedule(
      f"config.{NAME}.schedule_epochs", settings.get("schedule_epochs", {}),
      {f"{kind}{depth}" for kind in KINDS for depth in depths},
      f"'<kind><depth>' of {KINDS!r} and the configured depths {depths!r}",
      settings.num_epochs)


def run_name(kind: str, depth: int, learning_rate: float, seed: int, config,
             epochs: float | None = None) -> str:
  """`plain20_seed3` at the sweep's learning rate and `num_epochs`, `plain20_lr0.1_seed3` at
  another rate, `plain20_e10_seed3` for 10 epochs."""
  rate = "" if learning_rate == config.learning_rate else f"_lr{learning_rate:g}"
  length = "" if epochs is None else f"_e{epochs:g}"
  return f"{kind}{depth}{rate}{length}_seed{seed}"


def learning_rate_of(options: dict, config) -> float:
  """A run's peak learning rate: its 'learning_rate' option, else the sweep's."""
  return options.get("learning_rate", config.learning_rate)


def run_options(kind: str, depth: int, learning_rate: float, config,
                epochs: float | None = None) -> dict:
  """`{'kind', 'depth'}`, 'learning_rate' when it is not the sweep's, 'epochs' when it is not
  `num_epochs`."""
  options = {"kind": kind, "depth": depth}
  if learning_rate != config.learning_rate:
    options["learning_rate"] = learning_rate
  if epochs is not None:
    options["epochs"] = epochs
  return options


def _run(kind: str, depth: int, learning_rate: float, seed: int, config,
         epochs: float | None = None) -> Run:
  return Run(NAME, run_name(kind, depth, learning_rate, seed, config, epochs), seed,
             run_options(kind, depth, learning_rate, config, epochs))


def plan(config) -> list[Run]:
  """Per depth and seed: the residual net at the sweep's rate; the plain net at every rate of
  `plain_learning_rates` on `rate_sweep_seeds` (the rate choice), at the depth's
  `chosen_plain_rates` entry on the other seeds. With `half_length_check`, then both headline
  cells of every depth and seed for `num_epochs / 2` (option 'epochs'); then, seed by seed, the
  headline cells of `schedule_epochs` (keys '<kind><depth>') at each of their other lengths."""
  settings = config.depth
  runs = []
  for seed in settings.seeds:
    for depth, chosen in zip(settings.depths, settings.chosen_plain_rates):
      rates = settings.plain_learning_rates if seed in settings.rate_sweep_seeds else (chosen,)
      runs += [_run("plain", depth, rate, seed, config) for rate in rates]
      runs.append(_run("residual", depth, config.learning_rate, seed, config))
  headline = [headline_key(config, kind, depth) for depth in settings.depths for kind in KINDS]
  if settings.half_length_check:
    runs += [_run(kind, depth, rate, seed, config, settings.num_epochs / 2)
             for seed in settings.seeds for kind, depth, rate in headline]
  schedule = settings.get("schedule_epochs", {})
  runs += [_run(kind, depth, rate, seed, config, float(epochs))
           for seed in settings.seeds for kind, depth, rate in headline
           for epochs in schedule.get(f"{kind}{depth}", ())]
  return runs


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


def num_steps(config, epochs: float | None = None) -> int:
  """`ceil(epochs * train_size / batch_size)` (default epochs: `num_epochs`), at least 1."""
  epochs = config.depth.num_epochs if epochs is None else epochs
  return max(1, math.ceil(epochs * config.depth.train_size / config.batch_size))


def training_and_validation(images: np.ndarray, labels: np.ndarray, train_size: int,
                            validation_size: int, seed: int):
  """`train_size / 10` digits of each class for training and the next `validation_size / 10`
  of that class for validation, from one random order per class (`default_rng(seed)`): the
  training digits are `priors.balanced_subset(images, labels, train_size, seed)`'s, and the two
  sets are disjoint.

  Returns:
    `(train_images, train_labels), (validation_images, validation_labels)`.
  """
  rng = np.random.default_rng(seed)
  orders = [rng.permutation(np.flatnonzero(labels == c)) for c in range(10)]
  train, held_out = train_size // 10, validation_size // 10
  if min(len(order) for order in orders) < train + held_out:
    raise ValueError(f"train_size + validation_size = {train_size + validation_size} needs "
                     f"{train + held_out} digits of each class, the fewest is "
                     f"{min(len(order) for order in orders)}")
  keep = np.concatenate([order[:train] for order in orders])
  validation = np.concatenate([order[train:train + held_out] for order in orders])
  return (images[keep], labels[keep]), (images[validation], labels[validation])


def execute(run: Run, config, digits: InMemoryDataset) -> dict:
  """Trains the run's net on `train_size` class-balanced training digits (drawn with the run's
  seed), with the validation split beside them; records the loss, per-module gradient norms and
  validation scores, then the final training error and cross-entropy (eval mode, on the
  training digits) and the test accuracy.

  A run whose loss diverges (the loop raises FloatingPointError: likely a plain net at a large
  rate) is kept as `{'diverged': True, ...}` with NaN results; the rate choice passes it over.
  """
  settings = config.depth
  blocks = (run.options["depth"] - 2) // 6
  model_name = "resnet20" if run.options["kind"] == "residual" else "plain20"
  (images, labels), validation = training_and_validation(
      digits.train_images, digits.train_labels, settings.train_size, settings.validation_size,
      run.seed)
  training = training_config(model_name, seed=run.seed,
                             num_steps=num_steps(config, run.options.get("epochs")),
                             batch_size=config.batch_size,
                             learning_rate=learning_rate_of(run.options, config),
                             record_every=settings.record_every, stage_sizes=(blocks,) * 3,
                             widths=tuple(settings.widths))
  try:
    classifier, records = train_classifier(training, images, labels, measure=gradient_norms,
                                           validation=validation)
  except FloatingPointError as error:
    return {"diverged": True, "divergence": str(error), "train_error": math.nan,
            "train_cross_entropy": math.nan, "test_accuracy": math.nan,
            "plateau_gain": math.nan}
  on_train = validation_scores(classifier, images, labels)
  return {
      "diverged": False,
      "steps": [record.step for record in records],
      "train_loss": [record.train_loss for record in records],
      "gradient_norms": [record.measured for record in records],
      "validation_loss": [record.validation_loss for record in records],
      "validation_accuracy": [record.validation_accuracy for record in records],
      "plateau_gain": plateau_gain(records),
      "train_error": 1.0 - on_train["validation_accuracy"],
      "train_cross_entropy": on_train["validation_loss"],
      "test_accuracy": classifier.accuracy(digits.test_images, digits.test_labels),
  }


def _module_order(names) -> list[str]:
  """The stem conv, the blocks in order, the head; batch-norm modules (scale and bias only,
  gradients of another kind) are left out."""
  rank = lambda name: (0 if name.startswith("Stem") else 2 if name == "Head" else 1, name)
  return sorted((name for name in names if "Norm" not in name), key=rank)


def cell_key(result: dict, config) -> tuple[str, int, float]:
  """`(kind, depth, learning rate)`: a run's cell, whatever its length."""
  options = result["run"]["options"]
  return options["kind"], options["depth"], learning_rate_of(options, config)


def cell_lengths(results: list[dict], config) -> dict[tuple[str, int, float],
                                                      dict[float, list[dict]]]:
  """`{cell: {epochs: results}}`: every cell's runs by length (`num_epochs` without option
  'epochs'), lengths in increasing order."""
  return stopping_rule.by_length(results, lambda result: cell_key(result, config),
                                 config.depth.num_epochs)


def _with_curves(lengths: dict[float, list[dict]]) -> dict[float, list[dict]]:
  """The runs that recorded a validation curve (not diverged, not from before the curve was
  recorded): the ones the stopping rule can pair."""
  return {epochs: [r for r in group if "validation_accuracy" in r["metrics"]]
          for epochs, group in lengths.items()}


def reported_runs(results: list[dict], config) -> list[dict]:
  """The runs the tables, tests and contrasts use: each cell at its reported length, the
  shortest at which its validation curves reached their plateau, else its longest
  (`stopping_rule.reported_length`); a cell trained at one length (the rate sweep's other
  rates) at it."""
  return [result for lengths in cell_lengths(results, config).values()
          for result in lengths[stopping_rule.reported_length(_with_curves(lengths))]]


def cells(results: list[dict], config) -> dict[tuple[str, int, float], list[dict]]:
  """The results by `(kind, depth, learning rate)`, each cell's runs ordered by seed (pass one
  length per cell: `reported_runs`, or the runs of `num_epochs`)."""
  groups = {}
  for result in sorted(results, key=lambda r: r["run"]["seed"]):
    groups.setdefault(cell_key(result, config), []).append(result)
  return groups


def at_num_epochs(results: list[dict]) -> list[dict]:
  """The runs of `num_epochs` (no option 'epochs'): the rate choice's."""
  return [result for result in results if "epochs" not in result["run"]["options"]]


def epochs_of(group: list[dict], config) -> float:
  """The training length (epochs) of a cell's runs."""
  return float(group[0]["run"]["options"].get("epochs", config.depth.num_epochs))


def values(group: list[dict], metric: str) -> list[float]:
  """Per run: `final_train_loss` (metric 'final_train_loss': mean of the last three training
  loss records, train mode), the last record of a curve ('validation_loss'), or the number;
  NaN for a diverged run or a run that did not record it (one from before it was recorded)."""
  out = []
  for result in group:
    metrics = result["metrics"]
    if metrics.get("diverged"):
      out.append(math.nan)
    elif metric == "final_train_loss":
      out.append(final_train_loss(metrics))
    elif metric == "test_error":
      out.append(1.0 - metrics["test_accuracy"])
    else:
      value = metrics.get(metric, math.nan)
      out.append(float(value[-1]) if isinstance(value, list) else float(value))
  return out


def choose_plain_rates(results: list[dict], config) -> dict[int, float | None]:
  """Per depth, the plain nets' rate of `plain_learning_rates` with the lowest mean final
  validation loss over `rate_sweep_seeds` (never the test set); a rate with a diverged or
  missing run there is passed over; None when no rate is left. Ties go to the first rate
  listed."""
  groups = cells(at_num_epochs(results), config)
  seeds = set(config.depth.rate_sweep_seeds)
  chosen = {}
  for depth in config.depth.depths:
    losses = {}
    for rate in config.depth.plain_learning_rates:
      loss = values([r for r in groups.get(("plain", depth, rate), [])
                     if r["run"]["seed"] in seeds], "validation_loss")
      if len(loss) == len(seeds) and not np.isnan(loss).any():
        losses[rate] = float(np.mean(loss))
    chosen[depth] = min(losses, key=losses.get) if losses else None
  return chosen


def headline_cell(groups: dict, config, kind: str, depth: int) -> tuple[str, list[dict]]:
  """The label and runs of the headline cell (`headline_key`)."""
  key = headline_key(config, kind, depth)
  return f"{kind}-{depth} (rate {key[2]:g})", groups.get(key, [])


def headline_key(config, kind: str, depth: int) -> tuple[str, int, float]:
  """The headline cell of `kind` at `depth`: the plain net at the depth's chosen rate, the
  residual net at the sweep's rate."""
  rates = dict(zip(config.depth.depths, config.depth.chosen_plain_rates))
  return kind, depth, rates[depth] if kind == "plain" else config.learning_rate


METRICS = {"train_error": "training error (eval mode)",
           "train_cross_entropy": "training cross-entropy (eval mode)",
           "final_train_loss": "final training loss (train mode, label-smoothed)",
           # He et al.'s Figure 1: the deeper plain net's higher training error shows in its
           # test error too.
           "test_error": "test error"}


def tested(a: tuple[str, list[dict]], b: tuple[str, list[dict]], metric: str,
           expected_sign: int) -> dict:
  """Welch's test of b - a on `metric` and its verdict for the predicted sign, and the same by a
  permutation test ('permutation', 'permutation_verdict': no normality assumed, which a cell
  with one stuck seed violates); all None when a cell has fewer than 2 finite values."""
  (label_a, group_a), (label_b, group_b) = a, b
  values_a, values_b = values(group_a, metric), values(group_b, metric)
  row = {"a": label_a, "b": label_b, "metric": metric, "expected_sign": expected_sign,
         "values_a": values_a, "values_b": values_b, "comparison": None, "verdict": None,
         "permutation": None, "permutation_verdict": None}
  if min(len(seed_statistics.finite_values(v)) for v in (values_a, values_b)) >= 2:
    row["comparison"] = seed_statistics.welch_test(values_a, values_b)
    row["verdict"] = seed_statistics.verdict(expected_sign, row["comparison"])
    row["permutation"] = seed_statistics.bootstrap_test(values_a, values_b)
    row["permutation_verdict"] = seed_statistics.verdict(expected_sign, row["permutation"])
  return row


def depth_tests(results: list[dict], config) -> list[dict]:
  """He et al.'s claims on the headline cells, on every one of `METRICS`: per depth, the
  residual net trains lower than the plain one (b < a); degradation, the deepest plain net
  trains higher than the shallowest (b > a); the deepest residual net lower than the shallowest
  (b < a).
  Each cell at its reported length (`reported_runs`)."""
  groups = cells(reported_runs(results, config), config)
  depths = sorted(config.depth.depths)
  rows = []
  for metric in METRICS:
    for depth in depths:
      rows.append({"claim": f"residual < plain at depth {depth}", **tested(
          headline_cell(groups, config, "plain", depth),
          headline_cell(groups, config, "residual", depth), metric, -1)})
    if len(depths) > 1:
      rows.append({"claim": "degradation: plain deepest > plain shallowest", **tested(
          headline_cell(groups, config, "plain", depths[0]),
          headline_cell(groups, config, "plain", depths[-1]), metric, +1)})
      rows.append({"claim": "residual deepest < residual shallowest", **tested(
          headline_cell(groups, config, "residual", depths[0]),
          headline_cell(groups, config, "residual", depths[-1]), metric, -1)})
  return rows


def he_comparison(results: list[dict], config) -> dict | None:
  """He et al.'s Table 6 ResNets (CIFAR-10 test error, `published.PUBLISHED`) at the shallowest
  and deepest of our depths it lists: the sign of their test-error change is the prediction for
  ours (residual nets, Welch); None when fewer than two of our depths are in the table."""
  listed = sorted(d for d in config.depth.depths if f"he_resnet{d}_error" in PUBLISHED)
  if len(listed) < 2:
    return None
  shallow, deep = listed[0], listed[-1]
  theirs = (PUBLISHED[f"he_resnet{shallow}_error"], PUBLISHED[f"he_resnet{deep}_error"])
  groups = cells(reported_runs(results, config), config)
  row = tested(headline_cell(groups, config, "residual", shallow),
               headline_cell(groups, config, "residual", deep), "test_error",
               int(np.sign(theirs[1].value - theirs[0].value)) or 1)
  return {**row, "published": theirs, "depths": (shallow, deep)}


def _verdict_text(row: dict) -> str:
  return row["verdict"] or "not tested (fewer than 2 seeds per cell)"


def _tests_table(rows: list[dict]) -> str:
  table = []
  for row in rows:
    comparison = row["comparison"]
    table.append([row["claim"], METRICS.get(row["metric"], row["metric"]),
                  f"{row['a']}: {cell(row['values_a'], 4)}",
                  f"{row['b']}: {cell(row['values_b'], 4)}",
                  "b > a" if row["expected_sign"] > 0 else "b < a",
                  "–" if comparison is None else f"{comparison.difference:+.4f}",
                  "–" if comparison is None else seed_statistics.format_p(comparison.p_value),
                  _verdict_text(row),
                  "–" if comparison is None else
                  seed_statistics.format_p(row["permutation"].p_value),
                  row["permutation_verdict"] or "–"])
  return markdown_table(["He et al. 2016", "metric", "a", "b", "predicted", "b - a", "Welch p",
                         "verdict (Welch)", "permutation p", "verdict (permutation)"], table)


def _partial_cell(group: list[dict], metric: str, digits: int = 3, scale: float = 1.0) -> str:
  """`cell` over the runs that have the metric; '(n = k)' when not all of them do."""
  present = [scale * v for v in values(group, metric) if not math.isnan(v)]
  text = cell(present, digits)
  return text if len(present) == len(group) else f"{text} (n = {len(present)})"


def _errorbar(axis, x, per_x_values, **style) -> None:
  """Mean ± sample std (ddof=1; no bar for one seed) over seeds at each x."""
  summaries = [seed_statistics.summarize(v) for v in per_x_values]
  axis.errorbar(x, [s.mean for s in summaries],
                yerr=[0.0 if math.isnan(s.std) else s.std for s in summaries], capsize=3,
                **style)


def _against_depth_figure(groups: dict, config, out_dir: str) -> str:
  """Final training error, cross-entropy and training loss, and test error, against depth,
  headline cells."""
  figure = Figure(figsize=(19, 3.8))
  axes = figure.subplots(1, 4)
  for axis, metric, label, scale in (
      (axes[0], "train_error", "final training error (%), eval mode", 100.0),
      (axes[1], "train_cross_entropy", "training cross-entropy (nats), eval mode", 1.0),
      (axes[2], "final_train_loss", "final training loss (nats), train mode", 1.0),
      (axes[3], "test_error", "test error (%), 1,000 test digits", 100.0)):
    plotted = []
    for kind, style in (("plain", "--o"), ("residual", "-s")):
      depths = [d for d in config.depth.depths if headline_cell(groups, config, kind, d)[1]]
      per_depth = [[scale * v for v in values(headline_cell(groups, config, kind, d)[1], metric)]
                   for d in depths]
      plotted += [value for depth_values in per_depth for value in depth_values]
      if depths:
        _errorbar(axis, depths, per_depth, fmt=style,
                  label=kind + (" (rate chosen per depth)" if kind == "plain" else
                                f" (rate {config.learning_rate:g})"))
    if metric.endswith("error"):
      axis.set_ylim(bottom=0.0)
      if plotted and not np.any(np.nan_to_num(plotted, nan=1.0)):
        axis.set_ylim(0.0, 1.0)
        axis.text(0.5, 0.5, "exactly 0 at every depth, every seed\n(plain and residual overlap)",
                  transform=axis.transAxes, ha="center", va="center", fontsize=8)
    axis.set_xlabel("depth (weighted layers, 6n + 2)")
    axis.set_ylabel(label)
    axis.set_xticks(list(config.depth.depths))
    axis.grid(alpha=0.3)
    if axis.get_lines():
      axis.legend(fontsize=7)
  axes[0].set_title("training error against depth (mean ± std over seeds)", fontsize=9)
  axes[1].set_title("training cross-entropy against depth (mean ± std over seeds)", fontsize=9)
  axes[2].set_title("final training loss against depth (mean ± std over seeds)", fontsize=9)
  axes[3].set_title("test error against depth (mean ± std over seeds)", fontsize=9)
  figure.tight_layout()
  name = "depth_training_error.png"
  figure.savefig(os.path.join(out_dir, name), dpi=100)
  return name


def _curves_figure(groups: dict, config, out_dir: str) -> str:
  """Loss curves and early per-module gradient norms of the headline cells."""
  figure = Figure(figsize=(11, 3.8))
  axes = figure.subplots(1, 2)
  for depth in config.depth.depths:
    for kind, style in (("plain", "--"), ("residual", "-")):
      label, group = headline_cell(groups, config, kind, depth)
      group = [r for r in group if not r["metrics"].get("diverged")]
      if not group:
        continue
      steps = group[0]["metrics"]["steps"]
      (line,) = axes[0].plot(steps, np.mean([r["metrics"]["train_loss"] for r in group], 0),
                             style, label=label)
      names = _module_order(group[0]["metrics"]["gradient_norms"][0])
      # The first quarter of the records: the gradients the initialization passes back.
      early = max(len(steps) // 4, 1)
      norms = [np.mean([r["metrics"]["gradient_norms"][i][name] for r in group
                        for i in range(early)]) for name in names]
      axes[1].plot(np.linspace(0, 1, len(names)), norms, style + "o", markersize=3,
                   color=line.get_color(), label=label)
  axes[0].set_title("training loss (mean over seeds)", fontsize=9)
  axes[0].set_xlabel("step")
  axes[0].set_ylabel("training loss (nats, window mean)")
  axes[0].set_yscale("log")
  axes[1].set_title("per-module gradient norm, first quarter of training", fontsize=9)
  axes[1].set_xlabel("relative depth of the module (stem 0 ... head 1)")
  axes[1].set_ylabel("gradient norm (mean over records and seeds)")
  axes[1].set_yscale("log")
  for axis in axes:
    axis.grid(alpha=0.3)
    if axis.get_lines():
      axis.legend(fontsize=6)
  figure.tight_layout()
  name = "depth_loss_and_gradients.png"
  figure.savefig(os.path.join(out_dir, name), dpi=100)
  return name


def _rate_choice_table(groups: dict, config, chosen: dict) -> str:
  """Per depth: the final validation loss of each rate on `rate_sweep_seeds` (mean ± std over
  them), the lowest, the configured one and whether they agree."""
  seeds = set(config.depth.rate_sweep_seeds)
  configured = dict(zip(config.depth.depths, config.depth.chosen_plain_rates))
  rows = []
  for depth in config.depth.depths:
    losses = []
    for rate in config.depth.plain_learning_rates:
      runs = [r for r in groups.get(("plain", depth, rate), []) if r["run"]["seed"] in seeds]
      diverged = sum(bool(r["metrics"].get("diverged")) for r in runs)
      losses.append("not run" if not runs else
                    cell(values(runs, "validation_loss"), 4)
                    + (f" ({diverged} diverged)" if diverged else ""))
    choice = chosen[depth]
    rows.append([depth, *losses, "–" if choice is None else f"{choice:g}",
                 f"{configured[depth]:g}",
                 "–" if choice is None else "yes" if choice == configured[depth] else
                 "**no: update config.depth.chosen_plain_rates**"])
  return markdown_table(["depth", *(f"val. loss at rate {r:g}"
                                    for r in config.depth.plain_learning_rates),
                         "lowest", "trained (config)", "agree"], rows)


# Without the half-length runs: a cell whose validation accuracy still rose by more than this
# over the last quarter of training (its mean in-run plateau gain) has not reached its plateau.
PLATEAU_TOLERANCE = 0.01


def early_gradient_norms(group: list[dict]) -> tuple[float, float] | None:
  """The stem's and the head's gradient norms over the first quarter of the records (the
  gradients the initialization passes back), mean over records and the trained runs; None when
  every run diverged."""
  trained = [r for r in group if not r["metrics"].get("diverged")]
  if not trained:
    return None
  names = _module_order(trained[0]["metrics"]["gradient_norms"][0])
  early = max(len(trained[0]["metrics"]["steps"]) // 4, 1)
  return tuple(float(np.mean([r["metrics"]["gradient_norms"][i][name] for r in trained
                              for i in range(early)])) for name in (names[0], names[-1]))


def _plateau_lines(results: list[dict], groups: dict, config) -> list[str]:
  """The stopping-rule check of every headline cell (`experiments.stopping_rule`), from its runs
  at other lengths (the half-length check, `schedule_epochs`); without any, the cells whose mean
  in-run plateau gain is above `PLATEAU_TOLERANCE`."""
  epochs = float(config.depth.num_epochs)
  lengths = cell_lengths(results, config)
  headline = {(kind, depth): lengths.get(headline_key(config, kind, depth), {})
              for depth in config.depth.depths for kind in KINDS}
  if any(len(by_length) > 1 for by_length in headline.values()):
    lines = [f"- Stopping-rule check (at its plateau at E epochs when the final validation "
             f"accuracy rose by at most {stopping_rule.PLATEAU_TOLERANCE:g} from E / 2, seeds "
             f"paired, from E = {epochs:g} on; `experiments.stopping_rule`; each cell is "
             "reported at the shortest such E, else its longest):"]
    for (kind, depth), by_length in headline.items():
      label = headline_cell(groups, config, kind, depth)[0]
      verdict = stopping_rule.plateau_verdict(_with_curves(by_length), epochs)
      lines.append(f"  - {label}: {verdict}")
    return lines
  gains = {f"{kind}-{depth}": seed_statistics.summarize(
      values(headline_cell(groups, config, kind, depth)[1], "plateau_gain")).mean
      for depth in config.depth.depths for kind in KINDS}
  rising = {label: gain for label, gain in gains.items() if gain > PLATEAU_TOLERANCE}
  if not rising:
    return []
  return ["- Still improving at the end (mean plateau gain above "
          f"{PLATEAU_TOLERANCE:g}): " + ", ".join(f"{label} ({gain:+.3f})"
                                                for label, gain in rising.items())
          + f": {epochs:g} epochs do not bring these nets to their plateau, so their final "
          "training error is what this budget reaches, not their floor."]


def smoothed_target_cross_entropy(label_smoothing: float, num_classes: int) -> float:
  """The hard-label cross-entropy (nats) of a net that predicts its label-smoothed training
  target exactly, `-ln(1 - eps + eps / K)`: what label smoothing trains the nets towards."""
  return -math.log(1 - label_smoothing + label_smoothing / num_classes)


def _smoothing_floor_line(groups: dict, config) -> list[str]:
  """Where the headline cells' training cross-entropy sits against the smoothed target's."""
  means = [seed_statistics.summarize(values(headline_cell(groups, config, kind, depth)[1],
                                            "train_cross_entropy")).mean
           for kind in KINDS for depth in config.depth.depths]
  means = [m for m in means if not math.isnan(m)]
  if not means:
    return []
  num_classes = get_dataset_info(DATASET).num_classes
  target = smoothed_target_cross_entropy(LABEL_SMOOTHING, num_classes)
  distance = max(abs(m - target) for m in means)
  return [f"- The headline cells' mean training cross-entropy (eval mode) lies in "
          f"{min(means):.4f}-{max(means):.4f} nats, within {distance:.4f} of -ln(1 - "
          f"{LABEL_SMOOTHING:g} + {LABEL_SMOOTHING:g} / {num_classes}) = {target:.4f}, the "
          "cross-entropy of a net that predicts its label-smoothed targets exactly: the "
          "cross-entropy contrasts compare how closely the nets reach that target, not how well "
          "they fit the digits."]


def _finding(rows: list[dict], results: list[dict], groups: dict, config) -> str:
  """What the runs show, computed: whether every headline net fits its training digits, which
  cells had not reached their plateau, the degradation verdicts, and how much gradient reaches
  the stem of the deepest nets."""
  means = {(kind, depth): seed_statistics.summarize(
      values(headline_cell(groups, config, kind, depth)[1], "train_error")).mean
      for kind in KINDS for depth in config.depth.depths}
  finite = [m for m in means.values() if not math.isnan(m)]
  lines = []
  if finite:
    worst = max(means, key=lambda key: -math.inf if math.isnan(means[key]) else means[key])
    lines.append(f"- Largest mean final training error of any headline cell: "
                 f"{100 * means[worst]:.2f}% ({worst[0]}-{worst[1]})." if means[worst] > 0 else
                 "- Final training error 0 in every headline cell, every seed.")
    if max(finite) < 0.01:
      lines.append(f"- Every net fits its {config.depth.train_size:,} training digits (mean "
                   "training error below 1% at every depth, plain or residual): degradation in "
                   "training error does not reproduce at this scale, because every depth "
                   "memorizes this few digits (He et al. trained on CIFAR-10's 50,000 "
                   "images).")
  lines += _plateau_lines(results, groups, config)
  lines += _smoothing_floor_line(groups, config)
  for row in rows:
    if row["claim"].startswith("degradation") and row["comparison"] is not None:
      a, b = (seed_statistics.summarize(row[key]) for key in ("values_a", "values_b"))
      finite_a, finite_b = (seed_statistics.finite_values(row[key])
                            for key in ("values_a", "values_b"))
      separated = (f"; every {row['b']} seed above every {row['a']} seed (lowest "
                   f"{finite_b.min():.3g} vs highest {finite_a.max():.3g})"
                   if finite_b.min() > finite_a.max() else "")
      lines.append(f"- Degradation on the {METRICS[row['metric']]}: **{row['verdict']}** by "
                   f"Welch ({row['a']} {a.mean:.4g}, {row['b']} {b.mean:.4g}, n = {a.n} / "
                   f"{b.n}, p {seed_statistics.format_p(row['comparison'].p_value)}), "
                   f"**{row['permutation_verdict']}** by the permutation test (p "
                   f"{seed_statistics.format_p(row['permutation'].p_value)}){separated}.")
  deep = max(config.depth.depths)
  norms = {kind: early_gradient_norms(headline_cell(groups, config, kind, deep)[1])
           for kind in KINDS}
  if all(norms.values()):
    lines.append(f"- Early in training the stem of plain-{deep} gets a gradient "
                 f"{norms['plain'][0] / norms['plain'][1]:.3g} times its head's, that of "
                 f"residual-{deep} {norms['residual'][0] / norms['residual'][1]:.3g} times.")
  return "\n".join(lines)


def _schedule_text(settings) -> str:
  """', plain-56 also 160' for each headline cell of `schedule_epochs` (epochs)."""
  parts = []
  for name, lengths in settings.get("schedule_epochs", {}).items():
    kind = next(kind for kind in KINDS if name.startswith(kind))
    parts.append(f", {kind}-{name[len(kind):]} also {' and '.join(f'{e:g}' for e in lengths)}")
  return "".join(parts)


def report(results: list[dict], config, out_dir: str) -> str:
  settings = config.depth
  groups = cells(reported_runs(results, config), config)
  chosen = choose_plain_rates(results, config)
  rows = []
  for (kind, depth, rate), group in sorted(groups.items(),
                                           key=lambda item: (item[0][1], item[0][0], item[0][2])):
    trained = [r for r in group if not r["metrics"].get("diverged")]
    norms = early_gradient_norms(group)
    norms = "–" if norms is None else f"{norms[0]:.3g} / {norms[1]:.3g}"
    rows.append([kind, depth, f"{rate:g}", f"{epochs_of(group, config):g}", len(group),
                 len(group) - len(trained),
                 cell(values(group, "final_train_loss")),
                 cell([100 * v for v in values(group, "train_error")], 2),
                 _partial_cell(group, "train_cross_entropy", 4),
                 _partial_cell(group, "validation_loss", 4),
                 _partial_cell(group, "plateau_gain", 4),
                 cell(values(group, "test_accuracy")), norms])
  tests = depth_tests(results, config)
  he = he_comparison(results, config)
  figures = _against_depth_figure(groups, config, out_dir), _curves_figure(groups, config,
                                                                           out_dir)
  lines = [
      f"Widths {tuple(settings.widths)}, depths {tuple(settings.depths)}, {settings.train_size:,} "
      f"class-balanced training digits per run (drawn with its seed), {settings.num_epochs:g} "
      f"epochs ({num_steps(config)} steps of {config.batch_size})"
      + _schedule_text(settings)
      + " (each headline cell reported at the shortest length that reached its plateau, "
      "else its longest: the stopping-rule check below), no augmentation; loss, "
      f"per-module gradient norms and the scores on a validation split of "
      f"{settings.validation_size} other training digits every {settings.record_every} steps. "
      f"Residual nets train at peak rate {config.learning_rate:g} per 256 examples. Plain nets: "
      f"on seeds {tuple(settings.rate_sweep_seeds)} at each of the rates "
      f"{', '.join(f'{r:g}' for r in settings.plain_learning_rates)}; the rate with the lowest "
      f"mean final validation loss there is the depth's chosen rate, at which the other "
      f"{len(settings.seeds) - len(settings.rate_sweep_seeds)} seeds train"
      + (" (a one-seed choice, to fit the budget)" if len(settings.rate_sweep_seeds) == 1
         else "") + ". The final "
      "training error and cross-entropy are measured in eval mode on the training digits (He et "
      "al.'s Figure 6 plots training error); the final training loss is the mean of the last "
      "three training-loss records (train mode, label smoothing 0.1, whose floor is about "
      "0.50 nats). 'Plateau gain': the validation accuracy's rise over the last quarter of "
      "training (near 0: converged)."
      + (" Runs finished before the validation split was recorded have no eval-mode "
         "cross-entropy, validation loss or plateau gain: those cells give n."
         if any("validation_loss" not in r["metrics"] and not r["metrics"].get("diverged")
                for r in results) else ""), "",
      "Rate choice for the plain nets (final validation loss on the validation split, seeds "
      f"{tuple(settings.rate_sweep_seeds)}, {settings.num_epochs:g} epochs):", "",
      _rate_choice_table(cells(at_num_epochs(results), config), config, chosen), "",
      markdown_table(["network", "depth", "peak rate", "epochs", "seeds", "diverged",
                      "final training loss", "final training error (%)",
                      "training cross-entropy (eval)", "validation loss", "plateau gain",
                      "test accuracy", "grad norm stem / head (early)"], rows), "",
      f"![training error and loss against depth]({figures[0]})", "",
      f"Figure: final training error and cross-entropy (eval mode), final training loss "
      f"(train mode) and test error against depth, the "
      f"plain nets at their chosen rates and the residual nets (`{figures[0]}`).", "",
      "Tests (alpha 0.05) of He et al.'s claims on these cells: Welch's t test, and a "
      "permutation test of the difference of means (no normality assumed):", "",
      _tests_table(tests), "",
      "What the runs show (computed):", "",
      _finding(tests, results, groups, config), ""]
  if he is not None:
    (theirs_a, theirs_b), (shallow, deep) = he["published"], he["depths"]
    a, b = (seed_statistics.summarize(he[key]) for key in ("values_a", "values_b"))
    comparison = he["comparison"]
    lines += [
        f"He et al.'s Table 6 (from `experiments/published.py`): ResNet-{shallow} "
        f"{100 * theirs_a.value:.2f}% and ResNet-{deep} {100 * theirs_b.value:.2f}% test error "
        f"on CIFAR-10, so the deeper residual net should have the "
        f"{'lower' if he['expected_sign'] < 0 else 'higher'} test error. Ours on the digits: "
        f"residual-{shallow} {100 * a.mean:.2f}% and residual-{deep} {100 * b.mean:.2f}% "
        + ("(too few seeds to test)." if comparison is None else
           f"(Welch p {seed_statistics.format_p(comparison.p_value)}): "
           f"**{he['verdict']}**.") + " The levels differ (another dataset and scale); only "
        "the direction is compared.", ""]
  lines += [f"![loss curves and gradient norms]({figures[1]})", "",
            f"Figure: training loss per step (mean over seeds) and the per-module gradient "
            f"norm early in training (stem to head) of the same cells (`{figures[1]}`)."]
  return "\n".join(lines)
