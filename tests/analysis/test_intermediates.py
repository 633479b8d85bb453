import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnn_jax.analysis.intermediates import intermediates_in_order, model_features_fn


class SowingStack(nn.Module):
  """Twelve dense layers sown as 'layer1' .. 'layer12', one name sown twice inside a block."""

  @nn.compact
  def __call__(self, x, train):
    x = x.reshape(x.shape[0], -1)
    for index in range(1, 13):
      x = nn.Dense(3)(x)
      self.sow("intermediates", f"layer{index}", x)
    block = Block()
    return nn.Dense(2)(block(x))


class Block(nn.Module):

  @nn.compact
  def __call__(self, x):
    self.sow("intermediates", "twice", x)
    self.sow("intermediates", "twice", 2 * x)
    return x


def test_layers_come_in_forward_order_not_sorted_order():
  model = SowingStack()
  images = jnp.ones((2, 4, 4, 1))
  variables = model.init(jax.random.PRNGKey(0), images, train=False)
  layers = model_features_fn(model, variables)(images)
  names = [name for name, _ in layers]
  assert names == [f"layer{i}" for i in range(1, 13)] + ["Block_0/twice#0", "Block_0/twice#1",
                                                          "logits"]
  np.testing.assert_allclose(layers[-2][1], 2 * layers[-3][1])
  # The features come from one jitted program, model.apply runs eagerly: XLA may fuse or reorder
  # the 13 dense layers' float32 sums (FMA or not, CPU-dependent), a few ulps (6e-8) per layer.
  np.testing.assert_allclose(layers[-1][1], model.apply(variables, images, train=False),
                             rtol=1e-5, atol=1e-6)


def test_plain_arrays_keep_their_path():
  assert intermediates_in_order({"a": {"b": jnp.zeros(1)}})[0][0] == "a/b"
