"""Tests of cnn_jax/models/resnet.py: parameter counts, shapes, zero-init, batch norm across
devices, plain vs residual gradients, receptive field."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, PartitionSpec

from cnn_jax.models import get_model, resnet
from cnn_jax.models.inspect import count_params, model_receptive_field, param_shapes

TORCHVISION_COUNTS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
                      "resnet101": 44_549_160, "resnet152": 60_192_808}
# He et al. 2016, Table 6 (rounded in the paper).
PAPER_CIFAR_COUNTS = {"resnet20": 0.27e6, "resnet32": 0.46e6, "resnet44": 0.66e6,
                      "resnet56": 0.85e6, "resnet110": 1.7e6}

# A 2-stage CIFAR-style ResNet, small enough to run many times.
TINY = dict(stage_sizes=(1, 1), widths=(4, 8), num_classes=3)


@pytest.mark.parametrize("name", sorted(TORCHVISION_COUNTS))
def test_imagenet_resnet_parameter_count_equals_torchvision(name):
  params = param_shapes(get_model(name), (1, 224, 224, 3))
  assert count_params(params) == TORCHVISION_COUNTS[name]


@pytest.mark.parametrize("name", sorted(PAPER_CIFAR_COUNTS))
def test_cifar_resnet_parameter_count_matches_paper_rounding(name):
  count = count_params(param_shapes(get_model(name), (1, 32, 32, 3)))
  assert abs(count - PAPER_CIFAR_COUNTS[name]) / PAPER_CIFAR_COUNTS[name] < 0.03


def test_cifar_option_a_shortcut_has_no_parameters():
  with_a = count_params(param_shapes(get_model("resnet20"), (1, 32, 32, 3)))
  plain = count_params(param_shapes(get_model("plain20"), (1, 32, 32, 3)))
  with_b = count_params(param_shapes(get_model("resnet20", shortcut="projection"), (1, 32, 32, 3)))
  # Option B adds a 1x1 conv and a BN at the two stage transitions: 16*32 + 2*32 + 32*64 + 2*64.
  assert with_a == plain
  assert with_b - with_a == 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64


@pytest.mark.parametrize("name,size,expected_spatial", [
    ("resnet20", 32, [32, 16, 8]), ("resnet20", 24, [24, 12, 6]),
    ("resnet18", 64, [16, 8, 4, 2]), ("resnet50", 64, [16, 8, 4, 2])])
def test_output_and_block_shapes(name, size, expected_spatial):
  model = get_model(name, num_classes=7)
  x = jnp.zeros((2, size, size, 3))
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  logits, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False, mutable="intermediates"), variables, x)
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  sown = state["intermediates"]
  stages = range(1, len(expected_spatial) + 1)
  assert [sown[f"block{stage}_1"][0].shape[1] for stage in stages] == expected_spatial


def test_cifar_stem_resnet18_keeps_cifar_resolution():
  model = get_model("resnet18", stem="cifar", num_classes=10)
  x = jnp.zeros((1, 32, 32, 3))
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  _, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False, mutable="intermediates"), variables, x)
  assert state["intermediates"]["block4_2"][0].shape == (1, 4, 4, 512)
  assert variables["params"]["StemConv"]["kernel"].shape == (3, 3, 3, 64)


def _sown_names_in_order(model, input_shape):
  """The 'intermediates' names in the order the forward pass sows them (traced, not run)."""
  x = jax.ShapeDtypeStruct(input_shape, jnp.float32)
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  names = []

  def forward(variables, x):
    # Inside the trace the dict keeps insertion order (jit/eval_shape outputs sort dict keys).
    _, state = model.apply(variables, x, train=False, mutable="intermediates")
    names.extend(state["intermediates"])

  jax.eval_shape(forward, variables, x)
  return names


def test_sown_intermediates_are_in_forward_order():
  model = resnet.ResNet(**TINY, block=resnet.BasicBlock, stem="imagenet")
  assert _sown_names_in_order(model, (1, 16, 16, 3)) == [
      "conv1", "pool1", "block1_1", "block2_1", "global_pool", "logits"]


def _block_and_variables(block, zero_init, features, strides, x):
  conv = functools.partial(resnet.layers.Conv, use_bias=False)
  norm = functools.partial(nn.BatchNorm, use_running_average=True)
  module = block(features=features, strides=strides, conv=conv, norm=norm, act=nn.relu,
                 zero_init_last_norm=zero_init)
  return module, module.init(jax.random.key(0), x)


@pytest.mark.parametrize("block,features", [(resnet.BasicBlock, 8), (resnet.BottleneckBlock, 2)])
def test_zero_init_residual_block_is_identity_at_init(block, features):
  # Inputs of a block are outputs of a ReLU, so nonnegative; act(x + 0) = x there.
  x = jax.nn.relu(jax.random.normal(jax.random.key(1), (2, 6, 6, 8)))
  module, variables = _block_and_variables(block, True, features, 1, x)
  np.testing.assert_array_equal(module.apply(variables, x), x)
  module, variables = _block_and_variables(block, False, features, 1, x)
  assert not np.allclose(module.apply(variables, x), x)


def test_zero_init_resnet_residual_branches_contribute_nothing():
  model = get_model("resnet20", stage_sizes=(2, 2), widths=(4, 8), zero_init_residual=True)
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), x)
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  logits = apply(variables, x)

  def scramble(path, leaf):
    # Every conv kernel inside a block: the residual branches' weights.
    names = [str(getattr(entry, "key", entry)) for entry in path]
    inside_branch = names[0].startswith("Block") and names[-1] == "kernel"
    return jax.random.normal(jax.random.key(len(path)), leaf.shape) if inside_branch else leaf

  scrambled = jax.tree_util.tree_map_with_path(scramble, variables["params"])
  scrambled_logits = apply({**variables, "params": scrambled}, x)
  np.testing.assert_allclose(scrambled_logits, logits, rtol=1e-6, atol=1e-6)


def test_zero_init_residual_on_plain_network_is_rejected():
  with pytest.raises(ValueError, match="zero_init_residual"):
    get_model("plain20", zero_init_residual=True)


def test_jit_apply_in_train_and_eval_modes_and_train_updates_batch_stats():
  model = get_model("resnet20", **TINY)
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), x)
  train = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
  evaluate = jax.jit(lambda v, x: model.apply(v, x, train=False))
  logits, updates = train(variables, x)
  assert logits.shape == (4, 3) and evaluate(variables, x).shape == (4, 3)
  old, new = variables["batch_stats"], updates["batch_stats"]
  assert jax.tree.structure(old) == jax.tree.structure(new)
  assert not np.allclose(old["StemNorm"]["mean"], new["StemNorm"]["mean"])
  # Eval mode uses the running statistics: its output differs from the batch-statistics output.
  assert not np.allclose(evaluate(variables, x), logits)


def test_batch_norm_with_axis_name_under_pmap_equals_global_batch(devices):
  devices = devices(4)
  x = jax.random.normal(jax.random.key(1), (8, 8, 8, 3))
  global_model = get_model("resnet20", **TINY)
  variables = global_model.init(jax.random.key(0), x, train=False)
  logits, updates = global_model.apply(variables, x, train=True, mutable=["batch_stats"])

  sharded_model = global_model.clone(axis_name="batch")
  step = jax.pmap(lambda v, x: sharded_model.apply(v, x, train=True, mutable=["batch_stats"]),
                  axis_name="batch", in_axes=(None, 0), devices=devices)
  sharded_logits, sharded_updates = step(variables, x.reshape(4, 2, 8, 8, 3))
  np.testing.assert_allclose(sharded_logits.reshape(8, 3), logits, rtol=1e-4, atol=1e-5)
  for device_stats in range(4):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[device_stats], b, rtol=1e-4, atol=1e-5),
                 sharded_updates["batch_stats"], updates["batch_stats"])


def test_batch_norm_axis_name_under_shard_map_equals_global_batch(devices):
  mesh = Mesh(np.array(devices(4)), ("batch",))
  x = jax.random.normal(jax.random.key(1), (8, 8, 8, 3))
  model = get_model("resnet20", **TINY)
  variables = model.init(jax.random.key(0), x, train=False)
  logits = model.apply(variables, x, train=True, mutable=["batch_stats"])[0]
  sharded_model = model.clone(axis_name="batch")
  step = jax.shard_map(
      lambda v, x: sharded_model.apply(v, x, train=True, mutable=["batch_stats"])[0], mesh=mesh,
      in_specs=(PartitionSpec(), PartitionSpec("batch")), out_specs=PartitionSpec("batch"))
  np.testing.assert_allclose(jax.jit(step)(variables, x), logits, rtol=1e-4, atol=1e-5)


def _stem_to_head_gradient_ratio(name, batch):
  """|dL/d stem kernel| / |dL/d head kernel| at init, train-mode BN, cross-entropy."""
  x, labels = batch
  model = get_model(name)
  variables = model.init(jax.random.key(0), x, train=False)

  def loss(params):
    logits, _ = model.apply({**variables, "params": params}, x, train=True,
                            mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  grads = jax.jit(jax.grad(loss))(variables["params"])
  return float(jnp.linalg.norm(grads["StemConv"]["kernel"])
               / jnp.linalg.norm(grads["Head"]["kernel"]))


def _random_batch(batch_size, size):
  x = jax.random.normal(jax.random.key(1), (batch_size, size, size, 3))
  return x, jax.random.randint(jax.random.key(2), (batch_size,), 0, 10)


@pytest.mark.slow  # 56-layer gradients (about 15 s)
def test_plain_network_first_layer_gradient_explodes_relative_to_resnet():
  # With batch norm in training mode the plain network's gradient does not vanish but grows
  # toward the input (Yang et al. 2019); the shortcuts keep the ResNet's gradient at the scale
  # of the head's. Measured (16 x 32x32, seed 0): resnet20 0.30, plain20 4.5.
  batch = _random_batch(8, 16)
  residual = _stem_to_head_gradient_ratio("resnet20", batch)
  plain = _stem_to_head_gradient_ratio("plain20", batch)
  assert residual < 1.0 < plain
  assert plain > 5 * residual


def _stem_gradient_norm_without_batch_statistics(name, batch):
  """|dL/d stem kernel| at init with batch norm in eval mode (an identity affine map at init)."""
  x, labels = batch
  model = get_model(name)
  variables = model.init(jax.random.key(0), x, train=False)

  def loss(params):
    logits = model.apply({**variables, "params": params}, x, train=False)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  return float(jnp.linalg.norm(jax.jit(jax.grad(loss))(variables["params"])["StemConv"]["kernel"]))


def test_plain_network_first_layer_gradient_vanishes_without_normalization():
  # The seed notes' claim: without shortcuts (and with no normalization statistics to rescale
  # the signal) the gradient reaching the first layer of a deep stack is tiny; the shortcut adds
  # an identity path. Measured (16 x 32x32): resnet20 4.25, plain20 0.036.
  batch = _random_batch(8, 16)
  residual = _stem_gradient_norm_without_batch_statistics("resnet20", batch)
  plain = _stem_gradient_norm_without_batch_statistics("plain20", batch)
  assert plain < residual / 20, (plain, residual)


@pytest.mark.slow
def test_plain56_first_layer_gradient_is_far_from_resnet56():
  # Measured on 16 x 32x32: resnet56 0.51, plain56 2.1e3 (resnet110 0.74, plain110 6.2e6).
  batch = _random_batch(16, 32)
  residual = _stem_to_head_gradient_ratio("resnet56", batch)
  plain = _stem_to_head_gradient_ratio("plain56", batch)
  assert residual < 1.0
  assert plain > 100 * residual


def _empirical_receptive_field(model, size):
  """Rows of the input that affect the centre unit of the last block (linear network)."""
  x = jax.random.normal(jax.random.key(1), (1, size, size, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  last_block = f"block{len(model.stage_sizes)}_{model.stage_sizes[-1]}"

  def centre_unit(x):
    _, state = model.apply(variables, x, train=False, mutable="intermediates")
    features = state["intermediates"][last_block][0]
    return features[0, features.shape[1] // 2, features.shape[2] // 2].sum()

  support = np.abs(np.asarray(jax.jit(jax.grad(centre_unit))(x)[0])).sum(axis=(1, 2)) > 0
  rows = np.flatnonzero(support)
  shape = jax.eval_shape(lambda x: model.apply(variables, x, train=False, mutable="intermediates"),
                         x)[1]["intermediates"][last_block][0].shape
  return rows.max() - rows.min() + 1, rows, shape[1] // 2


@pytest.mark.parametrize("blur", [False, True])
def test_cifar_resnet_receptive_field_equals_gradient_support(blur):
  # Identity activation: the eval-mode network is linear, so no unit is dead and the gradient
  # reaches every input pixel in the receptive field (exact cancellation has probability 0).
  model = get_model("resnet20", stage_sizes=(1, 1, 1), act=lambda x: x, blur=blur, blur_size=3)
  field = model_receptive_field(model, (1, 64, 64, 3))
  measured, rows, centre = _empirical_receptive_field(model, 64)
  assert rows.min() > 0 and rows.max() < 63  # not clipped by the border
  assert measured == field.size
  # The field's centre: strided 'same' convs pad less on the low side than (k - 1) // 2.
  assert field.start + centre * field.jump == (rows.min() + rows.max()) / 2


def test_act_reaches_every_activation():
  model = get_model("resnet20", **TINY)
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  calls = []

  def counting_relu(h):
    calls.append(h.shape)
    return nn.relu(h)

  counted = jax.jit(lambda v, x: model.clone(act=counting_relu).apply(v, x, train=False))
  np.testing.assert_allclose(counted(variables, x), model.apply(variables, x, train=False),
                             rtol=1e-5, atol=1e-6)
  # Counted while tracing: stem + 2 per basic block.
  assert len(calls) == 1 + 2 * sum(TINY["stage_sizes"])
  zeroed = jax.jit(lambda v, x: model.clone(act=jnp.zeros_like).apply(v, x, train=False))(
      variables, x)
  np.testing.assert_allclose(zeroed, jnp.broadcast_to(variables["params"]["Head"]["bias"],
                                                      zeroed.shape))


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model = get_model("resnet20", **TINY, dtype=jnp.bfloat16)
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  _, state = model.apply(variables, x, train=False, mutable="intermediates")
  assert state["intermediates"]["block1_1"][0].dtype == jnp.bfloat16
  logits = model.apply(variables, x, train=False)
  assert logits.dtype == jnp.float32
  full = get_model("resnet20", **TINY).apply(variables, x, train=False)
  np.testing.assert_allclose(logits, full, rtol=0.1, atol=0.1)


def test_circular_padding_makes_stride_one_resnet_equivariant_to_circular_shifts():
  model = get_model("resnet20", stage_sizes=(1,), widths=(4,), num_classes=3, padding="circular")
  x = jax.random.normal(jax.random.key(1), (1, 8, 8, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  block = lambda x: model.apply(variables, x, train=False, mutable="intermediates")[1][
      "intermediates"]["block1_1"][0]
  shifted = jnp.roll(x, (3, 5), axis=(1, 2))
  np.testing.assert_allclose(block(shifted), jnp.roll(block(x), (3, 5), axis=(1, 2)),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding", ["same", "circular"])
def test_blur_resnet_shapes_equal_strided_shapes(padding):
  x = jnp.zeros((1, 64, 64, 3))
  shapes = {}
  for blur in (False, True):
    model = get_model("resnet18", num_classes=5, blur=blur, padding=padding)
    variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
    _, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, mutable="intermediates"), variables, x)
    shapes[blur] = jax.tree.map(lambda s: s.shape, state["intermediates"])
  assert shapes[True] == shapes[False]


@pytest.mark.parametrize("override,match", [
    (dict(stem="tiny"), "stem"), (dict(shortcut="C"), "shortcut"),
    (dict(padding="reflect"), "padding"), (dict(widths=(16, 32)), "stage_sizes")])
def test_bad_fields_raise_value_errors(override, match):
  with pytest.raises(ValueError, match=match):
    get_model("resnet20", **override)


def test_bad_input_shape_raises_value_error():
  model = get_model("resnet20")
  with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
    model.init(jax.random.key(0), jnp.zeros((32, 32, 3)), train=False)


def test_model_with_axis_name_evaluates_without_a_bound_axis():
  # Eval mode uses the running statistics, so no collective runs: the data-parallel model can be
  # evaluated under plain jit.
  model = get_model("resnet20", **TINY)
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  parallel_model = model.clone(axis_name="batch")
  evaluate = lambda m: jax.jit(lambda v, x: m.apply(v, x, train=False))(variables, x)
  np.testing.assert_array_equal(evaluate(parallel_model), evaluate(model))
