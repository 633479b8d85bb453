"""Tests of cnn_jax/ops/onednn.py: lowering='onednn' computes the correlation as 'xla' does.

Every pass (values, input and kernel gradients, forward-mode tangents, batched and second-order
derivatives) against the reference lowering, over shapes, strides, paddings, dilations and
groups; a repeated random-shape fuzz for intermittent errors (oneDNN#6035 gave wrong kernel
gradients only on some calls); the shapes oneDNN is not given routed to XLA; the environment
switch and the error where oneDNN is unavailable. The comparisons need the compiled extension
and skip, with its reason, where it is not built or does not load.
"""

import itertools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, note, settings
from hypothesis import strategies as st

from cnn_jax import ops
from cnn_jax.ops import conv, lowering, onednn

needs_onednn = pytest.mark.skipif(not onednn.available(),
                                  reason=f"oneDNN unavailable: {onednn.unavailable_reason()}")
# Two float32 summation orders (oneDNN's blocked kernels, XLA's Eigen) of at most a few hundred
# unit-normal products, results of size ~10-30: differences ~1e-5 absolute.
TOLERANCE = dict(rtol=1e-4, atol=1e-4)


def _passes(name, options):
  """Jitted `(y, dx, dkernel)` of `ops.correlate(..., lowering=name, **options)` for a dy."""
  def run(x, kernel, dy):
    y, pullback = jax.vjp(lambda x, k: ops.correlate(x, k, lowering=name, **options), x, kernel)
    return (y,) + pullback(dy)
  return jax.jit(run)


def _problem(x_shape, kernel_shape, options, seed):
  """x, kernel and an output cotangent, or None where the geometry has no output."""
  try:
    y_shape = jax.eval_shape(lambda x, k: ops.correlate(x, k, lowering="xla", **options),
                             jax.ShapeDtypeStruct(x_shape, jnp.float32),
                             jax.ShapeDtypeStruct(kernel_shape, jnp.float32)).shape
  except ValueError:
    return None
  if 0 in y_shape:
    return None
  keys = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(keys[0], x_shape), jax.random.normal(keys[1], kernel_shape),
          jax.random.normal(keys[2], y_shape))


def _assert_passes_equal_xla(x, kernel, dy, options, repeats=1):
  expected = _passes("xla", options)(x, kernel, dy)
  compiled = _passes("onednn", options)
  for _ in range(repeats):
    for part, a, e in zip(("y", "dx", "dkernel"), compiled(x, kernel, dy), expected):
      np.testing.assert_allclose(a, e, err_msg=part, **TOLERANCE)


