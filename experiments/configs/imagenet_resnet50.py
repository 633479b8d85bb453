"""ResNet-50 on ImageNet (ILSVRC 2012); the Flax ImageNet example reports 76.6% top-1 this way.

SGD Nesterov momentum 0.9, batch 1024 with learning rate 0.4 (0.1 per 256 examples, the linear
scaling rule of Goyal et al. 2017), 5 warmup epochs then cosine over 90 epochs, weight decay
1e-4, label smoothing 0.1; the input pipeline does the random-resized crop, the device the
horizontal flip. Needs the ImageNet archives in `<data_dir>/downloads/manual` and accelerators.
Same argument string as default.py.
"""

import ml_collections

from cnn_jax.train.configuration import model_config
from experiments.configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.base_config()
  config.dataset = "imagenet2012"
  config.augmentation = "flip"
  config.model = model_config("resnet50")
  config.batch_size = 1024
  config.eval_batch_size = 1024
  config.total_epochs = 90.0
  config.learning_rate = 0.1  # per 256 examples: 0.4 at batch 1024
  config.weight_decay = 1e-4
  config.warmup_epochs = 5.0
  config.label_smoothing = 0.1
  config.log_every_steps = 100
  config.eval_every_epochs = 1.0
  config.keep_checkpoints = 3
  config.prefetch = 4
  return default.apply_argument(config, arg)
