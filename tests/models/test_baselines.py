"""Tests of cnn_jax/models/baselines.py: the small CNN, the MLP, matched parameter budgets."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn_jax import ops
from cnn_jax.models import CNN, MLP, get_model, mlp_param_count, mlp_width_for_params
from cnn_jax.models.inspect import count_params, model_receptive_field, param_shapes
from cnn_jax.ops.arithmetic import conv_params, fully_connected_params, output_size


def _init(model, shape):
  x = jax.random.uniform(jax.random.key(1), shape)
  return jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), x), x


def test_default_cnn_is_the_classic_mnist_cnn():
  # conv32 3x3 -> conv64 3x3 -> pool 2 -> fc128 -> fc10 on 28x28x1, 'valid' padding.
  side = output_size(output_size(28, 3), 3) // 2
  expected = (conv_params((3, 3), 1, 32) + conv_params((3, 3), 32, 64)
              + fully_connected_params(side * side * 64, 128) + fully_connected_params(128, 10))
  assert count_params(param_shapes(get_model("cnn"), (1, 28, 28, 1))) == expected == 1_199_882


@pytest.mark.parametrize("size", [28, 32])
@pytest.mark.parametrize("head", ["flatten", "global_avg"])
@pytest.mark.parametrize("padding", ["valid", "same", "circular"])
def test_cnn_output_shapes(size, head, padding):
  model = CNN(num_classes=7, head=head, padding=padding, features=(4, 8), pool_after=(True, True))
  x = jax.ShapeDtypeStruct((3, size, size, 1), jnp.float32)
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  assert logits.shape == (3, 7) and logits.dtype == jnp.float32


def test_cnn_global_average_head_parameter_count_does_not_depend_on_input_size():
  model = CNN(head="global_avg")
  counts = {count_params(param_shapes(model, (1, size, size, 1))) for size in (28, 40)}
  flatten_counts = {count_params(param_shapes(CNN(), (1, size, size, 1))) for size in (28, 40)}
  assert len(counts) == 1 and len(flatten_counts) == 2


def test_cnn_sows_every_stage_in_forward_order(sown_layer_names):
  model = CNN(features=(4, 8, 8), kernel_sizes=(3, 3, 3), pool_after=(True, False, True),
              hidden=(16, 16), dropout_rates=(0.0, 0.1, 0.2))
  names = sown_layer_names(model, (2, 16, 16, 1))
  assert names == ["conv1", "pool1", "conv2", "conv3", "pool2", "fc1", "fc2", "logits"]


def test_cnn_act_reaches_every_activation():
  model = CNN(features=(4, 8), hidden=(16,))
  variables, x = _init(model, (2, 12, 12, 1))
  calls = []
  counting = model.clone(act=lambda h: calls.append(h.shape) or jax.nn.relu(h))
  jax.eval_shape(lambda v, x: counting.apply(v, x, train=False), variables, x)
  assert len(calls) == 3
  mlp = MLP(widths=(8, 8, 8))
  variables, x = _init(mlp, (2, 6, 6, 1))
  zeroed = jax.jit(lambda v, x: mlp.clone(act=jnp.zeros_like).apply(v, x, train=False))(
      variables, x)
  np.testing.assert_allclose(zeroed, jnp.broadcast_to(variables["params"]["Head"]["bias"],
                                                      zeroed.shape))


@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("blur", [False, True])
def test_cnn_receptive_field_equals_gradient_support(pool, blur):
  # Identity activation and average pooling make the network linear (no dead unit, no argmax),
  # so the gradient of one unit reaches exactly its receptive field; max pooling selects one
  # pixel per window, so there the support is at most the field.
  model = CNN(features=(2, 2, 2), kernel_sizes=(5, 3, 3), pool_after=(True, True, False),
              pool=pool, blur=blur, head="global_avg", padding="same", act=lambda h: h,
              hidden=(), dropout_rates=(0.0,))
  variables, x = _init(model, (1, 48, 48, 1))
  x = jax.random.normal(jax.random.key(2), x.shape)

  def centre_unit(x):
    _, state = model.apply(variables, x, train=False, mutable="intermediates")
    last = state["intermediates"]["conv3"][0]
    return last[0, last.shape[1] // 2, last.shape[2] // 2].sum()

  support = np.abs(np.asarray(jax.jit(jax.grad(centre_unit))(x)[0, ..., 0])).sum(axis=1) > 0
  rows = np.flatnonzero(support)
  expected = model_receptive_field(model, x.shape, "conv3").size
  assert rows.min() > 0 and rows.max() < 47
  if pool == "avg":
    assert rows.max() - rows.min() + 1 == expected
  else:
    assert rows.max() - rows.min() + 1 <= expected


def _train_loss_and_gradients(model, variables, x, labels):
  """Cross-entropy of a train-mode pass (dropout on, fixed rng) and its parameter gradients."""
  def loss(params):
    logits = model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(2)})
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))
  return jax.jit(jax.value_and_grad(loss))(variables["params"])


def _assert_train_gradients_equal_the_reference(lowering, seed, **fields):
  reference = CNN(hidden=(16,), lowering="xla", **fields)
  variables, x = _init(reference, (4, 28, 28, 1))
  x = jax.random.normal(jax.random.key(seed), x.shape)
  labels = jax.random.randint(jax.random.key(seed + 1), (4,), 0, 10)
  expected = _train_loss_and_gradients(reference, variables, x, labels)
  actual = _train_loss_and_gradients(reference.clone(lowering=lowering), variables, x, labels)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-5)


# 'onednn' where its extension is built and loads (cnn_jax.ops.onednn).
ALTERNATIVE_LOWERINGS = tuple(
    name for name in ops.lowering.available_lowerings() if name != "xla")


@pytest.mark.parametrize("lowering", ALTERNATIVE_LOWERINGS)
def test_mnist_cnn_train_gradients_do_not_depend_on_the_lowering(lowering):
  # On CPU 'auto' tiles the kernel gradient of both conv layers and pools through switches.
  _assert_train_gradients_equal_the_reference(lowering, seed=0)


# Each example compiles two train steps (about 5 s).
@pytest.mark.slow
@settings(max_examples=10, deadline=None)
@given(lowering=st.sampled_from(ALTERNATIVE_LOWERINGS),
       padding=st.sampled_from(("valid", "same", "circular")), pool=st.sampled_from(("max", "avg")),
       blur=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_cnn_train_gradients_do_not_depend_on_the_lowering(lowering, padding, pool, blur, seed):
  _assert_train_gradients_equal_the_reference(lowering, seed, padding=padding, pool=pool,
                                              blur=blur)


def test_cnn_parameters_do_not_depend_on_the_lowering():
  shapes = {name: param_shapes(CNN(lowering=name), (1, 28, 28, 1))
            for name in ops.lowering.available_lowerings()}
  assert shapes["auto"] == shapes["tiled"] == shapes["xla"]


def test_mlp_output_shape_and_parameter_count():
  model = MLP(num_classes=10, widths=(100, 50))
  params = param_shapes(model, (1, 28, 28, 1))
  assert count_params(params) == mlp_param_count(784, (100, 50), 10) == (
      785 * 100 + 101 * 50 + 51 * 10)


@given(num_params=st.integers(2_000, 5_000_000), input_dim=st.integers(1, 4000),
       num_classes=st.integers(2, 100), depth=st.integers(1, 4))
def test_mlp_width_for_params_is_the_closest_width(num_params, input_dim, num_classes, depth):
  width = mlp_width_for_params(num_params, input_dim, num_classes, depth)
  distance = lambda w: abs(mlp_param_count(input_dim, (w,) * depth, num_classes) - num_params)
  assert width >= 1
  assert distance(width) <= distance(width + 1)
  assert width == 1 or distance(width) <= distance(width - 1)


def test_mlp_matched_to_the_cnn_budget_has_about_as_many_parameters():
  cnn_count = count_params(param_shapes(get_model("cnn"), (1, 28, 28, 1)))
  width = mlp_width_for_params(cnn_count, 784, 10, depth=2)
  mlp_count = count_params(param_shapes(MLP(widths=(width, width)), (1, 28, 28, 1)))
  assert abs(mlp_count - cnn_count) < 2 * width


def test_strided_cnn_replaces_each_pool_by_a_stride_two_conv_with_the_same_parameters():
  # The sweep's SMALL_CNN: 5x5 'same' convs at 16 and 32 channels, each followed by a 2x2 pool.
  fields = dict(features=(16, 32), kernel_sizes=(5, 5), pool_after=(True, True), padding="same")
  pooled, strided = CNN(**fields), CNN(**fields, downsample="stride")
  expected = (conv_params((5, 5), 1, 16) + conv_params((5, 5), 16, 32)
              + fully_connected_params(7 * 7 * 32, 128) + fully_connected_params(128, 10))
  for model in (pooled, strided):
    assert count_params(param_shapes(model, (1, 28, 28, 1))) == expected == 215_370
  variables, x = _init(strided, (2, 28, 28, 1))
  _, state = strided.apply(variables, x, train=False, mutable="intermediates")
  shapes = {name: value[0].shape for name, value in state["intermediates"].items()}
  assert shapes["conv1"] == (2, 14, 14, 16) and shapes["conv2"] == (2, 7, 7, 32)
  assert not any(name.startswith("pool") for name in shapes)
  # conv1 at stride 2 is conv1 at stride 1 read at every other pixel ('same' at stride 2 on 28
  # pixels pads (1, 2)).
  conv1 = variables["params"]["Conv1"]
  dense = jax.nn.relu(ops.correlate(x, conv1["kernel"], padding=((1, 2), (1, 2))) + conv1["bias"])
  np.testing.assert_allclose(state["intermediates"]["conv1"][0], dense[:, ::2, ::2],
                             rtol=1e-5, atol=1e-5)  # float32 sums in another order


def test_all_convolutional_cnn_replaces_each_pool_by_a_3x3_stride_two_conv_and_its_activation():
  fields = dict(features=(16, 32), kernel_sizes=(5, 5), pool_after=(True, True), padding="same")
  model = CNN(**fields, downsample="conv")
  expected = (conv_params((5, 5), 1, 16) + conv_params((3, 3), 16, 16) + conv_params((5, 5), 16, 32)
              + conv_params((3, 3), 32, 32) + fully_connected_params(7 * 7 * 32, 128)
              + fully_connected_params(128, 10))
  assert count_params(param_shapes(model, (1, 28, 28, 1))) == expected == 215_370 + 2_320 + 9_248
  variables, x = _init(model, (2, 28, 28, 1))
  _, state = model.apply(variables, x, train=False, mutable="intermediates")
  layers_ = state["intermediates"]
  assert list(layers_) == ["conv1", "down1", "conv2", "down2", "fc1", "logits"]
  assert layers_["down1"][0].shape == (2, 14, 14, 16) and layers_["down2"][0].shape == (2, 7, 7, 32)
  # down1 is a 3x3 'same' conv of conv1 at stride 2 ('same' at stride 2 on 28 pixels pads
  # (0, 1)), then the ReLU.
  down1 = variables["params"]["Down1"]
  expected_down1 = jax.nn.relu(ops.correlate(layers_["conv1"][0], down1["kernel"], stride=2,
                                             padding=((0, 1), (0, 1))) + down1["bias"])
  np.testing.assert_allclose(layers_["down1"][0], expected_down1,
                             rtol=1e-5, atol=1e-5)  # float32 sums in another order
def test_cnn_with_norm_trades_each_conv_bias_for_a_batch_norm_scale_and_bias():
  fields = dict(features=(4, 8, 16), kernel_sizes=(3, 3, 3), pool_after=(True, True, False),
                hidden=(), dropout_rates=(0.0,), head="global_avg", padding="same")
  plain = count_params(param_shapes(CNN(**fields), (1, 28, 28, 1)))
  normalized = param_shapes(CNN(norm=True, **fields), (1, 28, 28, 1))
  # Per conv: -C (the bias) + 2C (scale and bias of the norm).
  assert count_params(normalized) == plain + 4 + 8 + 16
  assert "bias" not in normalized["Conv1"] and normalized["Norm3"]["scale"].shape == (16,)


@settings(max_examples=10, deadline=None)
@given(scale=st.floats(0.3, 10.0), seed=st.integers(0, 2**16))
def test_cnn_with_norm_in_training_ignores_the_scale_of_its_input(scale, seed):
  # Batch statistics remove any positive factor on x (the convs have no bias).
  model = CNN(norm=True, features=(4, 8), kernel_sizes=(3, 3), pool_after=(True, False),
              hidden=(), dropout_rates=(0.0,), head="global_avg", padding="same")
  x = jax.random.uniform(jax.random.key(seed), (8, 12, 12, 1))
  variables = model.init(jax.random.key(0), x, train=False)
  apply = jax.jit(lambda images: model.apply(variables, images, train=True,
                                             mutable=["batch_stats"]))
  (logits, updates), (scaled, _) = apply(x), apply(scale * x)
  # The norm's epsilon 1e-5 against first-layer batch variances >= ~1e-2: < 1e-3 relative.
  np.testing.assert_allclose(scaled, logits, rtol=2e-3, atol=2e-3)
  assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(
      variables["batch_stats"])
  assert not np.allclose(updates["batch_stats"]["Norm1"]["mean"], 0.0)


@pytest.mark.parametrize("fields,match", [
    (dict(features=(4,), kernel_sizes=(3, 3), pool_after=(True,)), "one entry per conv"),
    (dict(dropout_rates=(0.5,)), "dropout_rates"), (dict(pool="median"), "pool"),
    (dict(head="attention"), "head"), (dict(padding="reflect"), "padding"),
    (dict(downsample="dilate"), "downsample must be one of"),
    (dict(downsample="stride", blur=True), "downsample='stride' has none"),
    (dict(downsample="conv", blur=True), "downsample='conv' has none")])
def test_cnn_bad_fields_raise_value_errors(fields, match):
  with pytest.raises(ValueError, match=match):
    CNN(**fields)


def test_bad_inputs_raise_value_errors():
  with pytest.raises(ValueError, match="num_params"):
    mlp_width_for_params(0, 784, 10)
  with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
    CNN().init(jax.random.key(0), jnp.zeros((28, 28)), train=False)
  with pytest.raises(ValueError, match="float"):
    CNN().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1), jnp.int32), train=False)
  with pytest.raises(ValueError, match="widths"):
    MLP(widths=(0,))
