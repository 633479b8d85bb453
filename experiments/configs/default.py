"""The default run: the small CNN of the seed notes on the 5,000 offline MNIST digits.

`get_config(arg)` takes an optional argument string of comma-separated items, each `key=value`
or the flag `smoke`:

  model=<name>          a `cnn_jax.models` name ('cnn', 'mlp', 'resnet20', ...); other models
                        than 'cnn' start without model_overrides
  dataset=<name>        a `cnn_jax.data` dataset name
  aug=<spec>            augmentation spec, with '+' where the spec has commas:
                        aug=crop=4+flip means "crop=4,flip"; aug= (empty) for none
  epochs=<float>        training length in epochs
  batch=<int>           global batch size
  parallelism=<name>    'pmap' or 'shard_map'
  smoke                 shrink everything (tiny model, a few steps) for tests

e.g. `python launch.py --config=experiments/configs/default.py:model=cnn,smoke --workdir=/tmp/r`.
Any field can also be set with absl's `--config.<field>=<value>`.
"""

import ml_collections

ARGUMENT_KEYS = ("model", "dataset", "aug", "epochs", "batch", "parallelism")
FLAGS = ("smoke",)


def parse_argument(arg: str | None) -> dict:
  """`"model=cnn,aug=crop=2+flip,smoke"` -> `{'model': 'cnn', 'aug': 'crop=2,flip', 'smoke': True}`.

  Raises ValueError for items that are neither a known key=value nor a known flag.
  """
  parsed = {}
  for item in filter(None, (arg or "").split(",")):
    key, has_value, value = item.partition("=")
    if not has_value:
      if key not in FLAGS:
        raise ValueError(f"config argument item {item!r} is neither key=value with a key in "
                         f"{ARGUMENT_KEYS} nor a flag in {FLAGS} (argument {arg!r})")
      parsed[key] = True
    elif key in ARGUMENT_KEYS:
      parsed[key] = value.replace("+", ",") if key == "aug" else value
    else:
      raise ValueError(f"config argument key {key!r} is not one of {ARGUMENT_KEYS} "
                       f"(argument {arg!r})")
  return parsed


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The default config, changed by the items of `arg` (see the module docstring)."""
  return apply_argument(base_config(), arg)


def base_config() -> ml_collections.ConfigDict:
  """The default run's config, before any argument: variants start from this."""
  config = ml_collections.ConfigDict()

  config.dataset = "mnist_offline"  # a cnn_jax.data dataset name
  config.data_dir = ""  # TFDS data directory; '' for TFDS's default
  config.image_size = 0  # side of the square input images; 0 for the dataset's own size
  config.augmentation = "crop=2,rotate=10"  # cnn_jax.data.augment spec, run on device; '' none

  config.model = "cnn"  # a cnn_jax.models name, built with get_model(model, **model_overrides)
  # Keyword arguments of get_model. Half the classic conv widths (32, 64): 2.3x the images/s
  # on 2 CPU cores, and the same ~98% on the offline digits with augmentation.
  config.model_overrides = ml_collections.ConfigDict({
      "features": (16, 32), "hidden": (128,)})

  config.batch_size = 128  # global batch, split over all devices (and hosts)
  config.eval_batch_size = 500  # global batch of the test-set pass
  config.num_epochs = 15.0  # training length, used when num_train_steps <= 0
  config.num_train_steps = -1  # training length in steps; <= 0 to use num_epochs

  config.optimizer = "sgd"  # 'sgd' (momentum) or 'adamw'
  config.learning_rate = 0.05  # peak learning rate, reached after the warmup
  config.momentum = 0.9  # SGD momentum; Adam's beta_1 for 'adamw'
  config.nesterov = True  # Nesterov momentum (SGD only)
  config.weight_decay = 5e-4  # on kernels only: L2 for SGD, decoupled for AdamW
  config.schedule = "cosine"  # 'cosine', 'piecewise' or 'constant', after a linear warmup
  config.warmup_epochs = 1.0  # linear warmup length from 0 to learning_rate
  config.decay_epochs = (30.0, 60.0, 80.0)  # 'piecewise': epochs where the rate is multiplied
  config.decay_factor = 0.1  # 'piecewise': the factor at each of decay_epochs
  config.label_smoothing = 0.1  # eps: targets (1 - eps) onehot + eps / num_classes

  config.parallelism = "pmap"  # 'pmap' or 'shard_map': how the step is mapped over devices
  config.seed = 0  # seeds the initialization, the data order and all step randomness
  config.log_every_steps = 20  # train metrics are averaged and written every this many steps
  config.eval_every_steps = 62  # evaluate on the test split and checkpoint (and at the end)
  config.keep_checkpoints = 2  # the latest checkpoints kept (the best one is kept as well)
  config.prefetch = 2  # batches prepared ahead by the input pipeline
  return config


def apply_argument(config: ml_collections.ConfigDict,
                   arg: str | None) -> ml_collections.ConfigDict:
  """`config` changed by the items of the argument string `arg` (smoke mode last)."""
  options = parse_argument(arg)
  if "model" in options and options["model"] != config.model:
    config.model = options["model"]
    config.model_overrides = ml_collections.ConfigDict()
  if "dataset" in options:
    config.dataset = options["dataset"]
  if "aug" in options:
    config.augmentation = options["aug"]
  if "epochs" in options:
    config.num_epochs = float(options["epochs"])
  if "batch" in options:
    config.batch_size = int(options["batch"])
  if "parallelism" in options:
    config.parallelism = options["parallelism"]
  if options.get("smoke"):
    apply_smoke(config)
  return config


def apply_smoke(config: ml_collections.ConfigDict) -> None:
  """Shrinks `config` in place to a run of seconds: a tiny model and 6 steps."""
  if config.model == "cnn":
    config.model_overrides = ml_collections.ConfigDict({"features": (4, 8), "hidden": (16,)})
  config.batch_size = 32
  config.eval_batch_size = 200
  config.num_train_steps = 6
  config.warmup_epochs = 0.0
  config.log_every_steps = 2
  config.eval_every_steps = 3
