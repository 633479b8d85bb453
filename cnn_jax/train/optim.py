"""Optimizers and learning-rate schedules, built from the config by name with optax.

Schedules (step t, T total steps, W warmup steps, peak rate eta):
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
  if config.warmup_epochs < 0:
    raise ValueError(f"config.warmup_epochs must be >= 0, got {config.warmup_epochs!r}")


def build_learning_rate_schedule(config, steps_per_epoch: int,
                                 total_steps: int) -> optax.Schedule:
  """The learning rate at each step, `t -> eta_t`, as described in the module docstring."""
  warmup_steps = min(int(config.warmup_epochs * steps_per_epoch), max(total_steps - 1, 0))
  peak = config.learning_rate
  if config.schedule == "cosine":
    after_warmup = optax.cosine_decay_schedule(peak, max(total_steps - warmup_steps, 1))
  elif config.schedule == "piecewise":
    after_warmup = optax.piecewise_constant_schedule(peak, {
        int(epoch * steps_per_epoch) - warmup_steps: config.decay_factor
        for epoch in config.decay_epochs if int(epoch * steps_per_epoch) > warmup_steps})
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
