"""The default run: the small CNN of the seed notes on the 5,000 offline MNIST digits.

`get_config(arg)` takes an optional argument string (`cnn_jax.train.configuration.parse_arg`):

  model=<name>   a `cnn_jax.models` name: config.model becomes that model with its own defaults
  smoke          shrink everything (tiny model, 6 steps) for tests

Every field is set with absl's `--config.<field>=<value>`, model fields included
(`--config.model.blur=True`, `--config.model.dtype=bfloat16`), e.g.

  python launch.py --config=experiments/configs/default.py:model=resnet20,smoke \\
      --config.model.padding=circular --config.total_epochs=2 --workdir=/tmp/run

Durations are in epochs or steps (`total_epochs` / `total_steps`, `warmup_*`, `eval_every_*`;
the steps field wins when set); the learning rate is per 256 examples, scaled by the batch size.
"""

import ml_collections
from ml_collections import config_dict

from cnn_jax.train.configuration import model_config, parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The default config, changed by the argument string (see the module docstring)."""
  return apply_argument(base_config(), arg)


def base_config() -> ml_collections.ConfigDict:
  """The default run's config, before any argument: variants start from this."""
  config = ml_collections.ConfigDict()

  config.dataset = "mnist_offline"  # a cnn_jax.data dataset name
  config.data_dir = config_dict.placeholder(str)  # TFDS data directory; None for TFDS's default
  config.image_size = config_dict.placeholder(int)  # square input side; None: the dataset's own
  config.augmentation = "crop=2,rotate=10"  # cnn_jax.data.augment spec, run on device; '' none

  # The model's name and every field of it. Half the classic conv widths (32, 64): 2.3x the
  # images/s on 2 CPU cores, and the same ~98% on the offline digits with augmentation.
  config.model = model_config("cnn", features=(16, 32), hidden=(128,))  # name + its fields

  config.batch_size = 128  # global batch, split over all devices (and hosts)
  config.eval_batch_size = 500  # global batch of the test-set pass
  config.total_epochs = 15.0  # training length in epochs
  config.total_steps = config_dict.placeholder(int)  # training length in steps; wins when set

  config.optimizer = "sgd"  # 'sgd' (momentum) or 'adamw'
  config.learning_rate = 0.1  # peak rate per 256 examples: the run's is x batch_size / 256
  config.momentum = 0.9  # SGD momentum; Adam's beta_1 for 'adamw'
  config.nesterov = True  # Nesterov momentum (SGD only)
  config.weight_decay = 5e-4  # on kernels only: L2 for SGD, decoupled for AdamW
  config.schedule = "cosine"  # 'cosine', 'piecewise' or 'constant', after a linear warmup
  config.warmup_epochs = 1.0  # linear warmup length from 0 to the peak rate
  config.warmup_steps = config_dict.placeholder(int)  # the warmup in steps; wins when set
  config.decay_epochs = (30.0, 60.0, 80.0)  # 'piecewise': epochs where the rate is multiplied
  config.decay_factor = 0.1  # 'piecewise': the factor at each of decay_epochs
  config.label_smoothing = 0.1  # eps: targets (1 - eps) onehot + eps / num_classes
  config.frozen_modules = ()  # top-level modules (e.g. 'Conv1') whose parameters stay as they start

  config.parallelism = "pmap"  # 'pmap' or 'shard_map': how the step is mapped over devices
  config.seed = 0  # seeds the initialization, the data order and all step randomness
  config.prng_impl = config_dict.placeholder(str)  # jax.random key kind ('rbg', ...); None: JAX's
  config.log_every_steps = 20  # train metrics are averaged and written every this many steps
  config.eval_every_epochs = 2.0  # evaluate on the test split and checkpoint (and at the end)
  config.eval_every_steps = config_dict.placeholder(int)  # the eval cadence in steps; wins if set
  config.keep_checkpoints = 2  # the latest checkpoints kept (the best one is kept as well)
  config.divergence_factor = 100.0  # stop (unsaved) if a loss > this * ln(classes): diverged
  config.prefetch = 2  # batches prepared ahead by the input pipeline
  return config


def apply_argument(config: ml_collections.ConfigDict,
                   arg: str | None) -> ml_collections.ConfigDict:
  """`config` changed by the argument string `arg`: the model variant, then smoke mode."""
  options = parse_arg(arg, model=config.model.name, smoke=False)
  if options.model != config.model.name:
    config.model = model_config(options.model)
  if options.smoke:
    apply_smoke(config)
  return config


def apply_smoke(config: ml_collections.ConfigDict) -> None:
  """Shrinks `config` in place to a run of seconds: a tiny model and 6 steps."""
  if config.model.name == "cnn":
    config.model.features = (4, 8)
    config.model.hidden = (16,)
  config.batch_size = 32
  config.eval_batch_size = 200
  config.total_steps = 6
  config.warmup_epochs = 0.0
  config.log_every_steps = 2
  config.eval_every_steps = 3
