"""A 3-conv CNN on the offline digits whose last conv sees 18x18 pixels: the model of the
README's Deconvnet figure (`docs/deconvnet.png`; 98.1% test accuracy after 8 epochs).

  python launch.py --config=experiments/configs/mnist_cnn3.py --workdir=runs/cnn3
  python experiments/visualize.py --workdir=runs/cnn3 --layer=conv3

Same argument string as default.py.
"""

import ml_collections

from cnn_jax.train.configuration import model_config
from experiments.configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.base_config()
  # 'same' padding and a third conv after two pools: receptive field 18 instead of the default's 5.
  config.model = model_config("cnn", features=(32, 64, 64), kernel_sizes=(3, 3, 3),
                              pool_after=(True, True, False), padding="same", hidden=(128,))
  config.total_epochs = 8.0
  return default.apply_argument(config, arg)
