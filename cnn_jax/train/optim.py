"""Optimizers and learning-rate schedules, built from the config by name with optax.

Schedules (step t, T total steps, W warmup steps, peak rate eta = learning_rate x batch / 256):
  'cosine'     linear warmup 0 -> eta over W steps, then `eta (1 + cos(pi (t - W) / (T - W))) / 2`.
  'piecewise'  linear warmup, then eta multiplied by `decay_factor` at every boundary in
               `decay_epochs` (the step schedule of He et al. 2016).
  'constant'   linear warmup, then eta.
Optimizers: 'sgd' (heavy-ball or Nesterov momentum, L2 weight decay added to the gradient) and
'adamw' (decoupled weight decay, Loshchilov & Hutter 2019). Weight decay applies to kernels only
(parameters with 2 or more axes), not to biases or batch-norm scales, as is usual for CNNs.
"""

from __future__ import annotations

import jax
import optax

from cnn_jax.train import configuration

OPTIMIZER_NAMES = ("sgd", "adamw")
SCHEDULE_NAMES = ("cosine", "piecewise", "constant")


def validate_optimizer_config(config) -> None:
  """Raises ValueError if the optimizer or schedule fields of `config` are not usable."""
  if config.optimizer not in OPTIMIZER_NAMES:
    raise ValueError(f"config.optimizer must be one of {OPTIMIZER_NAMES}, got "
                     f"{config.optimizer!r}")
  if config.schedule not in SCHEDULE_NAMES:
    raise ValueError(f"config.schedule must be one of {SCHEDULE_NAMES}, got {config.schedule!r}")
  if not config.learning_rate > 0:
    raise ValueError(f"config.learning_rate must be > 0, got {config.learning_rate!r}")
  if config.weight_decay < 0:
    raise ValueError(f"config.weight_decay must be >= 0, got {config.weight_decay!r}")
  for name in ("warmup_epochs", "warmup_steps"):
    if (config.get(name) or 0) < 0:
      raise ValueError(f"config.{name} must be >= 0, got {config[name]!r}")


def peak_learning_rate(config) -> float:
  """`config.learning_rate * config.batch_size / 256`: the rate is given per 256 examples and
  scaled linearly with the global batch (Goyal et al. 2017)."""
  return config.learning_rate * config.batch_size / 256


def build_learning_rate_schedule(config, steps_per_epoch: int,
                                 total_steps: int) -> optax.Schedule:
  """The learning rate at each step, `t -> eta_t`, as described in the module docstring.

  `eta = peak_learning_rate(config)`; the warmup and the decay boundaries are durations in steps
  or epochs (`configuration.to_steps`).
  """
  warmup_steps = min(configuration.to_steps(config, "warmup", steps_per_epoch) or 0,
                     max(total_steps - 1, 0))
  peak = peak_learning_rate(config)
  if config.schedule == "cosine":
    after_warmup = optax.cosine_decay_schedule(peak, max(total_steps - warmup_steps, 1))
  elif config.schedule == "piecewise":
    boundaries = configuration.to_steps(config, "decay", steps_per_epoch) or ()
    after_warmup = optax.piecewise_constant_schedule(peak, {
        boundary - warmup_steps: config.decay_factor
        for boundary in boundaries if boundary > warmup_steps})
  else:
    after_warmup = optax.constant_schedule(peak)
  if warmup_steps == 0:
    return after_warmup
  warmup = optax.linear_schedule(0.0, peak, warmup_steps)
  return optax.join_schedules([warmup, after_warmup], [warmup_steps])


def _is_kernel(params):
  return jax.tree.map(lambda p: p.ndim > 1, params)


def build_optimizer(config, learning_rate: optax.Schedule) -> optax.GradientTransformation:
  """The optax transformation named by `config.optimizer`, following `learning_rate`."""
  if config.optimizer == "sgd":
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay, mask=_is_kernel),
        optax.sgd(learning_rate, momentum=config.momentum, nesterov=config.nesterov))
  return optax.adamw(learning_rate, b1=config.momentum, weight_decay=config.weight_decay,
                     mask=_is_kernel)


def freeze(optimizer: optax.GradientTransformation,
           modules: tuple[str, ...]) -> optax.GradientTransformation:
  """`optimizer` for every top-level module of the parameters but `modules`, whose updates are
  zero (no weight decay either): they stay as they were initialized or restored."""
  if not modules:
    return optimizer
  label = lambda params: {name: jax.tree.map(
      lambda _, name=name: "frozen" if name in modules else "trained", subtree)
                          for name, subtree in params.items()}
  return optax.multi_transform({"trained": optimizer, "frozen": optax.set_to_zero()}, label)