@st.composite
def problems(draw):
  """A random correlation oneDNN is given (input dilation 1): shapes and `ops.correlate` options."""
  ndim = draw(st.integers(1, 2))
  groups = draw(st.integers(1, 3))
  channels_in = groups * draw(st.integers(1, 6))
  channels_out = groups * draw(st.integers(1, 6))
  spatial = tuple(draw(st.integers(1, 10)) for _ in range(ndim))
  kernel_size = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
  options = dict(
      stride=tuple(draw(st.integers(1, 3)) for _ in range(ndim)),
      kernel_dilation=tuple(draw(st.integers(1, 2)) for _ in range(ndim)),
      groups=groups,
      padding=draw(st.one_of(st.sampled_from(ops.PADDING_NAMES), st.integers(0, 2),
                             st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)),
                                      min_size=ndim, max_size=ndim).map(tuple))))
  x_shape = (draw(st.integers(1, 3)),) + spatial + (channels_in,)
  return x_shape, kernel_size + (channels_in // groups, channels_out), options


@needs_onednn
@settings(max_examples=8, deadline=None)
@given(problems(), st.integers(0, 2 ** 16))
def test_onednn_values_and_both_gradients_equal_xla(problem, seed):
  x_shape, kernel_shape, options = problem
  arrays = _problem(x_shape, kernel_shape, options, seed)
  assume(arrays is not None)
  note(f"x {x_shape}, kernel {kernel_shape}, {options}")
  _assert_passes_equal_xla(*arrays, options)


@needs_onednn
def test_onednn_3d_grouped_dilated_strided_correlation_equals_xla():
  options = dict(stride=(2, 1, 2), padding="same", kernel_dilation=(1, 2, 1), groups=2)
  _assert_passes_equal_xla(*_problem((2, 5, 6, 5, 4), (2, 2, 3, 2, 6), options, 0), options)


@needs_onednn
@pytest.mark.parametrize("shapes, repeats", [
    (6, 3), pytest.param(60, 10, marks=pytest.mark.slow)])
def test_onednn_random_shapes_stay_correct_over_repeated_calls(shapes, repeats):
  # Intermittent errors (oneDNN#6035: wrong kernel gradients on some calls only) show only
  # when one compiled step runs several times. Strided 1x1 kernels with few channels are drawn
  # on purpose: they must be routed to XLA and stay right.
  rng = np.random.default_rng(shapes)
  checked = 0
  while checked < shapes:
    kernel = int(rng.choice([1, 1, 3, 5]))
    stride = int(rng.integers(1, 3))
    channels_in, channels_out = (int(c) for c in rng.choice([1, 3, 8, 16, 24], 2))
    size = int(rng.integers(kernel, 14))
    options = dict(stride=stride, padding=str(rng.choice(["same", "valid"])))
    arrays = _problem((int(rng.integers(1, 9)), size, size, channels_in),
                      (kernel, kernel, channels_in, channels_out), options, checked)
    if arrays is None:
      continue
    _assert_passes_equal_xla(*arrays, options, repeats=repeats)
    checked += 1


@needs_onednn
def test_onednn_forward_mode_derivative_equals_xla():
  # jax.jvp must work (the Lie derivative uses it) and give the same tangent.
  options = dict(stride=2, padding="same")
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 32))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 32, 32))
  tangents = (jax.random.normal(jax.random.key(2), x.shape),
              jax.random.normal(jax.random.key(3), kernel.shape))
  jvp = lambda name: jax.jit(lambda x, k, dx, dk: jax.jvp(
      lambda x, k: ops.correlate(x, k, lowering=name, **options), (x, k), (dx, dk)))(
          x, kernel, *tangents)
  for a, e in zip(jvp("onednn"), jvp("xla")):
    np.testing.assert_allclose(a, e, **TOLERANCE)


@needs_onednn
def test_onednn_vmap_and_second_derivatives_equal_xla():
  options = dict(padding="same", groups=2)
  x = jax.random.normal(jax.random.key(0), (3, 2, 7, 7, 4))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 3, 2, 4))

  def loss(name):
    # A second derivative (a gradient penalty) of a batch of independent problems, so that
    # every primitive is vmapped, transposed and differentiated again.
    def one(x, kernel):
      grad_x = jax.grad(lambda x: jnp.sum(
          ops.correlate(x, kernel, lowering=name, **options) ** 2))(x)
      return jnp.sum(grad_x ** 2)
    return jax.jit(jax.vmap(jax.grad(one, argnums=(0, 1))))(x, kernel)

  for a, e in zip(loss("onednn"), loss("xla")):
    # Squares of gradients of ~100: relative float32 noise ~1e-6 of values ~1e5.
    np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-2)


@needs_onednn
def test_onednn_conv_transpose_equals_xla():
  y = jax.random.normal(jax.random.key(0), (2, 5, 5, 6))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 4, 6))
  transpose = lambda name: ops.conv_transpose(y, kernel, stride=2, padding="same",
                                              lowering=name)
  np.testing.assert_allclose(transpose("onednn"), transpose("xla"), **TOLERANCE)


def _custom_calls(name, x_shape, kernel_shape, options, dtype=jnp.float32):
  """The number of custom calls in the optimized forward + backward of one correlation."""
  def step(x, kernel):
    y, pullback = jax.vjp(lambda x, k: ops.correlate(x, k, lowering=name, **options), x, kernel)
    return pullback(y)
  arguments = (jax.ShapeDtypeStruct(x_shape, dtype), jax.ShapeDtypeStruct(kernel_shape, dtype))
  return jax.jit(step).lower(*arguments).compile().as_text().count("custom-call(")


@needs_onednn
def test_onednn_runs_every_pass_of_a_supported_shape_as_a_custom_call():
  assert _custom_calls("onednn", (4, 8, 8, 16), (3, 3, 16, 32), dict(padding="same")) == 3
  assert _custom_calls("xla", (4, 8, 8, 16), (3, 3, 16, 32), dict(padding="same")) == 0


