"""Training: state, optimizers, the data-parallel step, checkpoints, metrics and the run loop.

Entry points for other parts of the project:
  `train_and_evaluate(config, workdir) -> summary dict`   the whole run (see loop.py)
  `restore_for_inference(workdir) -> (model, variables, config)`
  `preprocess(images, dataset_info)`   the input normalization the trained models expect
"""

from cnn_jax.train.checkpoint import CheckpointError
from cnn_jax.train.loop import restore_for_inference, train_and_evaluate
from cnn_jax.train.preprocess import preprocess
from cnn_jax.train.state import TrainState, create_train_state

__all__ = ["CheckpointError", "TrainState", "create_train_state", "preprocess",
           "restore_for_inference", "train_and_evaluate"]
