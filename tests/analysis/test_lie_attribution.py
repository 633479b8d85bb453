"""Gruver et al.'s layerwise split of the Lie derivative, against the chain rule done by hand."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax.analysis.lie_attribution import lie_attribution
from cnn_jax.analysis.lie_derivative import rotation, translation, warp_features, warp_images
from cnn_jax.ops import correlate, global_avg_pool


def position_mask(shape) -> jax.Array:
  """A fixed ramp over the rows: multiplying by it is not translation-equivariant."""
  return jnp.linspace(0.5, 1.5, shape[1])[None, :, None, None]


def flat_or_mean(x, flatten: bool) -> jax.Array:
  return x.reshape(x.shape[0], -1) if flatten else global_avg_pool(x)


class RecordedNet(nn.Module):
  """conv0 -> act -> conv1 (stride `stride`) -> act [-> x position mask] -> global mean (or
  with `flatten` the flattened map: not invariant) -> dense.

  Every layer is recorded with `perturb` + `sow`, as `cnn_jax.models` records its layers.
  """
  stride: int = 1
  masked: bool = False
  flatten: bool = False
  act: Callable = jnp.tanh

  def record(self, name, x):
    x = self.perturb(name, x)
    self.sow("intermediates", name, x)
    return x

  @nn.compact
  def __call__(self, x):
    kernel0 = self.param("kernel0", nn.initializers.lecun_normal(), (3, 3, 1, 4))
    kernel1 = self.param("kernel1", nn.initializers.lecun_normal(), (3, 3, 4, 6))
    x = self.record("conv0", self.act(correlate(x, kernel0, padding="circular")))
    x = self.act(correlate(x, kernel1, stride=self.stride, padding="circular"))
    x = self.record("conv1", x * position_mask(x.shape) if self.masked else x)
    x = self.record("pooled", flat_or_mean(x, self.flatten))
    return self.record("logits", nn.Dense(5, name="head")(x))


def by_hand_terms(net: RecordedNet, params, images, transformation):
  """`J_{>k} L(f_k)` from the layers as explicit functions: the definition, no perturbations."""
  head = lambda pooled: pooled @ params["head"]["kernel"] + params["head"]["bias"]
  conv0 = lambda x: net.act(correlate(x, params["kernel0"], padding="circular"))

  def conv1(h):
    y = net.act(correlate(h, params["kernel1"], stride=net.stride, padding="circular"))
    return y * position_mask(y.shape) if net.masked else y

  layers = [conv0, conv1, lambda h: flat_or_mean(h, net.flatten), head]
  input_size = images.shape[1]

  def action(k, h, t):  # T^k_t on the input (k = 0) or on layer k's output
    if k == 0:
      return warp_images(h, transformation, t)
    if h.ndim != 4:
      return h
    scale = input_size / h.shape[1] if transformation.scales_with_stride else 1.0
    return warp_features(h, transformation.matrix(t / scale))

  activations = [images]
  for layer in layers:
    activations.append(layer(activations[-1]))
  zero, one = jnp.float32(0.0), jnp.float32(1.0)
  terms = []
  for k, layer in enumerate(layers, start=1):
    _, own = jax.jvp(lambda t: action(k, layer(action(k - 1, activations[k - 1], t)), -t),
                     (zero,), (one,))
    above = lambda h: _compose(layers[k:], h)
    terms.append(jax.jvp(above, (activations[k],), (own,))[1])
  return terms


def _compose(layers, h):
  for layer in layers:
    h = layer(h)
  return h


@pytest.fixture
def centred_images():
  content = jax.random.uniform(jax.random.PRNGKey(3), (6, 8, 8, 1))
  return jnp.pad(content, ((0, 0), (4, 4), (4, 4), (0, 0)))


@pytest.mark.parametrize("stride, masked, flatten, transformation", [
    (1, False, False, translation("horizontal")), (2, True, False, translation("vertical")),
    (2, False, True, translation("horizontal")), (2, False, False, rotation())])
def test_each_term_is_the_layers_own_lie_derivative_carried_to_the_output(
    centred_images, stride, masked, flatten, transformation):
  net = RecordedNet(stride=stride, masked=masked, flatten=flatten)
  variables = net.init(jax.random.PRNGKey(0), centred_images)
  attribution = lie_attribution(net, variables, centred_images, transformation)
  expected = by_hand_terms(net, variables["params"], centred_images, transformation)
  assert [name for name, _ in attribution.terms] == ["conv0", "conv1", "pooled", "logits"]
  for (name, term), hand in zip(attribution.terms, expected):
    np.testing.assert_allclose(term, hand, rtol=1e-4, atol=1e-5, err_msg=name)
  np.testing.assert_allclose(sum(term for _, term in attribution.terms), attribution.total,
                             rtol=1e-4, atol=1e-5)


def test_the_violation_is_attributed_to_the_layer_that_introduces_it(centred_images):
  # A linear circular stride-1 stack on zero-bordered images is equivariant under the bilinear
  # warp (its one-sided difference is a convolution too) and the global mean is invariant: only
  # the position mask after conv1 breaks translation invariance.
  linear = dict(act=lambda x: x)
  variables = RecordedNet(**linear).init(jax.random.PRNGKey(1), centred_images)
  equivariant = lie_attribution(RecordedNet(**linear), variables, centred_images,
                                translation("horizontal"))
  masked = lie_attribution(RecordedNet(masked=True, **linear), variables, centred_images,
                           translation("vertical"))
  assert float(jnp.max(jnp.abs(equivariant.total))) < 1e-5
  shares = {c.name: c.share for c in masked.contributions()}
  assert float(jnp.mean(jnp.abs(masked.total))) > 1e-3
  assert shares["conv1"] > 0.99, shares


def test_a_model_that_records_no_perturbation_is_rejected(centred_images):

  class SownOnly(nn.Module):

    @nn.compact
    def __call__(self, x):
      self.sow("intermediates", "input", x)
      return nn.Dense(3)(x.reshape(x.shape[0], -1))

  variables = SownOnly().init(jax.random.PRNGKey(0), centred_images)
  with pytest.raises(ValueError, match="perturb"):
    lie_attribution(SownOnly(), variables, centred_images, translation())
