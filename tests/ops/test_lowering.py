"""Tests of cnn_jax/ops/lowering.py: every alternative lowering equals the reference lowering.

The reference is `cnn_jax.ops.correlate` / `cnn_jax.ops.max_pool` (XLA's convolution and
reduce_window, whose own tests check them against the seed notes' formulas). Values and both
gradients must agree for any shape, stride, padding, dilation and group count, whatever the tile
size (a tiny `tile_bytes` forces one row per tile, a large one the whole batch in one tile).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, note, settings
from hypothesis import strategies as st

from cnn_jax import ops
from cnn_jax.ops import lowering

TOLERANCE = dict(rtol=1e-4, atol=1e-4)


def _values_and_gradients(correlate, x, kernel, bias, dy, options):
  """`y` and the vector-Jacobian products with respect to x, the kernel and the bias."""
  def run(x, kernel, bias):
    y, pullback = jax.vjp(lambda x, k, b: correlate(x, k, bias=b, **options), x, kernel, bias)
    return (y,) + pullback(dy)
  return jax.jit(run)(x, kernel, bias)


@st.composite
def correlation_problems(draw):
  """A random valid correlation: shapes, options, tile size and which parts run tiled."""
  ndim = draw(st.integers(1, 2))
  groups = draw(st.integers(1, 3))
  channels_in = groups * draw(st.integers(1, 3))
  channels_out = groups * draw(st.integers(1, 3))
  batch = draw(st.integers(1, 3))
  spatial = tuple(draw(st.integers(1, 9)) for _ in range(ndim))
  kernel_size = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
  options = dict(
      stride=tuple(draw(st.integers(1, 3)) for _ in range(ndim)),
      kernel_dilation=tuple(draw(st.integers(1, 2)) for _ in range(ndim)),
      groups=groups,
      padding=draw(st.one_of(st.sampled_from(ops.PADDING_NAMES), st.integers(0, 2),
                             st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)),
                                      min_size=ndim, max_size=ndim).map(tuple))))
  if options["padding"] != "circular":
    options["input_dilation"] = tuple(draw(st.integers(1, 2)) for _ in range(ndim))
  options["tile_bytes"] = draw(st.sampled_from([1, 64, 2 ** 12, 2 ** 21]))
  options["tiled"] = draw(st.one_of(st.none(), st.sets(st.sampled_from(lowering.TILED_PARTS),
                                                      min_size=1)))
  return (batch,) + spatial + (channels_in,), kernel_size + (channels_in // groups,
                                                             channels_out), options


def _output_shape_or_none(x_shape, kernel_shape, options):
  reference_options = {k: v for k, v in options.items() if k not in ("tile_bytes", "tiled")}
  try:
    return jax.eval_shape(lambda x, k: ops.correlate(x, k, **reference_options),
                          jax.ShapeDtypeStruct(x_shape, jnp.float32),
                          jax.ShapeDtypeStruct(kernel_shape, jnp.float32)).shape
  except ValueError:
    return None


# Each example compiles two programs; 15 examples cover every option within the time budget.
@settings(max_examples=15)
@given(correlation_problems(), st.integers(0, 2 ** 16))
def test_tiled_correlate_equals_reference_in_values_and_gradients(problem, seed):
  x_shape, kernel_shape, options = problem
  y_shape = _output_shape_or_none(x_shape, kernel_shape, options)
  assume(y_shape is not None and all(n > 0 for n in y_shape))
  note(f"x {x_shape}, kernel {kernel_shape}, {options}")
  keys = jax.random.split(jax.random.key(seed), 4)
  x = jax.random.normal(keys[0], x_shape)
  kernel = jax.random.normal(keys[1], kernel_shape)
  bias = jax.random.normal(keys[2], kernel_shape[-1:])
  dy = jax.random.normal(keys[3], y_shape)
  reference_options = {k: v for k, v in options.items() if k not in ("tile_bytes", "tiled")}
  expected = _values_and_gradients(ops.correlate, x, kernel, bias, dy, reference_options)
  actual = _values_and_gradients(lowering.tiled_correlate, x, kernel, bias, dy, options)
  for name, a, e in zip(("y", "dx", "dkernel", "dbias"), actual, expected):
    np.testing.assert_allclose(a, e, err_msg=name, **TOLERANCE)


@pytest.mark.parametrize("tiled", [parts for count in range(4)
                                   for parts in itertools.combinations(lowering.TILED_PARTS,
                                                                       count)])
def test_every_choice_of_tiled_parts_equals_reference_on_a_strided_grouped_3d_problem(tiled):
  options = dict(stride=(2, 1, 2), padding="same", kernel_dilation=(1, 2, 1), groups=2)
  x = jax.random.normal(jax.random.key(0), (2, 5, 6, 5, 4))
  kernel = jax.random.normal(jax.random.key(1), (2, 2, 3, 2, 6))
  bias = jnp.zeros(6)
  dy = jax.random.normal(jax.random.key(2), ops.correlate(x, kernel, **options).shape)
  expected = _values_and_gradients(ops.correlate, x, kernel, bias, dy, options)
  actual = _values_and_gradients(lowering.tiled_correlate, x, kernel, bias, dy,
                                 dict(options, tiled=tiled, tile_bytes=256))
  for a, e in zip(actual, expected):
    np.testing.assert_allclose(a, e, **TOLERANCE)


def test_tiled_correlate_rejects_bad_input_like_the_reference():
  x, kernel = jnp.ones((1, 5, 5, 4)), jnp.ones((3, 3, 3, 2))
  with pytest.raises(ValueError, match="groups"):
    ops.correlate(x, kernel, groups=2)
  with pytest.raises(ValueError, match="groups"):
    lowering.tiled_correlate(x, kernel, groups=2)


@pytest.mark.parametrize("arguments, message", [
    (dict(tile_bytes=0), "tile_bytes"),
    (dict(tile_bytes=2.5), "tile_bytes"),
    (dict(tiled=("backward",)), "tiled"),
])
def test_tiled_correlate_rejects_bad_tuning_arguments(arguments, message):
  with pytest.raises(ValueError, match=message):
    lowering.tiled_correlate(jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 2)), **arguments)


@st.composite
def pooling_problems(draw):
  ndim = draw(st.integers(1, 2))
  window = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
  stride = draw(st.one_of(st.none(), st.tuples(*[st.integers(1, 3)] * ndim)))
  padding = draw(st.one_of(st.sampled_from(("valid", "same")), st.integers(0, 1)))
  shape = (draw(st.integers(1, 2)),) + tuple(draw(st.integers(3, 8)) for _ in range(ndim)) + (
      draw(st.integers(1, 3)),)
  return shape, window, stride, padding


@settings(max_examples=15)
@given(pooling_problems(), st.integers(0, 2 ** 16))
def test_switch_max_pool_equals_reference_in_values_and_gradients_even_with_ties(problem, seed):
  shape, window, stride, padding = problem
  if isinstance(padding, int):
    assume(all(padding < f for f in window))  # a window of padding alone has no maximum
  # Small integers make tied maxima common: the gradient must go to the same (first) one.
  x = jax.random.randint(jax.random.key(seed), shape, -2, 3).astype(jnp.float32)
  reference = lambda x: ops.max_pool(x, window, stride, padding)
  switched = lambda x: lowering.switch_max_pool(x, window, stride, padding)
  dy = jax.random.normal(jax.random.key(seed + 1), jax.eval_shape(reference, x).shape)
  with_gradient = lambda pool: jax.jit(lambda x, dy: (pool(x), jax.vjp(pool, x)[1](dy)[0]))
  y, dx = with_gradient(reference)(x, dy)
  y_switched, dx_switched = with_gradient(switched)(x, dy)
  np.testing.assert_array_equal(y_switched, y)
  np.testing.assert_allclose(dx_switched, dx, rtol=1e-6, atol=1e-6)


def test_switch_max_pool_sends_a_tied_windows_gradient_to_its_first_maximum():
  x = jnp.array([[5.0, 5.0], [5.0, 1.0]]).reshape(1, 2, 2, 1)
  (dx,) = jax.grad(lambda x: lowering.switch_max_pool(x, 2).sum(), argnums=(0,))(x)
  np.testing.assert_array_equal(dx.reshape(2, 2), [[1.0, 0.0], [0.0, 0.0]])


def test_switch_max_pool_rejects_bad_input_like_the_reference():
  with pytest.raises(ValueError, match="circular"):
    lowering.switch_max_pool(jnp.ones((1, 4, 4, 1)), 2, padding="circular")
