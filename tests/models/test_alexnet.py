"""Tests of cnn_jax/models/alexnet.py: parameter counts, the 227 input, the two towers as grouped
convolutions, and the towers on two devices."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from cnn_jax import ops
from cnn_jax.models import AlexNet, apply_on_two_devices, get_model, layers
from cnn_jax.models.inspect import count_params, param_shapes
from cnn_jax.ops.arithmetic import output_size

# 67x67 is the smallest input whose maps survive every layer (conv1 15, pools 7, 3, 1).
SMALL = 67


def _sown_shapes(model, x):
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  logits, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False, mutable="intermediates"), variables, x)
  return logits, {name: value[0].shape for name, value in state["intermediates"].items()}


def test_paper_alexnet_has_60965224_parameters():
  assert count_params(param_shapes(get_model("alexnet"), (1, 227, 227, 3))) == 60_965_224


@pytest.mark.parametrize("size", [224, 160])
def test_torchvision_alexnet_has_61100840_parameters_at_any_input_size(size):
  # The adaptive average pool makes fc6's input 6x6x256 whatever the input size.
  params = param_shapes(get_model("alexnet_torchvision"), (1, size, size, 3))
  assert count_params(params) == 61_100_840


def test_paper_first_layer_tiles_227_not_224():
  with pytest.raises(ValueError, match="remainder"):
    output_size(224, 11, 4, strict=True)
  assert output_size(227, 11, 4, strict=True) == 55
  model = get_model("alexnet")
  _, shapes = _sown_shapes(model, jnp.zeros((1, 227, 227, 3)))
  assert (shapes["conv1"][1], shapes["pool5"][1]) == (55, 6)
  assert param_shapes(model, (1, 227, 227, 3))["Fc6"]["kernel"].shape == (6 * 6 * 256, 4096)
  # At 224 conv1 would drop the last 3 rows and columns (and fc6 get 5 * 5 * 256 inputs): refused.
  with pytest.raises(ValueError, match="does not tile a 224-pixel input.*227x227"):
    _sown_shapes(model, jnp.zeros((1, 224, 224, 3)))


def test_paper_alexnet_maps_follow_the_paper_figure():
  logits, shapes = _sown_shapes(get_model("alexnet"), jnp.zeros((2, 227, 227, 3)))
  assert logits.shape == (2, 1000) and logits.dtype == jnp.float32
  assert shapes["conv1"] == (2, 55, 55, 96)
  assert shapes["pool1"] == (2, 27, 27, 96)
  assert shapes["conv2"] == (2, 27, 27, 256)
  assert shapes["pool2"] == (2, 13, 13, 256)
  assert shapes["conv5"] == (2, 13, 13, 256)
  assert shapes["pool5"] == (2, 6, 6, 256)


def test_sown_intermediates_are_in_forward_order(sown_layer_names):
  names = sown_layer_names(get_model("alexnet"), (1, 227, 227, 3))
  assert names == ["conv1", "norm1", "pool1", "conv2", "norm2", "pool2", "conv3", "conv4",
                   "conv5", "pool5", "fc6", "fc7", "logits"]


def test_paper_alexnet_grouped_layers_have_half_the_input_channels():
  params = param_shapes(get_model("alexnet"), (1, 227, 227, 3))
  assert params["Conv2"]["kernel"].shape == (5, 5, 48, 256)
  assert params["Conv3"]["kernel"].shape == (3, 3, 256, 384)
  assert params["Conv4"]["kernel"].shape == (3, 3, 192, 384)
  assert params["Conv5"]["kernel"].shape == (3, 3, 192, 256)


# Spatial size of every sown map: the plain models, and where circular padding with blur differs.
PLAIN_MAP_SIZES = {
    "alexnet": dict(conv1=55, norm1=55, pool1=27, conv2=27, norm2=27, pool2=13, conv3=13,
                    conv4=13, conv5=13, pool5=6),
    "alexnet_torchvision": dict(conv1=55, pool1=27, conv2=27, pool2=13, conv3=13, conv4=13,
                                conv5=13, pool5=6, avgpool=6),
}
# Circular conv1 takes the 'same' amounts: ceil(227 / 2) = 114, blurred to 57 (AlexNet), whose
# pool1 is ceil((57 - 2) / 2) = 28; torchvision's ceil(224 / 2) = 112 -> 56, pooled to 27.
CIRCULAR_BLUR_SIZES = {
    "alexnet": dict(conv1=57, norm1=57, pool1=28, conv2=28, norm2=28),
    "alexnet_torchvision": dict(conv1=56),
}


@pytest.mark.parametrize("name,size", [("alexnet", 227), ("alexnet_torchvision", 224)])
@pytest.mark.parametrize("padding", ["same", "circular"])
def test_blur_keeps_every_map_shape(name, size, padding):
  x = jnp.zeros((1, size, size, 3))
  plain = _sown_shapes(get_model(name, padding="same"), x)[1]
  blurred = _sown_shapes(get_model(name, blur=True, padding=padding), x)[1]
  assert {layer: shape[1] for layer, shape in plain.items() if len(shape) == 4} == (
      PLAIN_MAP_SIZES[name])
  expected = dict(PLAIN_MAP_SIZES[name], **(CIRCULAR_BLUR_SIZES[name]
                                            if padding == "circular" else {}))
  assert blurred.keys() == plain.keys()
  for layer, shape in plain.items():
    spatial = (expected[layer],) * 2 if len(shape) == 4 else ()
    assert blurred[layer] == (1, *spatial, shape[-1]), layer


def _two_half_networks(params, x):
  """The paper's figure 2 by hand: two towers, each with half of every layer's kernels, which
  exchange activations only at conv3, fc6, fc7 and fc8."""
  def half(layer, tower):
    kernel, bias = params[layer]["kernel"], params[layer]["bias"]
    width = kernel.shape[-1] // 2
    return kernel[..., tower * width:(tower + 1) * width], bias[tower * width:(tower + 1) * width]

  def conv(h, layer, tower, **options):
    kernel, bias = half(layer, tower)
    return jax.nn.relu(ops.correlate(h, kernel, bias=bias, **options))

  def dense(h, layer, tower):
    kernel, bias = half(layer, tower)
    return h @ kernel + bias

  def normalize_and_pool(h):
    return ops.max_pool(layers.local_response_norm(h), 3, 2)

  both = lambda towers: jnp.concatenate(towers, axis=-1)
  towers = [normalize_and_pool(conv(x, "Conv1", t, stride=4)) for t in (0, 1)]
  towers = [normalize_and_pool(conv(towers[t], "Conv2", t, padding="same")) for t in (0, 1)]
  shared = both(towers)
  towers = [conv(shared, "Conv3", t, padding="same") for t in (0, 1)]
  towers = [conv(towers[t], "Conv4", t, padding="same") for t in (0, 1)]
  towers = [ops.max_pool(conv(towers[t], "Conv5", t, padding="same"), 3, 2) for t in (0, 1)]
  shared = both(towers).reshape(x.shape[0], -1)
  shared = both([jax.nn.relu(dense(shared, "Fc6", t)) for t in (0, 1)])
  shared = both([jax.nn.relu(dense(shared, "Fc7", t)) for t in (0, 1)])
  return both([dense(shared, "Fc8", t) for t in (0, 1)])


@pytest.fixture(scope="module")
def small_alexnet():
  model = get_model("alexnet", num_classes=10, fc_features=64)
  x = jax.random.uniform(jax.random.key(1), (2, SMALL, SMALL, 3))
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), x)
  # The paper's N(0, 0.01) init makes tiny logits; larger weights make the comparison sharper.
  variables = jax.tree.map(lambda p: p * 30.0 if p.ndim > 1 else p, variables)
  return model, variables, x


def test_grouped_alexnet_equals_two_half_networks(small_alexnet):
  model, variables, x = small_alexnet
  grouped = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  by_hand = jax.jit(_two_half_networks)(variables["params"], x)
  assert float(jnp.std(grouped)) > 1e-3
  np.testing.assert_allclose(grouped, by_hand, rtol=2e-4, atol=1e-5 * float(jnp.abs(grouped).max()))


def test_grouped_conv_ignores_the_other_tower():
  # A change in tower 1's half of conv1's output cannot reach tower 0's half of conv2.
  kernel = jax.random.normal(jax.random.key(0), (5, 5, 48, 256))
  h = jax.random.normal(jax.random.key(1), (1, 9, 9, 96))
  h_changed = h.at[..., 48:].add(1.0)
  out = ops.correlate(h, kernel, groups=2, padding="same")
  out_changed = ops.correlate(h_changed, kernel, groups=2, padding="same")
  np.testing.assert_array_equal(out[..., :128], out_changed[..., :128])
  assert not np.allclose(out[..., 128:], out_changed[..., 128:])


def test_towers_on_two_devices_equal_grouped_form(small_alexnet, devices):
  model, variables, x = small_alexnet
  mesh = Mesh(np.array(devices(2)), ("tower",))
  grouped = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  parallel = jax.jit(lambda v, x: apply_on_two_devices(model, v, x, mesh))(variables, x)
  np.testing.assert_allclose(parallel, grouped, rtol=2e-4,
                             atol=1e-5 * float(jnp.abs(grouped).max()))


def test_two_devices_needs_a_tower_axis_of_size_two(small_alexnet, devices):
  model, variables, x = small_alexnet
  mesh = Mesh(np.array(devices(2)), ("batch",))
  with pytest.raises(ValueError, match="tower"):
    apply_on_two_devices(model, variables, x, mesh)


@pytest.mark.parametrize("name", ["alexnet", "alexnet_torchvision"])
def test_act_reaches_every_activation(name):
  model = get_model(name, num_classes=4, fc_features=16)
  x = jax.ShapeDtypeStruct((1, SMALL, SMALL, 3), jnp.float32)
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  calls = []

  def counting_relu(h):
    calls.append(h.shape)
    return nn.relu(h)

  jax.eval_shape(lambda v, x: model.clone(act=counting_relu).apply(v, x, train=False),
                 variables, x)
  assert len(calls) == 7  # five convs, two hidden fc layers


def test_zero_act_leaves_only_the_last_bias(small_alexnet):
  model, variables, x = small_alexnet
  zeroed = jax.jit(lambda v, x: model.clone(act=jnp.zeros_like).apply(v, x, train=False))(
      variables, x)
  np.testing.assert_allclose(zeroed, jnp.broadcast_to(variables["params"]["Fc8"]["bias"],
                                                      zeroed.shape))


def test_dropout_is_active_only_in_training(small_alexnet):
  model, variables, x = small_alexnet
  apply = jax.jit(lambda v, x, key, train: model.apply(v, x, train=train, rngs={"dropout": key}),
                  static_argnums=3)
  eval_a, eval_b = apply(variables, x, jax.random.key(1), False), apply(
      variables, x, jax.random.key(2), False)
  train_a, train_b = apply(variables, x, jax.random.key(1), True), apply(
      variables, x, jax.random.key(2), True)
  np.testing.assert_array_equal(eval_a, eval_b)
  assert not np.allclose(train_a, train_b)


def test_odd_num_classes_is_rejected_for_the_tower_split():
  with pytest.raises(ValueError, match="num_classes"):
    AlexNet(num_classes=999)


def test_too_small_input_raises_value_error():
  model = get_model("alexnet")
  with pytest.raises(ValueError, match="larger than the padded input"):
    jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                   jnp.zeros((1, 35, 35, 3)))  # conv1 tiles 35; a later layer is too big


def test_one_definition_two_layouts_with_their_own_fields_checked():
  assert get_model("alexnet_torchvision").layout == "torchvision"
  with pytest.raises(ValueError, match=r"layout must be one of \('paper', 'torchvision'\)"):
    get_model("alexnet", layout="caffe")
  with pytest.raises(ValueError, match="tower_axis needs a layout with towers"):
    get_model("alexnet_torchvision", tower_axis="tower")
  get_model("alexnet_torchvision", num_classes=999)  # one tower: any number of classes
