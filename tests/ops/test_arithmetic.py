"""Tests of cnn_jax/ops/arithmetic.py: the paper formulas against what the array code does."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, note, settings
from hypothesis import strategies as st

from cnn_jax.ops import (LayerGeometry, ReceptiveField, avg_pool, conv_params, correlate,
                         fully_connected_params, locally_connected_params, max_pool, output_size,
                         receptive_field)

# ---------------------------------------------------------------------------------------------
# output_size.

paddings = st.one_of(st.integers(0, 3), st.tuples(st.integers(0, 3), st.integers(0, 3)))


@given(st.integers(1, 30), st.integers(1, 6), st.integers(1, 4), paddings, st.integers(1, 3))
def test_output_size_is_the_shape_correlate_produces(n, kernel, stride, padding, dilation):
  lo, hi = (padding, padding) if isinstance(padding, int) else padding
  assume(n + lo + hi >= dilation * (kernel - 1) + 1)
  shape = jax.eval_shape(
      lambda x, w: correlate(x, w, stride=stride, padding=[(lo, hi)], kernel_dilation=dilation),
      jax.ShapeDtypeStruct((1, n, 1), jnp.float32),
      jax.ShapeDtypeStruct((kernel, 1, 1), jnp.float32)).shape
  note(f"n {n}, kernel {kernel}, stride {stride}, padding {padding}, dilation {dilation}, "
       f"correlate output {shape}")
  assert output_size(n, kernel, stride, padding, dilation) == shape[1]


@given(st.integers(1, 30), st.integers(1, 5), st.integers(1, 4), paddings)
def test_output_size_is_the_shape_max_pool_produces(n, window, stride, padding):
  pair = (padding, padding) if isinstance(padding, int) else padding
  assume(n + sum(pair) >= window)
  shape = jax.eval_shape(lambda x: max_pool(x, window, stride, [pair]),
                         jax.ShapeDtypeStruct((1, n, 1), jnp.float32)).shape
  assert output_size(n, window, stride, padding) == shape[1], (n, window, stride, padding, shape)


@given(st.integers(1, 10), st.integers(1, 10), st.integers(1, 5))
def test_output_size_reduces_to_the_seed_formula(quotient, kernel, stride):
  """`(N - F) / S + 1` whenever S divides N - F."""
  n = kernel + quotient * stride
  assert output_size(n, kernel, stride) == (n - kernel) // stride + 1 == quotient + 1


@given(st.integers(1, 30), st.integers(1, 6), st.integers(1, 4), paddings, st.integers(1, 3))
def test_strict_output_size_raises_exactly_when_the_last_pixels_are_skipped(
    n, kernel, stride, padding, dilation):
  lo, hi = (padding, padding) if isinstance(padding, int) else padding
  span = dilation * (kernel - 1) + 1
  assume(n + lo + hi >= span)
  # The last window ends on the padded input's last pixel, or some pixels are never visited.
  windows = range(0, n + lo + hi - span + 1, stride)
  tiles = windows[-1] + span == n + lo + hi
  if tiles:
    assert output_size(n, kernel, stride, padding, dilation, strict=True) == len(windows)
  else:
    with pytest.raises(ValueError, match="remainder"):
      output_size(n, kernel, stride, padding, dilation, strict=True)


def test_alexnet_first_layer_tiles_227_but_not_224():
  assert output_size(227, 11, 4, strict=True) == 55
  with pytest.raises(ValueError, match="remainder 1"):
    output_size(224, 11, 4, strict=True)
  assert output_size(224, 11, 4, padding=2) == 55  # torchvision's padded variant, not strict


@pytest.mark.parametrize("arguments, message", [
    (dict(n=0, kernel=3), r"n must be an int >= 1, got 0"),
    (dict(n=5, kernel=0), r"kernel must be an int >= 1"),
    (dict(n=5, kernel=3, stride=0), r"stride must be an int >= 1"),
    (dict(n=5, kernel=3, dilation=0), r"dilation must be an int >= 1"),
    (dict(n=5, kernel=3, padding=-1), r"padding must be an int >= 0 or a \(lo, hi\) pair"),
    (dict(n=5, kernel=3, padding=(1, 2, 3)), r"padding must be"),
    (dict(n=5, kernel=3, dilation=3), r"larger than the padded input"),
    (dict(n=5.0, kernel=3), r"n must be an int"),
])
def test_output_size_rejects_bad_input_naming_the_argument(arguments, message):
  with pytest.raises(ValueError, match=message):
    output_size(**arguments)


# ---------------------------------------------------------------------------------------------
# Receptive fields.


@given(st.integers(1, 12), st.integers(1, 7))
def test_receptive_field_of_stride_one_layers_grows_linearly(depth, kernel):
  """The seed notes: L layers of K x K kernels see L (K - 1) + 1 pixels."""
  field = receptive_field([LayerGeometry(kernel)] * depth)
  assert field.size == depth * (kernel - 1) + 1
  assert field.jump == 1


layer_geometries = st.builds(LayerGeometry, kernel=st.integers(1, 4), stride=st.integers(1, 3),
                             dilation=st.integers(1, 3), padding=st.integers(0, 2))


@given(st.lists(layer_geometries, max_size=6))
def test_receptive_field_equals_the_closed_form_of_araujo_et_al(layers):
  """`r = 1 + sum_l (k_l - 1) prod_{i<l} s_i`, `u = -sum_l P_l prod_{i<l} s_i` the left end of
  unit 0's field, so its centre is `u + (r - 1) / 2`; the jump is `prod_l s_l`."""
  spans = [g.dilation * (g.kernel - 1) + 1 for g in layers]
  jumps_before = [math.prod(g.stride for g in layers[:l]) for l in range(len(layers))]
  size = 1 + sum((k - 1) * j for k, j in zip(spans, jumps_before))
  left = -sum(g.padding * j for g, j in zip(layers, jumps_before))
  assert receptive_field(layers) == ReceptiveField(
      size, math.prod(g.stride for g in layers), left + (size - 1) / 2)


