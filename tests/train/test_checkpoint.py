"""Orbax checkpoints of the host train state: round trip, retention, damage."""

import os

import jax
import ml_collections
import numpy as np
import optax
import pytest

from cnn_jax.train import checkpoint, optim
from cnn_jax.train.state import TrainState


def make_state(step, scale=1.0):
  optimizer = optax.sgd(0.1, momentum=0.9)
  params = {"dense": {"kernel": scale * np.arange(6, dtype=np.float32).reshape(2, 3),
                      "bias": np.zeros(3, np.float32)}}
  batch_stats = {"norm": {"mean": np.full(3, scale, np.float32)}}
  return jax.device_get(TrainState(step=np.int32(step), params=params, batch_stats=batch_stats,
                                   opt_state=optimizer.init(params)))


def test_a_saved_state_restores_bitwise(tmp_path):
  manager = checkpoint.create_checkpoint_manager(str(tmp_path), keep=2)
  state = make_state(7, scale=0.3)
  checkpoint.save_checkpoint(manager, state, {"test_accuracy": 0.5})
  restored = checkpoint.restore_train_state(manager, make_state(0), 7)
  for saved, loaded in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(saved, loaded)
  assert type(restored.opt_state) is type(state.opt_state)


def test_momentum_and_schedule_position_survive_the_round_trip(tmp_path):
  # Three SGD steps of the project's optimizer (Nesterov momentum, warmup + cosine over 10
  # steps): the momentum is non-zero and the schedule is at step 3, both in opt_state.
  config = ml_collections.ConfigDict(dict(
      optimizer="sgd", learning_rate=0.5, batch_size=256, momentum=0.9, nesterov=True,
      weight_decay=1e-2, schedule="cosine", warmup_epochs=1.0))
  optimizer = optim.build_optimizer(config, optim.build_learning_rate_schedule(config, 2, 10))
  state = make_state(0, scale=0.3).replace(opt_state=optimizer.init(make_state(0).params))
  gradient = lambda params: jax.tree.map(lambda p: p - 0.5, params)
  for step in range(1, 4):
    updates, opt_state = optimizer.update(gradient(state.params), state.opt_state, state.params)
    state = jax.device_get(state.replace(step=np.int32(step), opt_state=opt_state,
                                         params=optax.apply_updates(state.params, updates)))
  momentum = optax.tree_utils.tree_get(state.opt_state, "trace")
  assert np.abs(momentum["dense"]["kernel"]).min() > 0.1
  assert optax.tree_utils.tree_get(state.opt_state, "count") == 3

  manager = checkpoint.create_checkpoint_manager(str(tmp_path), keep=2)
  checkpoint.save_checkpoint(manager, state, {"test_accuracy": 0.5})
  template = make_state(0).replace(opt_state=optimizer.init(make_state(0).params))
  restored = checkpoint.restore_train_state(manager, template, 3)
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for saved, loaded in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(saved, loaded)  # stored and read back, no arithmetic
  # The next update from the restored state is the uninterrupted run's.
  next_update = lambda s: optimizer.update(gradient(s.params), s.opt_state, s.params)[0]
  for expected, actual in zip(jax.tree.leaves(next_update(state)),
                              jax.tree.leaves(next_update(restored))):
    np.testing.assert_allclose(actual, expected, rtol=1e-6)  # the same computation twice


def test_the_last_k_and_the_best_checkpoints_are_kept(tmp_path):
  manager = checkpoint.create_checkpoint_manager(str(tmp_path), keep=2)
  for step, accuracy in [(1, 0.5), (2, 0.9), (3, 0.6), (4, 0.7), (5, 0.65)]:
    checkpoint.save_checkpoint(manager, make_state(step), {"test_accuracy": accuracy})
  assert list(manager.all_steps()) == [2, 4, 5]
  assert manager.best_step() == 2


