"""Training: state, optimizers, the data-parallel step, checkpoints, metrics and the run loop.

Entry points for other parts of the project:
  `train_and_evaluate(config, workdir) -> summary dict`   the whole run (see loop.py)
  `setup`, `initial_state`, `train`, `evaluate`, `finish`   its pieces, for other data sources
  `restore_for_inference(workdir) -> (model, variables, config)`
  `preprocess(images, dataset_info)`   the input normalization the trained models expect
  `configuration`   config conventions: `model_config`, `parse_arg`, `to_steps`
"""

from cnn_jax.train import configuration
from cnn_jax.train.checkpoint import CheckpointError
from cnn_jax.train.loop import (Trainer, build_model, evaluate, finish, initial_state,
                                restore_for_inference, setup, train, train_and_evaluate,
                                with_axis_name)
from cnn_jax.train.preprocess import preprocess
from cnn_jax.train.state import TrainState, create_train_state

__all__ = ["CheckpointError", "Trainer", "TrainState", "build_model", "configuration",
           "create_train_state", "evaluate", "finish", "initial_state", "preprocess",
           "restore_for_inference", "setup", "train", "train_and_evaluate", "with_axis_name"]