@st.composite
def layer_stacks(draw):
  """Conv (any dilation) and pooling (dilation 1) layers, as (is_pool, geometry) pairs."""
  stack = []
  for _ in range(draw(st.integers(1, 4))):
    is_pool = draw(st.booleans())
    stack.append((is_pool, LayerGeometry(
        kernel=draw(st.integers(1, 3)), stride=draw(st.integers(1, 3)),
        dilation=1 if is_pool else draw(st.integers(1, 2)), padding=draw(st.integers(0, 1)))))
  return stack


def apply_stack(stack, x):
  for is_pool, g in stack:
    if is_pool:
      x = avg_pool(x, g.kernel, g.stride, g.padding)  # avg, not max: every input gets gradient
    else:
      x = correlate(x, jnp.ones((g.kernel, 1, 1)), stride=g.stride, padding=g.padding,
                    kernel_dilation=g.dilation)
  return x


@settings(max_examples=15)
@given(layer_stacks())
def test_receptive_field_is_the_support_of_the_gradient(stack):
  """One output unit depends on exactly the input pixels its field spans (kernels of ones and
  average pooling: no cancellation); the field's ends and centre and the jump between the
  fields of neighbouring units are read off `jax.grad`."""
  field = receptive_field([g for _, g in stack])
  padding_reach = sum(g.padding * math.prod(h.stride for _, h in stack[:l])
                      for l, (_, g) in enumerate(stack))
  length = 2 * field.size + 3 * field.jump + 2 * padding_reach
  # The first unit whose field lies inside the input, and its neighbour.
  unit = max(0, math.ceil(((field.size - 1) / 2 - field.start) / field.jump))
  x = jnp.ones((1, length, 1))
  n_out = jax.eval_shape(lambda a: apply_stack(stack, a), x).shape[1]
  assume(unit + 1 < n_out and field.start + unit * field.jump + (field.size - 1) / 2 < length)
  note(f"stack {stack}, input {length}, output {n_out}, field {field}, unit {unit}")

  gradient = jax.jit(jax.jacrev(lambda a: apply_stack(stack, a)[0, unit:unit + 2, 0]))(x)
  support = [np.flatnonzero(np.asarray(gradient[i, 0, :, 0]) > 0) for i in range(2)]
  lowest, highest = support[0][0], support[0][-1]
  assert highest - lowest + 1 == field.size
  assert (lowest + highest) / 2 == field.start + unit * field.jump
  assert support[1][0] - support[0][0] == field.jump


def test_receptive_field_of_an_empty_stack_is_one_pixel():
  assert receptive_field([]) == ReceptiveField(1, 1, 0.0)


def test_receptive_field_of_the_resnet_stem():
  """7x7/2 conv (pad 3) then 3x3/2 max pool (pad 1): 11 pixels, jump 4, unit 0 centred at 0."""
  stem = [LayerGeometry(7, 2, padding=3), LayerGeometry(3, 2, padding=1)]
  assert receptive_field(stem) == ReceptiveField(11, 4, 0.0)


