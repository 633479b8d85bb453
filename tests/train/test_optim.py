"""Schedules and optimizers built by name from the config."""

import math

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
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


# Two steps of each optimizer against the formulas of optax's documentation, in NumPy, on the
# loss 0.5 ||p - TARGET||^2 (gradient p - TARGET); weight decay reaches the kernel only.
PARAMS = {"kernel": np.array([[1.0, -2.0], [0.5, 3.0]], np.float32),
          "bias": np.array([0.25, -1.0], np.float32)}
TARGET = {"kernel": np.array([[0.0, 1.0], [-1.0, 2.0]], np.float32),
          "bias": np.array([1.0, 0.0], np.float32)}

# (schedule fields, steps per epoch, total steps, the rates of steps 0 and 1 by hand)
SCHEDULES = {
    "cosine": (dict(schedule="cosine", warmup_epochs=0.0), 1, 4,
               (0.4, 0.4 * (1 + math.cos(math.pi / 4)) / 2)),
    "piecewise": (dict(schedule="piecewise", warmup_epochs=0.0, decay_epochs=(1.0,),
                       decay_factor=0.1), 1, 4, (0.4, 0.04)),
    "constant_after_warmup": (dict(schedule="constant", warmup_epochs=1.0), 4, 8, (0.0, 0.1)),
}


def two_steps(config, steps_per_epoch, total_steps):
  schedule = optim.build_learning_rate_schedule(config, steps_per_epoch, total_steps)
  optimizer = optim.build_optimizer(config, schedule)
  params = {name: jnp.asarray(value) for name, value in PARAMS.items()}
  state = optimizer.init(params)
  for _ in range(2):
    grads = {name: params[name] - TARGET[name] for name in params}
    updates, state = optimizer.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params


def sgd_by_hand(rates, momentum, nesterov, weight_decay):
  """optax.sgd: t_k = d_k + mu t_(k-1); update -eta_k (d_k + mu t_k) (Nesterov) or -eta_k t_k,
  with d_k = grad + lambda p (kernels) from `add_decayed_weights` before it."""
  params = {name: value.astype(np.float64) for name, value in PARAMS.items()}
  trace = {name: 0.0 for name in params}
  for rate in rates:
    for name in params:
      direction = params[name] - TARGET[name] + (weight_decay * params[name]
                                                 if name == "kernel" else 0.0)
      trace[name] = direction + momentum * trace[name]
      step = direction + momentum * trace[name] if nesterov else trace[name]
      params[name] = params[name] - rate * step
  return params


def adamw_by_hand(rates, b1, weight_decay, b2=0.999, eps=1e-8):
  """optax.adamw: m, v the decayed moments, bias-corrected by 1 - b^(k+1); update
  -eta_k (m_hat / (sqrt(v_hat) + eps) + lambda p) with the decay on kernels only (decoupled)."""
  params = {name: value.astype(np.float64) for name, value in PARAMS.items()}
  first = {name: 0.0 for name in params}
  second = {name: 0.0 for name in params}
  for k, rate in enumerate(rates, start=1):
    for name in params:
      grad = params[name] - TARGET[name]
      first[name] = b1 * first[name] + (1 - b1) * grad
      second[name] = b2 * second[name] + (1 - b2) * grad ** 2
      adam = (first[name] / (1 - b1 ** k)) / (np.sqrt(second[name] / (1 - b2 ** k)) + eps)
      decay = weight_decay * params[name] if name == "kernel" else 0.0
      params[name] = params[name] - rate * (adam + decay)
  return params


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("nesterov", [True, False])
def test_sgd_takes_two_steps_of_the_documented_momentum_update(schedule, nesterov):
  fields, steps_per_epoch, total_steps, rates = SCHEDULES[schedule]
  config = make_config(momentum=0.8, nesterov=nesterov, weight_decay=0.1, **fields)
  actual = two_steps(config, steps_per_epoch, total_steps)
  expected = sgd_by_hand(rates, momentum=0.8, nesterov=nesterov, weight_decay=0.1)
  for name in PARAMS:  # rtol: a dozen float32 operations on numbers of order 1
    np.testing.assert_allclose(actual[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_adamw_takes_two_steps_of_the_documented_decoupled_update(schedule):
  fields, steps_per_epoch, total_steps, rates = SCHEDULES[schedule]
  config = make_config(optimizer="adamw", momentum=0.8, weight_decay=0.1, **fields)
  actual = two_steps(config, steps_per_epoch, total_steps)
  expected = adamw_by_hand(rates, b1=0.8, weight_decay=0.1)
  # rtol: optax's bias correction 1 - b2^k in float32 cancels: eps_32 / (1 - 0.999^2) = 3e-5.
  for name in PARAMS:
    np.testing.assert_allclose(actual[name], expected[name], rtol=1e-4, atol=1e-6, err_msg=name)
