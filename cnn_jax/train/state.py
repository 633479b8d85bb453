"""The training state: everything a step reads and writes, as one pytree of arrays.

`TrainState(step, params, batch_stats, opt_state)` holds arrays only (no functions), so the same
value can be replicated across devices, donated to a jitted step, and saved by orbax as plain
host arrays that restore on any device count. The model and the optimizer live beside it, in the
step function's closure.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
  """Parameters, batch-norm statistics and optimizer state at a given step.

  Attributes:
    step: int32 scalar, the number of optimizer updates applied so far.
    params: the model's 'params' collection.
    batch_stats: the model's 'batch_stats' collection ({} for models without batch norm).
    opt_state: the optax state of `params`.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  @property
  def variables(self) -> dict:
    """`{'params': ..., 'batch_stats': ...}`, ready for `model.apply(variables, x, train=False)`."""
    return {"params": self.params, "batch_stats": self.batch_stats}


# jit: initializing eagerly runs every layer op by op, many times slower on CPU. The model and
# shape are static, so runs of the same model in one process compile the initializer once.
@functools.partial(jax.jit, static_argnums=(0, 2))
def _initial_variables(model: nn.Module, key: jax.Array, image_shape: tuple[int, ...]) -> dict:
  return model.init(key, jnp.zeros((1, *image_shape), jnp.float32), train=False)


def create_train_state(model: nn.Module, optimizer: optax.GradientTransformation,
                       key: jax.Array, image_shape: tuple[int, ...]) -> TrainState:
  """Initializes the model on a dummy batch of one image and the optimizer on its parameters.

  Args:
    model: a Linen module with `__call__(x, train: bool)`.
    optimizer: the optax transformation that will update the parameters.
    key: PRNG key for the parameter initializers.
    image_shape: `[H, W, C]` of one input image.

  Returns:
    The state at step 0.
  """
  variables = _initial_variables(model, key, tuple(image_shape))
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}),
                    opt_state=optimizer.init(params))
