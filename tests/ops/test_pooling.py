"""Tests of cnn_jax/ops/pooling.py against plain NumPy references of the documented semantics."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, note, settings
from hypothesis import strategies as st

from cnn_jax.ops import (avg_pool, binomial_filter, blur_pool, global_avg_pool, max_pool,
                         max_pool_with_switches, max_unpool)

TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def reference_pads(padding, spatial, window, stride):
  """(lo, hi) per axis from the documented meaning of each padding spec (dilation 1)."""
  pads = []
  for axis, (n, f, s) in enumerate(zip(spatial, window, stride)):
    if padding == "valid":
      pads.append((0, 0))
    elif padding == "full":
      pads.append((f - 1, f - 1))
    elif padding == "same":
      total = max((-(-n // s) - 1) * s + f - n, 0)
      pads.append((total // 2, total - total // 2))
    elif isinstance(padding, int):
      pads.append((padding, padding))
    else:
      pads.append(tuple(padding[axis]))
  return pads


def reference_windows(x_shape, window, stride, pads):
  """For each output position: the list of real input positions in its window, row-major."""
  spatial = x_shape[1:-1]
  out = [(n + lo + hi - f) // s + 1 for n, f, s, (lo, hi) in zip(spatial, window, stride, pads)]
  for position in itertools.product(*(range(m) for m in out)):
    members = []
    for offset in itertools.product(*(range(f) for f in window)):
      pixel = tuple(p * s + k - lo for p, s, k, (lo, _) in zip(position, stride, offset, pads))
      if all(0 <= i < n for i, n in zip(pixel, spatial)):
        members.append(pixel)
    yield position, members, out


def reference_pool(x, window, stride, pads, kind, count_include_pad=False):
  results, out_shape = {}, None
  for position, members, out_shape in reference_windows(x.shape, window, stride, pads):
    values = np.stack([x[(slice(None),) + m] for m in members])  # [members, N, C]
    if kind == "max":
      results[position] = values.max(axis=0)
    else:
      divisor = math.prod(window) if count_include_pad else len(members)
      results[position] = values.sum(axis=0) / divisor
  y = np.zeros((x.shape[0], *out_shape, x.shape[-1]), np.float32)
  for position, value in results.items():
    y[(slice(None),) + position] = value
  return y


def reference_switches(x, window, stride, pads):
  """Flat index of the first (row-major) maximum of each window, per image and channel."""
  switches, out_shape = {}, None
  for position, members, out_shape in reference_windows(x.shape, window, stride, pads):
    values = np.stack([x[(slice(None),) + m] for m in members])
    first = np.argmax(values, axis=0)  # NumPy's argmax returns the first maximum
    flat = np.array([np.ravel_multi_index(m, x.shape[1:-1]) for m in members])
    switches[position] = flat[first]
  result = np.zeros((x.shape[0], *out_shape, x.shape[-1]), np.int64)
  for position, value in switches.items():
    result[(slice(None),) + position] = value
  return result


@st.composite
def pool_problems(draw, integer_values=False):
  ndim = draw(st.sampled_from([1, 2]))
  spatial = tuple(draw(st.integers(1, 7)) for _ in range(ndim))
  window = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
  stride = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
  padding = draw(st.one_of(
      st.sampled_from(["valid", "same", "full"]), st.integers(0, 1),
      st.tuples(*(st.tuples(st.integers(0, 2), st.integers(0, 2)) for _ in range(ndim)))))
  pads = reference_pads(padding, spatial, window, stride)
  for n, f, (lo, hi) in zip(spatial, window, pads):
    assume(n + lo + hi >= f)
  shape = (draw(st.integers(1, 2)),) + spatial + (draw(st.integers(1, 2)),)
  # Every window must hold a real pixel (one entirely in the padding has no max, no switch).
  assume(all(members for _, members, _ in reference_windows(shape, window, stride, pads)))
  rng = np.random.default_rng(draw(st.integers(0, 2**16)))
  if integer_values:
    x = rng.integers(0, 3, shape).astype(np.float32)  # many ties
  else:
    x = rng.standard_normal(shape).astype(np.float32)
  note(f"x {x.shape}, window {window}, stride {stride}, padding {padding!r}, pads {pads}")
  return x, window, stride, padding, pads


def describe(x, window, stride, padding):
  return f"x {x.shape}, window {window}, stride {stride}, padding {padding!r}"


# ---------------------------------------------------------------------------------------------
# max_pool and avg_pool.


@settings(max_examples=25)
@given(pool_problems())
def test_max_pool_equals_the_numpy_reference(problem):
  x, window, stride, padding, pads = problem
  np.testing.assert_allclose(max_pool(x, window, stride, padding),
                             reference_pool(x, window, stride, pads, "max"),
                             err_msg=describe(x, window, stride, padding))


@settings(max_examples=25)
@given(pool_problems(), st.booleans())
def test_avg_pool_equals_the_numpy_reference(problem, count_include_pad):
  x, window, stride, padding, pads = problem
  np.testing.assert_allclose(
      avg_pool(x, window, stride, padding, count_include_pad=count_include_pad),
      reference_pool(x, window, stride, pads, "avg", count_include_pad), **TOLERANCE,
      err_msg=f"{describe(x, window, stride, padding)}, count_include_pad {count_include_pad}")


def test_pooling_stride_defaults_to_the_window():
  x = np.arange(16.0, dtype=np.float32).reshape(1, 4, 4, 1)
  np.testing.assert_array_equal(max_pool(x, 2)[0, :, :, 0], [[5, 7], [13, 15]])
  np.testing.assert_array_equal(avg_pool(x, 2)[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])


def test_global_avg_pool_is_the_spatial_mean():
  x = np.random.default_rng(0).standard_normal((2, 3, 5, 4)).astype(np.float32)
  np.testing.assert_allclose(global_avg_pool(x), x.mean(axis=(1, 2)), **TOLERANCE)


# ---------------------------------------------------------------------------------------------
# Switches and unpooling.


@settings(max_examples=25)
@given(pool_problems(integer_values=True))
def test_switches_point_at_the_first_argmax_in_row_major_order(problem):
  x, window, stride, padding, pads = problem
  y, switches = max_pool_with_switches(x, window, stride, padding)
  message = describe(x, window, stride, padding)
  np.testing.assert_array_equal(y, max_pool(x, window, stride, padding), err_msg=message)
  assert switches.dtype == jnp.int32, message
  np.testing.assert_array_equal(switches, reference_switches(x, window, stride, pads),
                                err_msg=message)


@settings(max_examples=15)
@given(pool_problems())
def test_unpooling_puts_each_value_back_at_its_argmax(problem):
  x, window, stride, padding, pads = problem
  y, switches = max_pool_with_switches(x, window, stride, padding)
  unpooled = np.asarray(max_unpool(y, switches, x.shape[1:-1]))
  message = describe(x, window, stride, padding)
  flat_x = x.reshape(x.shape[0], -1, x.shape[-1])
  flat_unpooled = unpooled.reshape(flat_x.shape)
  flat_switches = np.asarray(switches).reshape(x.shape[0], -1, x.shape[-1])
  counts = np.zeros(flat_x.shape)
  for b, m, c in np.ndindex(*flat_switches.shape):
    counts[b, flat_switches[b, m, c], c] += 1
  # Each argmax receives its own value once per window that chose it; all else stays zero.
  np.testing.assert_allclose(flat_unpooled, counts * flat_x, **TOLERANCE, err_msg=message)


@settings(max_examples=15)
@given(pool_problems())
def test_set_unpooling_puts_the_maximum_back_once_as_torch_does(problem):
  x, window, stride, padding, pads = problem
  y, switches = max_pool_with_switches(x, window, stride, padding)
  unpooled = np.asarray(max_unpool(y, switches, x.shape[1:-1], overlap="set"))
  flat_x = x.reshape(x.shape[0], -1, x.shape[-1])
  flat_switches = np.asarray(switches).reshape(x.shape[0], -1, x.shape[-1])
  expected = np.zeros(flat_x.shape)
  for b, m, c in np.ndindex(*flat_switches.shape):
    expected[b, flat_switches[b, m, c], c] = flat_x[b, flat_switches[b, m, c], c]
  # Exact: every window sharing an argmax carries the same value, the maximum, to it.
  np.testing.assert_array_equal(unpooled.reshape(flat_x.shape), expected,
                                err_msg=describe(x, window, stride, padding))


def test_unpooling_refuses_an_unknown_overlap_rule():
  y, switches = max_pool_with_switches(jnp.ones((1, 4, 4, 1)), 2, 2, "valid")
  with pytest.raises(ValueError, match=r"overlap must be one of \('sum', 'set'\), got 'max'"):
    max_unpool(y, switches, (4, 4), overlap="max")


@settings(max_examples=10)
@given(pool_problems())
def test_unpooling_is_the_gradient_of_max_pooling(problem):
  x, window, stride, padding, pads = problem
  y, switches = max_pool_with_switches(x, window, stride, padding)
  cotangent = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
  # One jit for the whole backward pass: eager vjp of reduce_window compiles op by op.
  gradient = jax.jit(lambda a, g: jax.vjp(lambda b: max_pool(b, window, stride, padding), a)[1](
      g)[0])(x, cotangent)
  np.testing.assert_allclose(max_unpool(cotangent, switches, x.shape[1:-1]), gradient,
                             **TOLERANCE, err_msg=describe(x, window, stride, padding))


@settings(max_examples=12)
@given(pool_problems())
def test_unpooling_is_the_adjoint_of_gathering_at_the_switches(problem):
  x, window, stride, padding, pads = problem
  y, switches = max_pool_with_switches(x, window, stride, padding)
  probe = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
  flat_probe = probe.reshape(x.shape[0], -1, x.shape[-1])
  gathered = np.take_along_axis(flat_probe, np.asarray(switches).reshape(
      x.shape[0], -1, x.shape[-1]), axis=1)
  forward = float(np.vdot(gathered, np.asarray(y).reshape(gathered.shape)))
  backward = float(np.vdot(np.asarray(max_unpool(y, switches, x.shape[1:-1])), probe))
  assert math.isclose(forward, backward, rel_tol=1e-4, abs_tol=1e-4), describe(
      x, window, stride, padding)


def test_overlapping_windows_sharing_an_argmax_add_their_values():
  x = np.array([0.0, 1.0, 9.0, 2.0, 3.0], np.float32)[None, :, None]
  y, switches = max_pool_with_switches(x, window=3, stride=1)
  np.testing.assert_array_equal(switches[0, :, 0], [2, 2, 2])
  np.testing.assert_array_equal(max_unpool(y, switches, (5,))[0, :, 0], [0, 0, 27, 0, 0])


def test_max_pool_with_switches_gradient_reaches_the_switches_only():
  x = np.random.default_rng(0).standard_normal((1, 4, 4, 1)).astype(np.float32)
  grad = jax.grad(lambda a: jnp.sum(max_pool_with_switches(a, 2)[0]))(x)
  _, switches = max_pool_with_switches(x, 2)
  expected = np.zeros(16)
  expected[np.asarray(switches).ravel()] = 1
  np.testing.assert_array_equal(np.asarray(grad).ravel(), expected)


def test_switch_pooling_and_unpooling_under_jit_match_eager():
  x = np.random.default_rng(0).standard_normal((2, 5, 6, 3)).astype(np.float32)
  pool = lambda a: max_pool_with_switches(a, (3, 2), (2, 2), "same")
  y, switches = pool(x)
  y_jit, switches_jit = jax.jit(pool)(x)
  np.testing.assert_array_equal(y_jit, y)
  np.testing.assert_array_equal(switches_jit, switches)
  unpool = lambda a, s: max_unpool(a, s, (5, 6))
  np.testing.assert_array_equal(jax.jit(unpool)(y, switches), unpool(y, switches))


def test_switch_pooling_unpooling_and_blur_pool_vmap_over_an_extra_leading_axis():
  x = np.random.default_rng(0).standard_normal((3, 2, 5, 4, 2)).astype(np.float32)
  y, switches = jax.vmap(lambda a: max_pool_with_switches(a, 2, 1))(x)
  unpooled = jax.vmap(lambda a, s: max_unpool(a, s, (5, 4)))(y, switches)
  blurred = jax.vmap(lambda a: blur_pool(a, 2, 3, "circular"))(x)
  for i in range(x.shape[0]):
    y_i, switches_i = max_pool_with_switches(x[i], 2, 1)
    np.testing.assert_array_equal(y[i], y_i)
    np.testing.assert_array_equal(switches[i], switches_i)
    np.testing.assert_array_equal(unpooled[i], max_unpool(y_i, switches_i, (5, 4)))
    np.testing.assert_allclose(blurred[i], blur_pool(x[i], 2, 3, "circular"), **TOLERANCE)


def test_max_unpool_gradient_gathers_at_the_switches():
  """Unpooling is linear in y; its gradient (the adjoint) reads the input-sized cotangent back
  at the switch positions."""
  x = np.random.default_rng(0).standard_normal((1, 6, 1)).astype(np.float32)
  y, switches = max_pool_with_switches(x, 3, 1)
  weights = np.arange(6.0, dtype=np.float32)[None, :, None]
  grad = jax.grad(lambda a: jnp.sum(weights * max_unpool(a, switches, (6,))))(y)
  np.testing.assert_array_equal(grad[0, :, 0], np.asarray(switches)[0, :, 0].astype(np.float32))


# ---------------------------------------------------------------------------------------------
# blur_pool.


def binomial_taps(size):
  """Row size - 1 of Pascal's triangle, by repeated convolution with [1, 1], normalized."""
  taps = np.array([1.0])
  for _ in range(size - 1):
    taps = np.convolve(taps, [1.0, 1.0])
  return taps / taps.sum()