@needs_onednn
@pytest.mark.parametrize("x_shape, kernel_shape, options, dtype", [
    ((4, 8, 8, 8), (1, 1, 8, 32), dict(stride=2), jnp.float32),  # oneDNN#6035's shapes
    ((4, 8, 8, 15), (1, 1, 15, 32), dict(stride=(1, 2)), jnp.float32),
    ((4, 8, 8, 16), (3, 3, 16, 32), dict(input_dilation=2), jnp.float32),
    ((4, 8, 8, 16), (3, 3, 16, 32), dict(), jnp.float16),
    ((1, 2, 48), (2, 48, 12), dict(stride=3, padding=1), jnp.bfloat16),  # stride > kernel
    # Strided, with a tap that reads only padding: garbage kernel gradients in bfloat16.
    ((1, 1, 16), (2, 16, 8), dict(stride=2, padding=1), jnp.bfloat16),
    ((2, 1, 1, 16), (3, 3, 16, 8), dict(stride=2, padding=1), jnp.bfloat16),
    ((1, 2, 2), (3, 2, 1), dict(stride=3, padding="same"), jnp.bfloat16),
])
def test_onednn_routes_the_shapes_it_is_not_given_to_xla(x_shape, kernel_shape, options, dtype):
  correlation = conv.resolve_correlation(x_shape, kernel_shape, **options)
  assert not lowering.onednn_parts("onednn", x_shape, kernel_shape, correlation,
                                   (dtype, dtype), "cpu")
  assert _custom_calls("onednn", x_shape, kernel_shape, options, dtype) == 0


needs_onednn_bfloat16 = pytest.mark.skipif(
    not onednn.bfloat16_supported(),
    reason="this CPU has no bfloat16 instructions for oneDNN (or oneDNN is unavailable)")


@needs_onednn_bfloat16
@settings(max_examples=6, deadline=None)
@given(problems(), st.integers(0, 2 ** 16))
def test_onednn_bfloat16_passes_are_the_float32_reference_rounded(problem, seed):
  x_shape, kernel_shape, options = problem
  # Circular padding wraps the input before oneDNN and sums the wrapped input gradient after
  # it, in bfloat16 (further roundings, as under 'xla'): the passes themselves are tested here.
  assume(options.get("padding") != "circular")
  arrays = _problem(x_shape, kernel_shape, options, seed)
  assume(arrays is not None)
  note(f"x {x_shape}, kernel {kernel_shape}, {options}")
  x, kernel, dy = (a.astype(jnp.bfloat16) for a in arrays)
  expected = _passes("xla", options)(*(a.astype(jnp.float32) for a in (x, kernel, dy)))
  for part, a, e in zip(("y", "dx", "dkernel"), _passes("onednn", options)(x, kernel, dy),
                        expected):
    assert a.dtype == jnp.bfloat16, part
    # oneDNN accumulates in float32 and rounds each result to bfloat16 once: within half a
    # bfloat16 ulp (2^-8 relative) of the float32 value, whose own summation order moves it
    # by ~1e-6 of the largest result.
    np.testing.assert_allclose(np.asarray(a, np.float32), e, err_msg=part, rtol=2 ** -8,
                               atol=1e-5 * float(np.max(np.abs(e))))


@needs_onednn_bfloat16
def test_onednn_runs_every_bfloat16_pass_as_a_custom_call():
  assert _custom_calls("onednn", (4, 8, 8, 16), (3, 3, 16, 32), dict(padding="same"),
                       jnp.bfloat16) == 3


def test_bfloat16_is_given_where_onednn_runs_it_and_mixed_dtypes_never():
  given_dtypes = lambda dtypes: onednn.shape_supported(
      (4, 8, 8, 16), (3, 3, 16, 32), (1, 1), (1, 1), 1, dtypes, pads=((1, 1), (1, 1)),
      kernel_dilations=(1, 1))
  assert given_dtypes((jnp.bfloat16, jnp.bfloat16)) == onednn.bfloat16_supported()
  assert not given_dtypes((jnp.bfloat16, jnp.float32))
  assert not given_dtypes((jnp.float16, jnp.float16))
  # bfloat16's padding-only-tap rule leaves float32 and stride 1 alone.
  size_one = lambda strides, dtype: onednn.shape_supported(
      (2, 1, 1, 16), (3, 3, 16, 8), strides, (1, 1), 1, (dtype, dtype),
      pads=((1, 1), (1, 1)), kernel_dilations=(1, 1))
  assert size_one((2, 2), jnp.float32) and not size_one((2, 2), jnp.bfloat16)
  assert size_one((1, 1), jnp.bfloat16) == onednn.bfloat16_supported()


