"""Deconvnet, guided backprop and saliency as one VJP with three ReLU backward rules."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnn_jax.models import get_model
from cnn_jax.ops import conv_transpose, correlate, max_pool_with_switches, max_unpool
from cnn_jax.viz import projection
from cnn_jax.viz.projection import METHODS, project, relu_with_backward_rule

signed_floats = st.floats(-3, 3, allow_nan=False, width=32).filter(lambda v: abs(v) > 1e-3)


def relu_vjp(method, x, upstream):
  _, pullback = jax.vjp(relu_with_backward_rule(method), x)
  return pullback(upstream)[0]


@given(st.lists(st.tuples(signed_floats, signed_floats), min_size=12, max_size=12))
def test_relu_backward_rules_are_the_papers_rules(pairs):
  x, upstream = jnp.array(pairs, jnp.float32).T
  np.testing.assert_array_equal(relu_vjp("saliency", x, upstream), upstream * (x > 0))
  np.testing.assert_array_equal(relu_vjp("deconvnet", x, upstream), np.maximum(upstream, 0))
  np.testing.assert_array_equal(relu_vjp("guided_backprop", x, upstream),
                                upstream * (x > 0) * (upstream > 0))
  np.testing.assert_array_equal(relu_with_backward_rule("deconvnet")(x), np.maximum(x, 0))


@given(st.lists(st.tuples(signed_floats, signed_floats), min_size=12, max_size=12))
def test_relu_rules_agree_exactly_where_their_conditions_agree(pairs):
  # guided = saliency where the upstream signal is positive, guided = deconvnet where the forward
  # input is positive; elsewhere they differ exactly where the dropped factor is not 1.
  x, upstream = jnp.array(pairs, jnp.float32).T
  saliency, deconvnet, guided = (relu_vjp(m, x, upstream)
                                 for m in ("saliency", "deconvnet", "guided_backprop"))
  np.testing.assert_array_equal(saliency == guided, (upstream > 0) | (x <= 0))
  np.testing.assert_array_equal(deconvnet == guided, (x > 0) | (upstream <= 0))
  np.testing.assert_array_equal(saliency == deconvnet,
                                ((x > 0) & (upstream > 0)) | ((x <= 0) & (upstream <= 0)))


def test_relu_rule_rejects_an_unknown_method():
  with pytest.raises(ValueError, match="method must be one of"):
    relu_with_backward_rule("lrp")


@jax.jit
def hand_written_deconvnet(images, params, channel_map):
  """Zeiler & Fergus by hand for two conv-ReLU-maxpool blocks: forward with recorded switches,
  then per block in reverse unpool -> rectify -> filter with the transposed kernel.

  `channel_map` picks the channel: the feature map keeps `pool1 * channel_map` at each image's
  strongest unit of that channel and zeros elsewhere. Returns (reconstruction, positions).
  """
  relu0 = jax.nn.relu(correlate(images, params["kernel0"], padding="same", bias=params["bias0"]))
  pool0, switches0 = max_pool_with_switches(relu0, 2)
  relu1 = jax.nn.relu(correlate(pool0, params["kernel1"], padding="same", bias=params["bias1"]))
  pool1, switches1 = max_pool_with_switches(relu1, 2)
  chosen = (pool1 * channel_map).sum(axis=-1).reshape(len(images), -1)
  strongest = chosen.argmax(axis=1)
  onehot = jax.nn.one_hot(strongest, chosen.shape[1]).reshape(pool1.shape[:-1] + (1,))
  feature_map = pool1 * channel_map * onehot
  signal = max_unpool(feature_map, switches1, relu1.shape[1:3])
  signal = conv_transpose(jax.nn.relu(signal), params["kernel1"], padding="same",
                          input_shape=pool0.shape)
  signal = max_unpool(signal, switches0, relu0.shape[1:3])
  reconstruction = conv_transpose(jax.nn.relu(signal), params["kernel0"], padding="same",
                                  input_shape=images.shape)
  return reconstruction, jnp.stack(jnp.unravel_index(strongest, pool1.shape[1:3]), axis=1)


def test_deconvnet_of_conv_relu_pool_blocks_equals_the_hand_written_reconstruction(conv_stack):
  model, variables, images = conv_stack(blocks=((3, 4, 1, "same", 2), (3, 5, 1, "same", 2)))
  channel = 3
  projections, positions = project(model, variables, images, "pool1", channel)
  reconstruction, expected_positions = hand_written_deconvnet(
      images, variables["params"], jax.nn.one_hot(channel, 5))
  np.testing.assert_array_equal(positions, expected_positions)
  assert np.abs(reconstruction).max() > 0
  np.testing.assert_allclose(projections, reconstruction, rtol=1e-5, atol=1e-6)


class LinearStack(nn.Module):
  """conv -> avg pool -> strided conv, no nonlinearity (its `act` is never called)."""
  act: object = nn.relu

  @nn.compact
  def __call__(self, x, train=False):
    del train
    k0 = self.param("k0", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], 4))
    k1 = self.param("k1", nn.initializers.lecun_normal(), (3, 3, 4, 3))
    h = correlate(x, k0, padding="same")
    h = jax.lax.reduce_window(h, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4
    out = correlate(h, k1, stride=2)
    self.sow("intermediates", "out", out)
    return out


@settings(max_examples=4, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), channel=st.integers(0, 2), method=st.sampled_from(METHODS))
def test_every_method_equals_the_gradient_for_a_linear_network(init_variables, seed, channel,
                                                              method):
  model = LinearStack()
  images = np.random.default_rng(seed).normal(size=(2, 12, 12, 3)).astype(np.float32)
  variables = init_variables(model, images, seed)
  position = (1, 0)
  projections, _ = project(model, variables, images, "out", channel, position, method=method)

  def unit(image):
    return model.apply(variables, image[None])[0, position[0], position[1], channel]

  expected = jax.jit(jax.vmap(lambda image: unit(image) * jax.grad(unit)(image)))(images)
  np.testing.assert_allclose(projections, expected, rtol=1e-4, atol=1e-6)


def three_projections(model, variables, images, layer="conv1", channel=1):
  return [np.asarray(project(model, variables, images, layer, channel, method=m)[0])
          for m in ("saliency", "deconvnet", "guided_backprop")]


def test_deconvnet_equals_guided_backprop_when_every_relu_input_is_positive(conv_stack):
  # [x > 0] = 1 everywhere: guided = g [g > 0] = relu(g) = deconvnet, but not saliency = g.
  model, variables, images = conv_stack(
      blocks=((3, 4, 1, "same", 0), (3, 5, 1, "same", 0)),
      bias_mean=100.0)
  assert np.all(projection.intermediates(model, variables, images)["conv0"] > 0)
  saliency, deconvnet, guided = three_projections(model, variables, images)
  np.testing.assert_allclose(deconvnet, guided, atol=1e-6)
  assert not np.allclose(saliency, guided, atol=1e-3)


def test_saliency_equals_guided_backprop_when_every_upstream_signal_is_positive(conv_stack):
  # Nonnegative weights after the first ReLU keep g >= 0: guided = g [x > 0] = saliency, while
  # the deconvnet passes g where x <= 0 too.
  model, variables, images = conv_stack(blocks=((3, 4, 1, "same", 0), (3, 5, 1, "same", 0)))
  params = dict(variables["params"])
  params["kernel1"] = jnp.abs(params["kernel1"])
  variables = {"params": params}
  saliency, deconvnet, guided = three_projections(model, variables, images)
  np.testing.assert_allclose(saliency, guided, atol=1e-6)
  assert not np.allclose(deconvnet, guided, atol=1e-3)


def test_all_three_methods_differ_when_both_signs_occur(conv_stack):
  # No pooling after the ReLU: a max pool's switches pick positive ReLU outputs (x > 0), where
  # the deconvnet and guided rules agree, unless a whole window is zero.
  model, variables, images = conv_stack(blocks=((3, 4, 1, "same", 0), (3, 5, 1, "same", 0)))
  saliency, deconvnet, guided = three_projections(model, variables, images)
  for first, second in ((saliency, deconvnet), (saliency, guided), (deconvnet, guided)):
    assert not np.allclose(first, second, atol=1e-3)


def test_given_position_is_projected_for_every_image(conv_stack):
  model, variables, images = conv_stack()
  projections, positions = project(model, variables, images, "relu1", 0, position=(2, 1))
  np.testing.assert_array_equal(positions, [[2, 1]] * len(images))
  assert projections.shape == images.shape


@pytest.mark.parametrize("arguments, message", [
    (dict(layer="conv9"), "layer must be one of"),
    (dict(channel=5), r"channel must be an int in \[0, 5\)"),
    (dict(position=(0, 9)), "position must lie in"),
    (dict(position=(0,)), "position must have shape"),
    (dict(method="occlusion"), "method must be one of"),
])
def test_project_rejects_bad_arguments(conv_stack, arguments, message):
  model, variables, images = conv_stack()
  call = dict(layer="relu1", channel=0) | arguments
  with pytest.raises(ValueError, match=message):
    project(model, variables, images, **call)


def test_saliency_of_a_models_dense_unit_is_its_value_times_its_gradient(init_variables):
  model = get_model("cnn", features=(4, 8), hidden=(16,))
  images = np.random.default_rng(0).normal(size=(2, 28, 28, 1)).astype(np.float32)
  variables = init_variables(model, images)
  activation = projection.intermediates(model, variables, images)["fc1"]
  channel = int(np.argmax(activation[0]))
  projections, positions = project(model, variables, images, "fc1", channel, method="saliency")
  assert positions.shape == (2, 0)

  def unit(image):
    return projection.intermediates(model, variables, image[None])["fc1"][0, channel]

  expected = jax.jit(jax.vmap(lambda image: unit(image) * jax.grad(unit)(image)))(images)
  np.testing.assert_allclose(projections, expected, rtol=1e-4, atol=1e-6)