@pytest.mark.parametrize("layers, message", [
    ([(3, 1)], r"layers\[0\] must be a LayerGeometry"),
    ([LayerGeometry(0)], r"layers\[0\]\.kernel must be an int >= 1"),
    ([LayerGeometry(3), LayerGeometry(3, stride=0)], r"layers\[1\]\.stride must be"),
    ([LayerGeometry(3, dilation=0)], r"layers\[0\]\.dilation must be"),
    ([LayerGeometry(3, padding=-1)], r"layers\[0\]\.padding must be an int >= 0"),
])
def test_receptive_field_rejects_bad_layers_naming_them(layers, message):
  with pytest.raises(ValueError, match=message):
    receptive_field(layers)


# ---------------------------------------------------------------------------------------------
# Parameter counts.


def test_the_seed_notes_parameter_counts():
  """1000 x 1000 image: fully connected to as many units 10^12 weights; 5 -> 5: 25 weights
  fully connected vs 3 for one shared size-3 kernel; the notes' 10^6 "with 10x10 kernels" is a
  locally connected layer with 10^4 non-overlapping 10x10 windows (100 x 100 positions)."""
  assert fully_connected_params(1000 * 1000, 1000 * 1000, bias=False) == 10**12
  assert fully_connected_params(5, 5, bias=False) == 25
  assert conv_params((3,), 1, 1, bias=False) == 3
  assert locally_connected_params((1000, 1000), (10, 10), 1, 1, stride=10, bias=False) == 10**6
  assert locally_connected_params((1000, 1000), (10, 10), 1, 1, bias=False) == 991**2 * 100
  assert conv_params((10, 10), 1, 1, bias=False) == 100


def flax_param_count(module, input_shape):
  variables = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(input_shape))
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables))


@pytest.mark.parametrize("kernel, c_in, c_out, groups, bias", [
    ((3, 3), 3, 64, 1, True), ((11, 11), 3, 96, 1, True), ((5, 5), 96, 256, 2, True),
    ((1, 1), 64, 256, 1, False), ((3,), 8, 4, 4, True), ((3, 3, 3), 6, 9, 3, False)])
def test_conv_params_counts_what_flax_conv_allocates(kernel, c_in, c_out, groups, bias):
  module = nn.Conv(c_out, kernel, feature_group_count=groups, use_bias=bias)
  assert conv_params(kernel, c_in, c_out, groups, bias) == flax_param_count(
      module, (1,) + (12,) * len(kernel) + (c_in,))


@pytest.mark.parametrize("n_in, n_out, bias", [(9216, 4096, True), (4096, 1000, True),
                                               (10, 3, False)])
def test_fully_connected_params_counts_what_flax_dense_allocates(n_in, n_out, bias):
  assert fully_connected_params(n_in, n_out, bias) == flax_param_count(
      nn.Dense(n_out, use_bias=bias), (1, n_in))


@given(st.tuples(st.integers(3, 12), st.integers(3, 12)), st.integers(1, 3), st.integers(1, 3),
       st.integers(1, 3), st.integers(1, 3), st.integers(0, 1), st.booleans())
def test_locally_connected_params_are_one_unshared_kernel_per_output_position(
    input_size, kernel, c_in, c_out, stride, padding, bias):
  shape = jax.eval_shape(
      lambda x, w: correlate(x, w, stride=stride, padding=padding),
      jax.ShapeDtypeStruct((1, *input_size, c_in), jnp.float32),
      jax.ShapeDtypeStruct((kernel, kernel, c_in, c_out), jnp.float32)).shape
  positions = shape[1] * shape[2]
  expected = positions * (conv_params((kernel, kernel), c_in, c_out, bias=False)
                          + (c_out if bias else 0))
  assert locally_connected_params(input_size, (kernel, kernel), c_in, c_out, stride, padding,
                                  bias) == expected, (input_size, kernel, stride, padding, shape)


@pytest.mark.parametrize("call, message", [
    (lambda: fully_connected_params(0, 3), r"n_in must be an int >= 1, got 0"),
    (lambda: conv_params((3, 3), 4, 6, groups=4), r"groups=4 must divide c_in \(4\) and c_out"),
    (lambda: conv_params((3, 0), 4, 6), r"kernel must be an int >= 1, got 0"),
    (lambda: conv_params((3, 3), 0, 6), r"c_in must be an int >= 1"),
    (lambda: locally_connected_params((8, 8), (3,), 1, 1), r"kernel \(3,\) must have one size"),
    (lambda: locally_connected_params((8, 8), (3, 3), 1, 1, stride=(1, 2, 3)),
     r"stride must be an int or one entry per spatial axis \(2\)"),
    (lambda: locally_connected_params((8, 8), (3, 3), 1, 1, stride=0), r"stride must be"),
    (lambda: locally_connected_params((2, 8), (3, 3), 1, 1), r"larger than the padded input"),
])
def test_parameter_counts_reject_bad_input_naming_the_argument(call, message):
  with pytest.raises(ValueError, match=message):
    call()