@pytest.mark.parametrize("size, kernel, dilation, stride, pad, expected", [
    (1, 2, 1, 2, (1, 1), True),     # tap 0 reads position -1 only
    (1, 2, 1, 2, (0, 1), True),     # 'same': tap 1 reads position 1 only
    (2, 3, 1, 3, (0, 1), True),     # tap 2 reads position 2 only
    (32, 3, 1, 2, (1, 1), False),   # a ResNet's strided 3x3: every tap reads pixels
    (224, 7, 1, 2, (3, 3), False),  # the 7x7 stem
    (2, 2, 3, 1, (0, 3), True),     # dilated: tap 1 reads positions 3 and 4 only
    (8, 3, 1, 1, (1, 1), False),
])
def test_tap_reads_only_padding(size, kernel, dilation, stride, pad, expected):
  assert onednn.tap_reads_only_padding(size, kernel, dilation, stride, pad) == expected


def test_the_blocklist_keeps_strided_1x1_kernels_with_few_channels_per_group_only():
  supported = lambda kernel_shape, strides, groups=1: onednn.shape_supported(
      (4, 8, 8, kernel_shape[-2] * groups), kernel_shape, strides, (1, 1), groups,
      (jnp.float32, jnp.float32), pads=((0, 0), (0, 0)), kernel_dilations=(1, 1))
  assert not supported((1, 1, 15, 64), (2, 2))
  assert not supported((1, 1, 8, 64), (2, 2), groups=4)  # 32 channels, 8 per group
  assert supported((1, 1, 16, 64), (2, 2))
  assert supported((1, 1, 8, 64), (1, 1))
  assert supported((3, 3, 3, 64), (2, 2))


def test_the_switch_disables_onednn_with_a_clear_error_and_auto_still_runs():
  # A fresh process: the switch is read once, when oneDNN is first asked for.
  script = textwrap.dedent("""
      import jax.numpy as jnp
      from cnn_jax import ops
      from cnn_jax.ops import onednn
      assert not onednn.available()
      assert "onednn" not in ops.lowering.available_lowerings()
      x, kernel = jnp.ones((1, 6, 6, 2)), jnp.ones((3, 3, 2, 4))
      assert float(ops.correlate(x, kernel, lowering="auto").sum()) == 4 * 4 * 4 * 18
      try:
        ops.correlate(x, kernel, lowering="onednn")
      except onednn.OnednnUnavailable as error:
        print(error)
      """)
  environment = dict(os.environ, CNN_JAX_ONEDNN="0", JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=environment, timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == ("lowering='onednn' is unavailable: disabled by "
                                   "CNN_JAX_ONEDNN=0; use lowering='auto' or 'xla'")


@needs_onednn
@pytest.mark.parametrize("parts", [frozenset(parts) for count in range(4)
                                   for parts in itertools.combinations(lowering.TILED_PARTS,
                                                                       count)])
def test_any_parts_in_onednn_beside_tiled_or_xla_equal_xla(parts):
  # 'auto' mixes lowerings part by part: the others tiled for odd subsets, else XLA's.
  options = dict(stride=2, padding="same", groups=2)
  x, kernel, dy = _problem((2, 9, 9, 4), (3, 3, 2, 6), options, 0)
  correlation = conv.resolve_correlation(x.shape, kernel.shape, **options)
  tiled = frozenset(lowering.TILED_PARTS) - parts if len(parts) % 2 else frozenset()

  def run(x, kernel, dy):
    y, pullback = jax.vjp(lambda x, k: lowering.correlate(
        x, k, correlation, tiled=tiled, onednn=parts, materialize_input=True), x, kernel)
    return (y,) + pullback(dy)

  for part, a, e in zip(("y", "dx", "dkernel"), jax.jit(run)(x, kernel, dy),
                        _passes("xla", options)(x, kernel, dy)):
    np.testing.assert_allclose(a, e, err_msg=part, **TOLERANCE)