def test_a_corrupt_checkpoint_gives_a_clear_error_naming_it(tmp_path):
  manager = checkpoint.create_checkpoint_manager(str(tmp_path), keep=2)
  checkpoint.save_checkpoint(manager, make_state(3), {"test_accuracy": 0.5})
  for folder, _, files in os.walk(os.path.join(checkpoint.checkpoint_directory(str(tmp_path)),
                                               "3", "default")):
    for name in files:
      with open(os.path.join(folder, name), "wb") as file:
        file.write(b"\x00garbage")
  with pytest.raises(checkpoint.CheckpointError, match=r"checkpoints/3 is corrupt or unreadable"):
    checkpoint.restore_train_state(manager, make_state(0), 3)


def test_a_missing_step_gives_a_clear_error_listing_the_available_ones(tmp_path):
  manager = checkpoint.create_checkpoint_manager(str(tmp_path), keep=2)
  checkpoint.save_checkpoint(manager, make_state(3), {"test_accuracy": 0.5})
  with pytest.raises(checkpoint.CheckpointError, match=r"no checkpoint for step 4 .*\[3\]"):
    checkpoint.restore_train_state(manager, make_state(0), 4)


def test_a_checkpoint_of_another_model_is_refused_with_the_shapes(tmp_path):
  manager = checkpoint.create_checkpoint_manager(str(tmp_path), keep=2)
  checkpoint.save_checkpoint(manager, make_state(3), {"test_accuracy": 0.5})
  other = make_state(0).replace(params={"dense": {"kernel": np.zeros((4, 3), np.float32),
                                                  "bias": np.zeros(3, np.float32)}})
  other = other.replace(opt_state=optax.sgd(0.1, momentum=0.9).init(other.params))
  with pytest.raises(checkpoint.CheckpointError, match=r"saved \(2, 3\), expected \(4, 3\)"):
    checkpoint.restore_train_state(manager, other, 3)


def test_keep_below_one_is_refused(tmp_path):
  with pytest.raises(ValueError, match="keep_checkpoints must be >= 1, got 0"):
    checkpoint.create_checkpoint_manager(str(tmp_path), keep=0)


def test_a_save_interrupted_midway_leaves_the_previous_checkpoint_in_use(tmp_path):
  manager = checkpoint.create_checkpoint_manager(str(tmp_path), keep=2)
  state = make_state(3, scale=0.7)
  checkpoint.save_checkpoint(manager, state, {"test_accuracy": 0.5})
  # What a crash during the save of step 6 leaves: orbax's unfinished temporary directory.
  unfinished = os.path.join(checkpoint.checkpoint_directory(str(tmp_path)),
                            "6.orbax-checkpoint-tmp-1795600000")
  os.makedirs(os.path.join(unfinished, "default"))
  with open(os.path.join(unfinished, "default", "partial"), "wb") as file:
    file.write(b"half a checkpoint")
  reopened = checkpoint.create_checkpoint_manager(str(tmp_path), keep=2)
  assert reopened.latest_step() == 3
  restored = checkpoint.restore_train_state(reopened, make_state(0), 3)
  np.testing.assert_array_equal(restored.params["dense"]["kernel"],
                                state.params["dense"]["kernel"])


def test_garbage_in_a_metrics_file_is_named_by_readers_and_set_aside_by_training(tmp_path):
  manager = checkpoint.create_checkpoint_manager(str(tmp_path), keep=2)
  for step in (1, 2):
    checkpoint.save_checkpoint(manager, make_state(step, scale=step), {"test_accuracy": 0.5})
  metrics_file = os.path.join(checkpoint.checkpoint_directory(str(tmp_path)), "2", "metrics",
                              "metrics")
  with open(metrics_file, "w") as file:
    file.write('{"test_accuracy": 0.5, "state_c')  # a truncated write
  with pytest.raises(checkpoint.CorruptCheckpointError, match="metrics file .*2/metrics"):
    checkpoint.create_checkpoint_manager(str(tmp_path), keep=2, read_only=True)
  manager = checkpoint.create_checkpoint_manager(str(tmp_path), keep=2)
  assert manager.all_steps() == [1]
  assert os.path.isdir(checkpoint.checkpoint_directory(str(tmp_path)) + "/2.corrupt")
  restored = checkpoint.restore_train_state(manager, make_state(0), 1)
  np.testing.assert_array_equal(restored.params["dense"]["kernel"],
                                make_state(1).params["dense"]["kernel"])
