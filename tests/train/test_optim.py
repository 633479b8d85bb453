"""Schedules and optimizers built by name from the config."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnn_jax.train import optim


def make_config(**fields):
  config = ml_collections.ConfigDict(dict(
      optimizer="sgd", learning_rate=0.4, batch_size=256, momentum=0.9, nesterov=True,
      weight_decay=1e-3, schedule="cosine", warmup_epochs=2.0, decay_epochs=(5.0, 8.0),
      decay_factor=0.1))
  config.update(fields)
  return config


@given(st.sampled_from(optim.SCHEDULE_NAMES), st.integers(1, 5), st.integers(2, 20))
def test_warmup_rises_linearly_to_the_peak(schedule, warmup_epochs, steps_per_epoch):
  config = make_config(schedule=schedule, warmup_epochs=float(warmup_epochs))
  total = 10 * steps_per_epoch
  rate = optim.build_learning_rate_schedule(config, steps_per_epoch, total)
  warmup_steps = warmup_epochs * steps_per_epoch
  np.testing.assert_allclose(rate(0), 0.0, atol=1e-7)
  np.testing.assert_allclose(rate(warmup_steps // 2), 0.4 * (warmup_steps // 2) / warmup_steps,
                             rtol=1e-5)
  np.testing.assert_allclose(rate(warmup_steps), 0.4, rtol=1e-5)


@given(st.integers(0, 3), st.integers(10, 200), st.floats(0.0, 1.0))
def test_cosine_follows_half_a_cosine_from_the_peak_to_zero(warmup_steps, total, fraction):
  config = make_config(warmup_epochs=float(warmup_steps))
  rate = optim.build_learning_rate_schedule(config, 1, total)
  elapsed = int(fraction * (total - warmup_steps))
  expected = 0.4 * (1 + np.cos(np.pi * elapsed / (total - warmup_steps))) / 2
  np.testing.assert_allclose(rate(warmup_steps + elapsed), expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(rate(total), 0.0, atol=1e-6)


def test_piecewise_multiplies_the_rate_at_each_boundary():
  config = make_config(schedule="piecewise", warmup_epochs=1.0)
  rate = optim.build_learning_rate_schedule(config, 10, 100)
  np.testing.assert_allclose([rate(49), rate(50), rate(79), rate(80), rate(99)],
                             [0.4, 0.04, 0.04, 0.004, 0.004], rtol=1e-5)


def test_the_peak_rate_is_per_256_examples_and_scales_with_the_batch():
  rate = optim.build_learning_rate_schedule(make_config(batch_size=64, schedule="constant",
                                                        warmup_epochs=0.0), 10, 100)
  np.testing.assert_allclose(rate(50), 0.4 * 64 / 256, rtol=1e-6)


@pytest.mark.parametrize("field, value, message", [
    ("optimizer", "rmsprop", "config.optimizer must be one of .*'rmsprop'"),
    ("schedule", "linear", "config.schedule must be one of .*'linear'"),
    ("learning_rate", 0.0, "config.learning_rate must be > 0, got 0.0"),
    ("weight_decay", -1.0, "config.weight_decay must be >= 0"),
])
def test_invalid_optimizer_fields_are_refused_by_name(field, value, message):
  with pytest.raises(ValueError, match=message):
    optim.validate_optimizer_config(make_config(**{field: value}))


@pytest.mark.parametrize("name", optim.OPTIMIZER_NAMES)
def test_weight_decay_shrinks_kernels_but_not_biases(name):
  # With a zero gradient, only weight decay moves the parameters.
  config = make_config(optimizer=name, weight_decay=0.5)
  optimizer = optim.build_optimizer(config, lambda step: 0.1)
  params = {"kernel": jnp.ones((3, 3)), "bias": jnp.ones((3,))}
  updates, _ = optimizer.update(
      {"kernel": jnp.zeros((3, 3)), "bias": jnp.zeros((3,))}, optimizer.init(params), params)
  assert np.all(np.asarray(updates["kernel"]) < 0)
  np.testing.assert_array_equal(updates["bias"], 0.0)
