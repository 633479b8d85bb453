"""ResNet-20 on CIFAR-10 with the schedule of He et al. 2016 (Sec. 4.2): 8.75% error reported.

SGD momentum 0.9, weight decay 1e-4, batch 128, learning rate 0.1 (0.2 per 256 examples) divided
by 10 at 32k and 48k iterations, 64k iterations in all (~164 epochs of 390 steps), 4-pixel crop
+ horizontal flip. Same argument string as default.py.
"""

import ml_collections

from cnn_jax.train.configuration import model_config
from experiments.configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.base_config()
  config.dataset = "cifar10"
  config.augmentation = "crop=4,flip"
  config.model = model_config("resnet20")
  config.batch_size = 128
  config.eval_batch_size = 1000
  config.total_epochs = 164.0
  config.learning_rate = 0.2  # per 256 examples: 0.1 at batch 128
  config.nesterov = False
  config.weight_decay = 1e-4
  config.schedule = "piecewise"
  config.warmup_epochs = 0.0
  config.decay_epochs = (82.0, 123.0)  # 32k and 48k iterations
  config.label_smoothing = 0.0
  config.log_every_steps = 100
  config.eval_every_epochs = 10.0
  return default.apply_argument(config, arg)
