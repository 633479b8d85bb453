"""The classic MNIST CNN (conv32-conv64-pool-fc128, dropout) on the full 60,000-digit MNIST.

Needs the TFDS 'mnist' download (network, once). Same argument string as default.py.
"""

import ml_collections

from cnn_jax.train.configuration import model_config
from experiments.configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.base_config()
  config.dataset = "mnist"
  config.model = model_config("cnn")  # the CNN's own (classic) widths
  config.total_epochs = 6.0
  config.eval_every_epochs = 1.0
  return default.apply_argument(config, arg)
