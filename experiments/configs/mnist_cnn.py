"""The classic MNIST CNN (conv32-conv64-pool-fc128, dropout) on the full 60,000-digit MNIST.

Needs the TFDS 'mnist' download (network, once). Same argument string as default.py.
"""

import ml_collections

from experiments.configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.base_config()
  config.dataset = "mnist"
  config.model_overrides = ml_collections.ConfigDict()  # the CNN's own (classic) widths
  config.num_epochs = 6.0
  config.eval_every_steps = 468  # one epoch of 60,000 / 128
  return default.apply_argument(config, arg)
