"""Helpers shared by the model tests."""

import functools

import jax
import pytest


def _sown_layer_names(model, x_shape) -> list[str]:
  """The names a model sows into 'intermediates', in the order its layers ran.

  Read inside the trace, where the dict keeps insertion order (jit and eval_shape outputs come back
  with their dict keys sorted). Only shapes are computed.
  """
  x = jax.ShapeDtypeStruct(x_shape, jax.numpy.float32)
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  names = []

  def forward(variables, x):
    names.extend(model.apply(variables, x, train=False, mutable="intermediates")[1][
        "intermediates"])

  jax.eval_shape(forward, variables, x)
  return names


@pytest.fixture
def sown_layer_names():
  """`(model, x_shape) -> [name, ...]`: the sown layer names in forward order."""
  return _sown_layer_names
