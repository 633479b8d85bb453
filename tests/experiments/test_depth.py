import numpy as np
import pytest

from experiments import depth
from experiments.configs import exp_sweep


def test_depth_runs_train_on_a_balanced_subset_for_the_configured_epochs():
  config = exp_sweep.get_config()
  assert depth.num_steps(config) == int(np.ceil(
      config.depth.num_epochs * config.depth.train_size / config.batch_size))
  with config.unlocked():
    config.depth.train_size = 1001
  with pytest.raises(ValueError, match="config.depth.train_size must be a multiple of 10"):
    depth.validate(config)