def reference_blur_pool_2d(x, stride, size, padding):
  lo, hi = (size - 1) // 2, size // 2
  mode = {"reflect": "reflect", "circular": "wrap", "zeros": "constant"}[padding]
  x_pad = np.pad(x, [(0, 0), (lo, hi), (lo, hi), (0, 0)], mode=mode)
  blur = np.outer(binomial_taps(size), binomial_taps(size))
  out_h, out_w = -(-x.shape[1] // stride), -(-x.shape[2] // stride)
  y = np.zeros((x.shape[0], out_h, out_w, x.shape[-1]))
  for i, j in itertools.product(range(out_h), range(out_w)):
    patch = x_pad[:, i * stride:i * stride + size, j * stride:j * stride + size, :]
    y[:, i, j, :] = np.einsum("bhwc,hw->bc", patch, blur)
  return y


@pytest.mark.parametrize("size", range(1, 8))
def test_binomial_filter_is_the_normalized_pascal_row(size):
  np.testing.assert_allclose(binomial_filter(size, 1), binomial_taps(size))
  np.testing.assert_allclose(binomial_filter(size, 2),
                             np.outer(binomial_taps(size), binomial_taps(size)))
  assert math.isclose(binomial_filter(size, 3).sum(), 1.0)


@settings(max_examples=20)
@given(st.integers(2, 9), st.integers(2, 9), st.integers(1, 3), st.integers(1, 7),
       st.sampled_from(["reflect", "circular", "zeros"]),
       st.sampled_from(["xla", "tiled", "auto"]),
       st.integers(0, 2**16))
def test_blur_pool_equals_the_numpy_reference(h, w, stride, size, padding, lowering, seed):
  assume(padding != "reflect" or (size // 2 < h and size // 2 < w))
  x = np.random.default_rng(seed).standard_normal((1, h, w, 2)).astype(np.float32)
  actual = blur_pool(x, stride, size, padding, lowering=lowering)
  message = (f"x {x.shape}, stride {stride}, filter_size {size}, padding {padding}, "
             f"lowering {lowering}")
  assert actual.shape == (1, -(-h // stride), -(-w // stride), 2), message
  np.testing.assert_allclose(actual, reference_blur_pool_2d(x, stride, size, padding),
                             **TOLERANCE, err_msg=message)


def test_even_blur_filters_put_the_extra_tap_after_the_centre():
  # Pads (floor((F-1)/2), ceil((F-1)/2)): y[n] = sum_k B[k] x[n + k - floor((F-1)/2)]. For an
  # impulse at 2 on a circle of 6, F = 2 ([1, 1] / 2) gives y[n] = (x[n] + x[n+1]) / 2 and F = 4
  # ([1, 3, 3, 1] / 8) gives y[n] = (x[n-1] + 3 x[n] + 3 x[n+1] + x[n+2]) / 8.
  x = np.zeros((1, 6, 1), np.float32)
  x[0, 2, 0] = 1.0
  np.testing.assert_allclose(blur_pool(x, 1, 2, "circular")[0, :, 0],
                             [0, 0.5, 0.5, 0, 0, 0], atol=1e-7)
  np.testing.assert_allclose(blur_pool(x, 1, 4, "circular")[0, :, 0],
                             [1 / 8, 3 / 8, 3 / 8, 1 / 8, 0, 0], atol=1e-7)
  np.testing.assert_allclose(blur_pool(x, 2, 4, "circular")[0, :, 0], [1 / 8, 3 / 8, 0],
                             atol=1e-7)


@pytest.mark.parametrize("padding", ["reflect", "circular"])
def test_blur_pool_keeps_a_constant_image_constant(padding):
  x = np.full((1, 9, 8, 3), 2.5, np.float32)
  np.testing.assert_allclose(blur_pool(x, 2, 5, padding), 2.5, **TOLERANCE)


def test_blur_pool_with_filter_size_one_is_plain_subsampling():
  x = np.random.default_rng(0).standard_normal((2, 7, 6, 3)).astype(np.float32)
  np.testing.assert_allclose(blur_pool(x, (2, 3), filter_size=1), x[:, ::2, ::3], **TOLERANCE)


@given(st.integers(2, 3), st.integers(2, 4), st.integers(1, 7), st.integers(-2, 2),
       st.integers(0, 2**16))
def test_circular_blur_pool_is_equivariant_to_shifts_by_multiples_of_the_stride(
    stride, periods, size, multiple, seed):
  n = stride * periods
  x = np.random.default_rng(seed).standard_normal((1, n, n, 2)).astype(np.float32)
  shift = multiple * stride
  np.testing.assert_allclose(
      blur_pool(np.roll(x, (shift, -shift), axis=(1, 2)), stride, size, "circular"),
      np.roll(blur_pool(x, stride, size, "circular"), (multiple, -multiple), axis=(1, 2)),
      **TOLERANCE, err_msg=f"x {x.shape}, stride {stride}, filter_size {size}, shift {shift}")


def test_blur_pool_removes_the_highest_frequency():
  """The binomial filter has a zero at Nyquist: an alternating +-1 pattern blurs to 0."""
  x = np.tile(np.array([1.0, -1.0], np.float32), 4)[None, :, None]
  np.testing.assert_allclose(blur_pool(x, 2, 3, "circular"), 0.0, atol=1e-6)
  assert np.allclose(np.abs(x[:, ::2]), 1.0)  # plain subsampling keeps the full amplitude


def test_blur_pool_under_jit_matches_eager_and_has_a_gradient():
  x = np.random.default_rng(0).standard_normal((2, 6, 5, 3)).astype(np.float32)
  pool = lambda a: blur_pool(a, 2, 4, "reflect")
  np.testing.assert_allclose(jax.jit(pool)(x), pool(x), **TOLERANCE)
  # Every output sums weights that add up to 1, so the total gradient mass is the output count.
  grad = jax.grad(lambda a: jnp.sum(pool(a)))(x)
  assert math.isclose(float(grad.sum()), float(np.prod(pool(x).shape)), rel_tol=1e-5)


@pytest.mark.parametrize("shape, stride, size", [((2, 9, 8, 3), 2, 3), ((1, 7, 3), 3, 5),
                                                 ((1, 5, 6, 4, 2), (1, 2, 2), 4)])
def test_separable_blur_pool_has_the_reference_values_and_gradients(shape, stride, size):
  x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
  cotangent = np.random.default_rng(2).standard_normal(
      blur_pool(x, stride, size).shape).astype(np.float32)
  results = {}
  for lowering in ("xla", "tiled"):
    y, vjp = jax.vjp(lambda a: blur_pool(a, stride, size, "reflect", lowering=lowering), x)
    results[lowering] = (y, vjp(cotangent)[0])
  # The separable sums add the same dyadic products in another order: float32 rounding only.
  for reference, separable in zip(results["xla"], results["tiled"]):
    np.testing.assert_allclose(separable, reference, **TOLERANCE)


# ---------------------------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize("call, message", [
    (lambda: max_pool(np.zeros((4, 4)), 2), r"x must be \[N, \*spatial, C\]"),
    (lambda: max_pool(np.zeros((1, 4, 4, 1)), 0), r"window must be >= 1"),
    (lambda: max_pool(np.zeros((1, 4, 4, 1)), 2, stride=0), r"stride must be >= 1"),
    (lambda: max_pool(np.zeros((1, 4, 4, 1)), 5), r"window 5 is larger than the padded input"),
    (lambda: avg_pool(np.zeros((1, 4, 1)), 2, padding="circular"), r"'circular' is not"),
    (lambda: avg_pool(np.zeros((1, 4, 1)), 2, padding="mirror"), r"padding must be one of"),
    (lambda: global_avg_pool(np.zeros((4, 4))), r"x must be \[N, \*spatial, C\]"),
    (lambda: max_pool_with_switches(np.zeros((1, 4, 1)), 2, padding=2),
     r"padding=2 leaves windows with no input pixel"),
    (lambda: max_unpool(np.zeros((1, 2, 1)), np.zeros((1, 3, 1), np.int32), (4,)),
     r"switches the same shape"),
    (lambda: max_unpool(np.zeros((1, 2, 1)), np.zeros((1, 2, 1)), (4,)),
     r"switches must be integer"),
    (lambda: max_unpool(np.zeros((1, 2, 1)), np.zeros((1, 2, 1), np.int32), (4, 4)),
     r"input_spatial_shape must be 1 positive ints"),
    (lambda: blur_pool(np.zeros((1, 4, 4, 1)), filter_size=8), r"filter_size must be an int in"),
    (lambda: blur_pool(np.zeros((1, 4, 4, 1)), padding="same"), r"padding must be one of"),
    (lambda: blur_pool(np.zeros((1, 4, 4, 1)), stride=0), r"stride must be >= 1"),
    (lambda: blur_pool(np.zeros((1, 4, 4, 1)), lowering="fast"), r"lowering must be one of"),
    (lambda: blur_pool(np.zeros((4, 4)), stride=2), r"x must be \[N, \*spatial, C\]"),
], ids=["rank", "window", "stride", "window too large", "circular", "padding name",
        "global rank", "empty windows", "switch shape", "switch dtype", "unpool shape",
        "filter size", "blur padding", "blur stride", "blur lowering", "blur rank"])
def test_pooling_rejects_bad_input_naming_the_argument(call, message):
  with pytest.raises(ValueError, match=message):
    call()


def test_ceil_mode_drops_a_window_that_would_start_in_the_high_padding():
  x = jnp.arange(5.0).reshape(1, 5, 1)
  # ceil((5 + 2 - 3) / 3) + 1 = 3 windows, but the third would start at 6 >= 5 + 1: two.
  assert max_pool(x, 3, 3, padding=1, ceil_mode=True).shape == (1, 2, 1)
  np.testing.assert_array_equal(max_pool(jnp.arange(6.0).reshape(1, 6, 1), 3, 2,
                                         ceil_mode=True)[0, :, 0], [2.0, 4.0, 5.0])


def test_ceil_mode_and_divisors_equal_torch():
  torch = pytest.importorskip("torch")
  functional = torch.nn.functional
  for size, window, stride, pad in [(6, 3, 2, 0), (7, 3, 2, 1), (6, 2, 2, 1), (5, 3, 3, 1),
                                    (9, 4, 3, 2)]:
    x = np.random.default_rng(size).normal(size=(1, size, size + 1, 2)).astype(np.float32)
    x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    for ceil_mode in (False, True):
      expected = functional.max_pool2d(x_torch, window, stride, pad, ceil_mode=ceil_mode)
      got = max_pool(x, window, stride, pad, lowering="xla", ceil_mode=ceil_mode)
      np.testing.assert_array_equal(got, expected.numpy().transpose(0, 2, 3, 1))
      for include in (False, True):
        expected = functional.avg_pool2d(x_torch, window, stride, pad, ceil_mode=ceil_mode,
                                         count_include_pad=include)
        got = avg_pool(x, window, stride, pad, count_include_pad=include, ceil_mode=ceil_mode)
        # A mean of <= 16 float32 values summed in another order: ulps.
        np.testing.assert_allclose(got, expected.numpy().transpose(0, 2, 3, 1), rtol=1e-6,
                                   atol=1e-6, err_msg=f"{size, window, stride, pad, ceil_mode}")
