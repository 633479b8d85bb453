"""The train state: a step-0 state from the model's initializer and the optimizer's."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnn_jax.train.state import TrainState, create_train_state


class TinyNet(nn.Module):

  @nn.compact
  def __call__(self, x, train: bool):
    return nn.Dense(3)(x.reshape(x.shape[0], -1))


def test_a_new_state_is_at_step_0_with_fresh_parameters_and_optimizer_state():
  optimizer = optax.sgd(0.1, momentum=0.9)
  state = create_train_state(TinyNet(), optimizer, jax.random.key(0), (2, 2, 1))
  assert isinstance(state, TrainState)
  assert state.step.dtype == jnp.int32 and int(state.step) == 0
  expected = TinyNet().init(jax.random.key(0), jnp.zeros((1, 2, 2, 1)), train=False)["params"]
  assert jax.tree.map(jnp.shape, state.params) == {"Dense_0": {"kernel": (4, 3), "bias": (3,)}}
  for actual, initial in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(actual, initial, rtol=1e-6)  # jit vs eager initializer
  assert state.batch_stats == {}
  assert jax.tree.structure(state.opt_state) == jax.tree.structure(optimizer.init(expected))
  assert all(not np.any(leaf) for leaf in jax.tree.leaves(state.opt_state))  # zero momentum
  assert state.variables == {"params": state.params, "batch_stats": {}}
