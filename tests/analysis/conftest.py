"""Small networks with known symmetry, written with `cnn_jax.ops` so the metrics are tested
without depending on `cnn_jax.models`: `features_fn(images) -> [(name, activation), ...]`, the
last entry being the logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from cnn_jax.ops import correlate, global_avg_pool


def make_conv_net(key, *, stride=1, padding="circular", channels=(4, 6), num_classes=5,
                  activation=jax.nn.relu, global_pool=True, image_shape=(12, 12, 1)):
  """A 3x3 conv stack (bias-free, so zero images give zero features) with a linear head.

  With stride 1, circular padding and global pooling it is exactly equivariant layer by layer and
  invariant at the output under circular shifts.
  """
  keys = jax.random.split(key, len(channels) + 1)
  kernels, channels_in = [], image_shape[-1]
  for layer_key, channels_out in zip(keys, channels):
    kernels.append(jax.random.normal(layer_key, (3, 3, channels_in, channels_out))
                   / jnp.sqrt(9.0 * channels_in))
    channels_in = channels_out
  if global_pool:
    head_inputs = channels_in
  else:
    size = image_shape[0] // stride ** len(channels)
    head_inputs = size * size * channels_in
  head = jax.random.normal(keys[-1], (head_inputs, num_classes)) / jnp.sqrt(head_inputs)

  names = [f"conv{index}" for index in range(len(kernels))] + ["pooled", "logits"]

  @jax.jit
  def activations(images):
    values, x = [], images
    for kernel in kernels:
      x = activation(correlate(x, kernel, stride=stride, padding=padding))
      values.append(x)
    x = global_avg_pool(x) if global_pool else x.reshape(x.shape[0], -1)
    return values + [x, x @ head]

  def features_fn(images):
    return list(zip(names, activations(images)))

  return features_fn, jax.jit(lambda images: activations(images)[-1])


@pytest.fixture
def images():
  return jax.random.normal(jax.random.PRNGKey(0), (16, 12, 12, 1))


@pytest.fixture
def centred_images():
  """Random content in the middle 6x6, zeros in a 3-pixel border: small shifts lose nothing."""
  content = jax.random.normal(jax.random.PRNGKey(1), (16, 6, 6, 1))
  return jnp.pad(content, ((0, 0), (3, 3), (3, 3), (0, 0)))


@pytest.fixture
def conv_net():
  """The factory `make_conv_net(key, **options) -> (features_fn, apply_fn)`."""
  return make_conv_net
