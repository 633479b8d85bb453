"""Small models built on `cnn_jax.ops` with an `act` field and sown intermediates, as the models
of `cnn_jax.models` are, so that the visualization tests need nothing trained."""

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import numpy as np
import pytest

from cnn_jax.ops import avg_pool, correlate, max_pool


class ConvStack(nn.Module):
  """`blocks` of conv -> act -> pool; each conv, activation and pool output is sown.

  Attributes:
    blocks: per block `(kernel, features, conv_stride, conv_padding, pool_window)`; pool_window
      0 means no pooling.
    act: the nonlinearity, applied after every conv.
    pool: 'max' or 'avg'.
  """
  blocks: Sequence[tuple[int, int, int, str, int]] = ((3, 4, 1, "same", 2), (3, 5, 1, "valid", 2))
  act: Callable = nn.relu
  pool: str = "max"

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    for index, (kernel, features, stride, padding, window) in enumerate(self.blocks):
      weights = self.param(f"kernel{index}", nn.initializers.lecun_normal(),
                           (kernel, kernel, x.shape[-1], features))
      bias = self.param(f"bias{index}", nn.initializers.zeros_init(), (features,))
      x = correlate(x, weights, stride=stride, padding=padding, bias=bias)
      self.sow("intermediates", f"conv{index}", x)
      x = self.act(x)
      self.sow("intermediates", f"relu{index}", x)
      if window:
        x = (max_pool if self.pool == "max" else avg_pool)(x, window)
        self.sow("intermediates", f"pool{index}", x)
    return x.mean(axis=(1, 2))


def numpy_variables(model, images, seed: int = 0, bias_mean: float = 0.0):
  """Variables of `model` drawn with NumPy: kernels N(0, 1 / fan_in), biases N(bias_mean, 0.1^2).

  Shapes come from `jax.eval_shape(model.init)`, which compiles nothing: JAX's random number
  generators compile once per shape, seconds each on a loaded CPU.
  """
  abstract = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    if len(leaf.shape) == 1:
      return (bias_mean + 0.1 * rng.normal(size=leaf.shape)).astype(np.float32)
    fan_in = np.prod(leaf.shape[:-1])
    return (rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, abstract)


@pytest.fixture
def init_variables():
  """`numpy_variables` as a fixture."""
  return numpy_variables


@pytest.fixture
def conv_stack():
  """`make(seed, image_shape, bias_mean, **fields) -> (model, variables, images)`."""

  def make(seed: int = 0, image_shape=(3, 16, 16, 3), bias_mean: float = 0.0, **fields):
    model = ConvStack(**fields)
    images = np.random.default_rng(seed + 1).normal(size=image_shape).astype(np.float32)
    return model, numpy_variables(model, images, seed, bias_mean), images

  return make
