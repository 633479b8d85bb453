"""Tests of cnn_jax/models/layers.py: Conv on ops.correlate, circular and torch padding, LRN,
adaptive average pooling, anti-aliased pooling, batch norm's running variance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn_jax import ops
from cnn_jax.models import layers


@pytest.mark.parametrize("groups,padding,strides", [(1, "same", 1), (2, "circular", 1),
                                                    (4, "valid", 2), (1, ((1, 0), (2, 1)), 1)])
def test_conv_equals_ops_correlate_with_its_params(groups, padding, strides):
  conv = layers.Conv(8, (3, 2), strides=strides, padding=padding, groups=groups)
  x = jax.random.normal(jax.random.key(1), (2, 7, 6, 4))
  variables = conv.init(jax.random.key(0), x)
  kernel, bias = variables["params"]["kernel"], variables["params"]["bias"]
  assert kernel.shape == (3, 2, 4 // groups, 8) and bias.shape == (8,)
  expected = ops.correlate(x, kernel, stride=strides, padding=padding, groups=groups, bias=bias)
  np.testing.assert_allclose(conv.apply(variables, x), expected, rtol=1e-6)


@pytest.mark.parametrize("kernel,dilation,strides", [(7, 1, 2), (3, 1, 2), (1, 1, 2), (3, 2, 1),
                                                     ((5, 3), 1, 2)])
def test_torch_padding_is_symmetric_and_independent_of_the_input_size(kernel, dilation, strides):
  """padding='torch' pads D (K - 1) // 2 on both sides, as torch's Conv2d(padding=K // 2), where
  'same' pads (P - 1, P) at stride 2 on even inputs."""
  conv = layers.Conv(3, kernel, strides=strides, kernel_dilation=dilation, padding="torch")
  for size in (8, 9):
    x = jax.random.normal(jax.random.key(size), (1, size, size, 2))
    variables = conv.init(jax.random.key(0), x)
    kernel_value, bias = variables["params"]["kernel"], variables["params"]["bias"]
    pads = [dilation * (k - 1) // 2 for k in kernel_value.shape[:2]]
    expected = ops.correlate(x, kernel_value, stride=strides, kernel_dilation=dilation,
                             padding=[(p, p) for p in pads], bias=bias)
    # One convolution, two padding specs of the same pads: float rounding only.
    np.testing.assert_allclose(conv.apply(variables, x), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_torch_pooling_padding_is_symmetric(kind):
  x = jax.random.normal(jax.random.key(0), (1, 8, 8, 2))
  pool = layers.max_pool if kind == "max" else layers.avg_pool
  reference = ops.max_pool if kind == "max" else ops.avg_pool
  np.testing.assert_array_equal(pool(x, 3, 2, "torch"), reference(x, 3, 2, ((1, 1), (1, 1))))
  assert pool(x, 3, 2, "torch").shape == (1, 4, 4, 2)


def test_conv_computes_in_dtype_with_float32_params():
  conv = layers.Conv(4, 3, dtype=jnp.bfloat16, use_bias=False)
  x = jnp.ones((1, 5, 5, 2))
  variables = conv.init(jax.random.key(0), x)
  assert variables["params"]["kernel"].dtype == jnp.float32 and "bias" not in variables["params"]
  assert conv.apply(variables, x).dtype == jnp.bfloat16


def test_conv_with_indivisible_groups_raises_value_error():
  with pytest.raises(ValueError, match="groups=2"):
    layers.Conv(4, 3, groups=2).init(jax.random.key(0), jnp.ones((1, 5, 5, 3)))


@given(shift=st.tuples(st.integers(0, 7), st.integers(0, 7)), window=st.sampled_from([2, 3]),
       kind=st.sampled_from(["max", "avg"]))
def test_circular_stride_one_pooling_commutes_with_circular_shifts(shift, window, kind):
  pool = layers.max_pool if kind == "max" else layers.avg_pool
  x = jax.random.normal(jax.random.key(0), (1, 8, 8, 2))
  shifted = jnp.roll(x, shift, axis=(1, 2))
  np.testing.assert_allclose(pool(shifted, window, 1, "circular"),
                             jnp.roll(pool(x, window, 1, "circular"), shift, axis=(1, 2)),
                             rtol=1e-6)


def _reference_lrn(x, size, k, alpha, beta, groups):
  x = np.asarray(x, np.float64)
  channels = x.shape[-1]
  per_group = channels // groups
  out = np.empty_like(x)
  for c in range(channels):
    group_start = (c // per_group) * per_group
    lo = max(group_start, c - size // 2)
    hi = min(group_start + per_group - 1, c + size // 2)
    out[..., c] = x[..., c] / (k + alpha * (x[..., lo:hi + 1] ** 2).sum(-1)) ** beta
  return out


@pytest.mark.parametrize("groups", [1, 2])
def test_local_response_norm_matches_the_paper_formula(groups):
  x = 30.0 * jax.random.normal(jax.random.key(0), (2, 3, 3, 12))
  np.testing.assert_allclose(layers.local_response_norm(x, groups=groups),
                             _reference_lrn(x, 5, 2.0, 1e-4, 0.75, groups), rtol=1e-5)


def test_local_response_norm_gradient_under_jit_equals_finite_differences():
  # AlexNet trains through LRN: its gradient must exist under jit (a traced reduce_window init
  # value once made it the generic, non-differentiable reduce_window).
  x = jax.random.normal(jax.random.key(0), (1, 2, 2, 8))
  loss = lambda x: jnp.sum(layers.local_response_norm(x, groups=2) ** 2)
  gradient = jax.jit(jax.grad(loss))(x)
  step = jnp.zeros_like(x).at[0, 1, 0, 5].set(1e-2)
  finite_difference = (loss(x + step) - loss(x - step)) / 2e-2
  np.testing.assert_allclose(gradient[0, 1, 0, 5], finite_difference, rtol=1e-3)


def test_grouped_local_response_norm_does_not_mix_groups():
  x = jax.random.normal(jax.random.key(0), (1, 2, 2, 8))
  changed = x.at[..., 4:].mul(100.0)
  np.testing.assert_array_equal(layers.local_response_norm(x, groups=2)[..., :4],
                                layers.local_response_norm(changed, groups=2)[..., :4])


@settings(max_examples=8)  # each example is a new shape, hence a new compilation
@given(size=st.integers(1, 3), out=st.integers(1, 3))
def test_adaptive_avg_pool_equals_avg_pool_when_the_size_divides(size, out):
  x = jax.random.normal(jax.random.key(0), (2, size * out, size * out, 3))
  np.testing.assert_allclose(layers.adaptive_avg_pool(x, (out, out)),
                             ops.avg_pool(x, size, size), rtol=1e-5, atol=1e-6)


def test_adaptive_avg_pool_uses_torch_bins_for_uneven_sizes():
  # 5 -> 3: bins [0, 2), [1, 4), [3, 5).
  x = jnp.arange(5.0).reshape(1, 5, 1, 1) * jnp.ones((1, 5, 3, 1))
  pooled = layers.adaptive_avg_pool(x, (3, 3))[0, :, 0, 0]
  np.testing.assert_allclose(pooled, [0.5, 2.0, 3.5])


@pytest.mark.parametrize("padding", ["valid", "same", "circular"])
def test_blurred_pooling_has_the_shape_of_strided_pooling(padding):
  x = jax.random.normal(jax.random.key(0), (1, 12, 12, 2))
  strided = layers.pool(x, "max", 2, 2, padding, blur=False, blur_size=3)
  blurred = layers.pool(x, "max", 2, 2, padding, blur=True, blur_size=3)
  assert blurred.shape == strided.shape


def reference_blurred_pool(x, kind, window, padding):
  """Zhang's anti-aliased pooling by hand on `[H, W]`: stride-1 pooling ('circular': periodic
  'same' padding, (F-1)//2 before), then the [1, 2, 1] / 4 binomial filter (periodic or
  mirrored border, one pixel each side) sampled at every other pixel."""
  reduce = np.max if kind == "max" else np.mean
  if padding == "circular":
    lo = (window - 1) // 2
    x = np.pad(x, ((lo, window - 1 - lo),) * 2, mode="wrap")
  rows, columns = x.shape[0] - window + 1, x.shape[1] - window + 1
  dense = np.array([[reduce(x[i:i + window, j:j + window]) for j in range(columns)]
                    for i in range(rows)])
  dense = np.pad(dense, 1, mode="wrap" if padding == "circular" else "reflect")
  blur = np.outer([1, 2, 1], [1, 2, 1]) / 16
  return np.array([[np.sum(blur * dense[i:i + 3, j:j + 3]) for j in range(0, columns, 2)]
                   for i in range(0, rows, 2)])


@pytest.mark.parametrize("kind, window, padding", [("max", 2, "circular"), ("avg", 3, "valid"),
                                                   ("max", 3, "valid")])
def test_blurred_pooling_is_dense_pooling_then_the_binomial_filter(kind, window, padding):
  x = np.random.default_rng(0).normal(size=(1, 7, 6, 1)).astype(np.float32)
  blurred = layers.pool(x, kind, window, 2, padding, blur=True, blur_size=3)
  expected = reference_blurred_pool(x[0, ..., 0], kind, window, padding)
  np.testing.assert_allclose(blurred[0, ..., 0], expected, rtol=1e-5, atol=1e-6)  # float32 sums
  strided = layers.pool(x, kind, window, 2, padding, blur=False, blur_size=3)
  assert strided.shape == blurred.shape
  assert float(jnp.max(jnp.abs(strided - blurred))) > 0.1  # blurring changes the values


@given(shift=st.tuples(st.integers(0, 3), st.integers(0, 3)))
def test_circular_blurred_pooling_is_equivariant_to_shifts_by_the_stride(shift):
  x = jax.random.normal(jax.random.key(0), (1, 8, 8, 2))
  shifted = jnp.roll(x, (2 * shift[0], 2 * shift[1]), axis=(1, 2))
  pool = lambda x: layers.pool(x, "max", 2, 2, "circular", blur=True, blur_size=3)
  np.testing.assert_allclose(pool(shifted), jnp.roll(pool(x), shift, axis=(1, 2)), rtol=1e-6)


def test_bad_image_batches_raise_value_errors():
  with pytest.raises(ValueError, match="shape"):
    layers.check_image_batch(jnp.zeros((4, 4, 3)), "Model")
  with pytest.raises(ValueError, match="dtype"):
    layers.check_image_batch(jnp.zeros((1, 4, 4, 3), jnp.uint8), "Model")
  with pytest.raises(ValueError, match="padding"):
    layers.check_padding_mode("zeros")


def test_batch_norm_biased_and_unbiased_differ_by_bessels_factor():
  x = jax.random.normal(jax.random.key(0), (3, 2, 2, 4))
  def running_var(variance):
    norm = layers.BatchNorm(use_running_average=False, momentum=0.0, variance=variance)
    variables = norm.init(jax.random.key(1), x)
    _, state = norm.apply(variables, x, mutable=["batch_stats"])
    return state["batch_stats"]["var"]
  n = 3 * 2 * 2
  # float32 variance of 12 values computed two ways: ulps.
  np.testing.assert_allclose(running_var("unbiased"), running_var("biased") * n / (n - 1),
                             rtol=1e-5)
  np.testing.assert_allclose(running_var("unbiased"), jnp.var(x, (0, 1, 2), ddof=1), rtol=1e-5)


def test_batch_norm_rejects_unknown_variance():
  with pytest.raises(ValueError, match="variance must be one of"):
    layers.BatchNorm(variance="sample").init(jax.random.key(0), jnp.ones((2, 3)))
