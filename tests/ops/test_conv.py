"""Tests of cnn_jax/ops/conv.py against the discrete formulas of the seed notes.

Every reference here is written out plainly in NumPy (loops over output positions), from the
documented definitions, not from the code under test.
"""

import itertools
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, note, settings
from hypothesis import strategies as st

from cnn_jax.ops import (conv_transpose, convolve, convolve1d, convolve2d, correlate, correlate1d,
                         correlate2d, periodic_convolve)

TOLERANCE = dict(rtol=2e-5, atol=2e-5)


# ---------------------------------------------------------------------------------------------
# References.


def reference_pads(padding, spatial, kernel, stride, kernel_dilation, input_dilation):
  """(lo, hi) per axis from the documented meaning of each padding spec."""
  pads = []
  for axis, (n, f, s, d, d_in) in enumerate(
      zip(spatial, kernel, stride, kernel_dilation, input_dilation)):
    n_eff, f_eff = (n - 1) * d_in + 1, d * (f - 1) + 1
    if padding == "valid":
      pads.append((0, 0))
    elif padding == "full":
      pads.append((f_eff - 1, f_eff - 1))
    elif padding in ("same", "circular"):
      n_out = -(-n_eff // s)
      total = max((n_out - 1) * s + f_eff - n_eff, 0)
      pads.append((total // 2, total - total // 2))
    elif isinstance(padding, int):
      pads.append((padding, padding))
    else:
      entry = padding[axis]
      pads.append((entry, entry) if isinstance(entry, int) else tuple(entry))
  return pads


def reference_correlate(x, w, stride, padding, kernel_dilation, input_dilation, groups, bias):
  """`y[b, n, o] = bias[o] + sum_{k, c} x_pad[b, n S + k D, g(o) C_g + c] w[k, c, o]`, looped."""
  ndim = x.ndim - 2
  spatial, kernel = x.shape[1:-1], w.shape[:-2]
  pads = reference_pads(padding, spatial, kernel, stride, kernel_dilation, input_dilation)
  dilated_shape = [(n - 1) * d + 1 for n, d in zip(spatial, input_dilation)]
  x_dilated = np.zeros((x.shape[0], *dilated_shape, x.shape[-1]))
  x_dilated[(slice(None),) + tuple(slice(None, None, d) for d in input_dilation)] = x
  mode = "wrap" if padding == "circular" else "constant"
  x_pad = np.pad(x_dilated, [(0, 0)] + list(pads) + [(0, 0)], mode=mode)
  c_group, o_group = x.shape[-1] // groups, w.shape[-1] // groups
  out_spatial = [(p - (d * (f - 1) + 1)) // s + 1
                 for p, f, s, d in zip(x_pad.shape[1:-1], kernel, stride, kernel_dilation)]
  y = np.zeros((x.shape[0], *out_spatial, w.shape[-1]))
  for n in itertools.product(*(range(m) for m in out_spatial)):
    for k in itertools.product(*(range(f) for f in kernel)):
      position = tuple(n[i] * stride[i] + k[i] * kernel_dilation[i] for i in range(ndim))
      pixel = x_pad[(slice(None),) + position]  # [B, C_in]
      for g in range(groups):
        y[(slice(None),) + n + (slice(g * o_group, (g + 1) * o_group),)] += (
            pixel[:, g * c_group:(g + 1) * c_group] @ w[k][:, g * o_group:(g + 1) * o_group])
  if bias is not None:
    y += bias
  return y


def literal_convolution_1d(f, g):
  """`(f * g)[n] = sum_k f[k] g[n - k]` over every n where some term is nonzero."""
  out = np.zeros(len(f) + len(g) - 1)
  for n in range(len(out)):
    for k in range(len(f)):
      if 0 <= n - k < len(g):
        out[n] += f[k] * g[n - k]
  return out


def literal_convolution_2d(f, g):
  """`(f * g)[m, n] = sum_{k, l} f[k, l] g[m - k, n - l]`."""
  out = np.zeros((f.shape[0] + g.shape[0] - 1, f.shape[1] + g.shape[1] - 1))
  for m, n in itertools.product(range(out.shape[0]), range(out.shape[1])):
    for k, l in itertools.product(range(f.shape[0]), range(f.shape[1])):
      if 0 <= m - k < g.shape[0] and 0 <= n - l < g.shape[1]:
        out[m, n] += f[k, l] * g[m - k, n - l]
  return out


def random_array(seed, shape):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Strategies.


@st.composite
def conv_problems(draw, ndims=(1, 2), allow_input_dilation=True):
  """A random valid correlate call: arrays, options and a description for failure messages."""
  ndim = draw(st.sampled_from(ndims))
  groups = draw(st.integers(1, 3))
  c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
  spatial = tuple(draw(st.integers(1, 7)) for _ in range(ndim))
  kernel = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
  stride = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
  kernel_dilation = tuple(draw(st.integers(1, 2)) for _ in range(ndim))
  input_dilation = tuple(draw(st.integers(1, 2)) if allow_input_dilation else 1
                         for _ in range(ndim))
  padding = draw(st.one_of(
      st.sampled_from(["valid", "same", "full", "circular"]),
      st.integers(0, 2),
      st.tuples(*(st.tuples(st.integers(0, 3), st.integers(0, 3)) for _ in range(ndim)))))
  if padding == "circular":
    input_dilation = (1,) * ndim
  pads = reference_pads(padding, spatial, kernel, stride, kernel_dilation, input_dilation)
  for n, f, d, d_in, (lo, hi) in zip(spatial, kernel, kernel_dilation, input_dilation, pads):
    assume((n - 1) * d_in + 1 + lo + hi >= d * (f - 1) + 1)
  with_bias = draw(st.booleans())
  seed = draw(st.integers(0, 2**16))
  x = random_array(seed, (draw(st.integers(1, 2)),) + spatial + (c_in,))
  w = random_array(seed + 1, kernel + (c_in // groups, c_out))
  bias = random_array(seed + 2, (c_out,)) if with_bias else None
  options = dict(stride=stride, padding=padding, kernel_dilation=kernel_dilation,
                 input_dilation=input_dilation, groups=groups, bias=bias)
  note(f"x {x.shape}, kernel {w.shape}, stride {stride}, padding {padding!r}, kernel_dilation "
       f"{kernel_dilation}, input_dilation {input_dilation}, groups {groups}, bias {with_bias}")
  return x, w, options


def describe(x, w, options):
  shown = {k: v for k, v in options.items() if k != "bias"}
  return f"x {x.shape}, kernel {w.shape}, {shown}, bias {options.get('bias') is not None}"


# ---------------------------------------------------------------------------------------------
# The discrete formula.


@settings(max_examples=40)
@given(conv_problems())
def test_correlate_equals_the_nested_sum_reference(problem):
  x, w, options = problem
  expected = reference_correlate(x, w, **options)
  actual = correlate(x, w, **options)
  assert actual.shape == expected.shape, describe(x, w, options)
  np.testing.assert_allclose(actual, expected, **TOLERANCE, err_msg=describe(x, w, options))


@settings(max_examples=30)
@given(conv_problems())
def test_convolve_is_correlate_with_the_kernel_flipped(problem):
  x, w, options = problem
  flipped = w[tuple(slice(None, None, -1) for _ in range(w.ndim - 2))]
  np.testing.assert_allclose(convolve(x, w, **options), reference_correlate(x, flipped, **options),
                             **TOLERANCE, err_msg=describe(x, w, options))


@given(st.integers(1, 9), st.integers(1, 5), st.integers(0, 2**16))
def test_full_convolution_1d_is_the_seed_formula(n, f, seed):
  signal, kernel = random_array(seed, (n,)), random_array(seed + 1, (f,))
  expected = literal_convolution_1d(signal, kernel)
  np.testing.assert_allclose(convolve1d(signal, kernel, padding="full"), expected, **TOLERANCE,
                             err_msg=f"f {signal.shape}, g {kernel.shape}")
  np.testing.assert_allclose(expected, np.convolve(signal, kernel), **TOLERANCE)


@given(st.integers(2, 9), st.integers(1, 4), st.integers(1, 3), st.integers(1, 2),
       st.integers(0, 2**16))
def test_strided_dilated_valid_convolution_samples_the_seed_formula(n, f, stride, dilation, seed):
  """'valid' keeps the full sum's entries with complete overlap; stride S keeps every S-th one.

  A kernel dilated by D is the kernel with D - 1 zeros inserted between its taps.
  """
  f_eff = dilation * (f - 1) + 1
  assume(f_eff <= n)
  signal, kernel = random_array(seed, (n,)), random_array(seed + 1, (f,))
  dilated_kernel = np.zeros(f_eff, np.float32)
  dilated_kernel[::dilation] = kernel
  full = literal_convolution_1d(signal, dilated_kernel)
  actual = convolve(signal[None, :, None], kernel[:, None, None], stride=stride,
                    kernel_dilation=dilation, padding="valid")[0, :, 0]
  np.testing.assert_allclose(actual, full[f_eff - 1:n][::stride], **TOLERANCE,
                             err_msg=f"n {n}, f {f}, stride {stride}, dilation {dilation}")


@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 3), st.integers(1, 3),
       st.integers(0, 2**16))
def test_full_convolution_2d_is_the_seed_formula(m, n, k, l, seed):
  image, kernel = random_array(seed, (m, n)), random_array(seed + 1, (k, l))
  np.testing.assert_allclose(convolve2d(image, kernel), literal_convolution_2d(image, kernel),
                             **TOLERANCE, err_msg=f"f {image.shape}, g {kernel.shape}")


def test_correlate_2d_matches_the_seed_output_size_for_valid_padding():
  """The seed's matrix form: M x N input, K x L kernel -> (M - K + 1) x (N - L + 1)."""
  image, kernel = random_array(0, (6, 9)), random_array(1, (3, 4))
  out = correlate2d(image, kernel)
  assert out.shape == (4, 6)
  assert math.isclose(float(out[1, 2]), float(np.sum(image[1:4, 2:6] * kernel)), rel_tol=1e-5)
  np.testing.assert_allclose(correlate1d(image[0], kernel[0]),
                             np.correlate(image[0], kernel[0], mode="valid"), **TOLERANCE)


# ---------------------------------------------------------------------------------------------
# Algebra: commutativity, linearity.


@given(st.integers(1, 8), st.integers(1, 8), st.integers(0, 2**16))
def test_convolution_is_commutative_1d(n, f, seed):
  a, b = random_array(seed, (n,)), random_array(seed + 1, (f,))
  np.testing.assert_allclose(convolve1d(a, b), convolve1d(b, a), **TOLERANCE,
                             err_msg=f"f {a.shape}, g {b.shape}")


@given(st.tuples(st.integers(1, 5), st.integers(1, 5)),
       st.tuples(st.integers(1, 5), st.integers(1, 5)), st.integers(0, 2**16))
def test_convolution_is_commutative_2d(shape_f, shape_g, seed):
  a, b = random_array(seed, shape_f), random_array(seed + 1, shape_g)
  np.testing.assert_allclose(convolve2d(a, b), convolve2d(b, a), **TOLERANCE,
                             err_msg=f"f {a.shape}, g {b.shape}")


@settings(max_examples=20)
@given(conv_problems(), st.floats(-3, 3))
def test_convolution_is_homogeneous(problem, alpha):
  x, w, options = problem
  options = dict(options, bias=None)  # with a bias the map is affine, not linear
  np.testing.assert_allclose(convolve(alpha * x, w, **options),
                             alpha * convolve(x, w, **options), rtol=1e-4, atol=1e-4,
                             err_msg=describe(x, w, options))


@settings(max_examples=20)
@given(conv_problems())
def test_convolution_is_additive(problem):
  x, w, options = problem
  options = dict(options, bias=None)
  h = random_array(7, x.shape)
  np.testing.assert_allclose(convolve(x + h, w, **options),
                             convolve(x, w, **options) + convolve(h, w, **options),
                             rtol=1e-4, atol=1e-4, err_msg=describe(x, w, options))


# ---------------------------------------------------------------------------------------------
# Translation equivariance: G(T f) = T(G f).


@given(st.integers(2, 8), st.integers(2, 8), st.integers(1, 5), st.integers(1, 5),
       st.integers(-20, 20), st.integers(-20, 20), st.integers(0, 2**16))
def test_circular_convolution_is_equivariant_to_every_circular_shift(h, w, kh, kw, dy, dx, seed):
  x, kernel = random_array(seed, (1, h, w, 2)), random_array(seed + 1, (kh, kw, 2, 3))
  shift = lambda a: jnp.roll(a, (dy, dx), axis=(1, 2))
  np.testing.assert_allclose(correlate(shift(x), kernel, padding="circular"),
                             shift(correlate(x, kernel, padding="circular")), **TOLERANCE,
                             err_msg=f"x {x.shape}, kernel {kernel.shape}, shift {(dy, dx)}")


@given(st.integers(6, 14), st.integers(1, 5), st.integers(1, 4), st.integers(0, 2**16))
def test_zero_padded_convolution_is_equivariant_away_from_the_borders(n, f, shift, seed):
  """With 'same' zero padding, y'[m] = y[m - s] wherever neither field touches a border or the
  wrapped-around part of the shifted input: `s + P_lo <= m` and `m + F - 1 - P_lo <= N - 1`."""
  x, kernel = random_array(seed, (1, n, 1)), random_array(seed + 1, (f, 1, 1))
  lo = (f - 1) // 2
  y = correlate(x, kernel, padding="same")[0, :, 0]
  y_shifted = correlate(jnp.roll(x, shift, axis=1), kernel, padding="same")[0, :, 0]
  interior = np.arange(shift + lo, n - f + lo + 1)
  assume(interior.size > 0)
  np.testing.assert_allclose(y_shifted[interior], y[interior - shift], **TOLERANCE,
                             err_msg=f"n {n}, f {f}, shift {shift}, interior {interior}")


def test_zero_padded_convolution_is_not_equivariant_at_the_borders():
  x = jnp.arange(1.0, 9.0)[None, :, None]
  kernel = jnp.ones((3, 1, 1))
  y = correlate(x, kernel, padding="same")[0, :, 0]
  y_shifted = correlate(jnp.roll(x, 1, axis=1), kernel, padding="same")[0, :, 0]
  # Position 0 sees the wrapped-in 8 next to a zero pad; the unshifted map never saw that pair.
  assert float(y_shifted[0]) != float(jnp.roll(y, 1)[0])
  np.testing.assert_allclose(y_shifted[2:-1], y[1:-2])


@given(st.integers(2, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4),
       st.integers(-3, 3), st.integers(0, 2**16))
def test_strided_convolution_is_equivariant_to_shifts_by_multiples_of_the_stride(
    stride, periods, f, c, multiple, seed):
  n = stride * (periods + 1)
  x, kernel = random_array(seed, (1, n, c)), random_array(seed + 1, (f, c, 2))
  conv = lambda a: correlate(a, kernel, stride=stride, padding="circular")
  np.testing.assert_allclose(conv(jnp.roll(x, multiple * stride, axis=1)),
                             jnp.roll(conv(x), multiple, axis=1), **TOLERANCE,
                             err_msg=f"x {x.shape}, kernel {kernel.shape}, stride {stride}")


@given(st.integers(2, 3), st.integers(1, 3), st.integers(1, 4), st.integers(0, 2**16))
def test_strided_convolution_is_not_equivariant_to_other_shifts(stride, periods, f, seed):
  """A shift by s not a multiple of S changes the sampling phase: no output shift matches."""
  n = stride * (periods + 1)
  x, kernel = random_array(seed, (1, n, 1)), random_array(seed + 1, (f, 1, 1))
  conv = lambda a: correlate(a, kernel, stride=stride, padding="circular")
  shifted = conv(jnp.roll(x, 1, axis=1))
  y = conv(x)
  # Relative to the output's scale: a tiny random kernel puts every output under a fixed atol.
  atol = 1e-3 * float(jnp.abs(y).max())
  for output_shift in range(y.shape[1]):
    assert not np.allclose(shifted, jnp.roll(y, output_shift, axis=1), rtol=1e-3, atol=atol), (
        f"x {x.shape}, kernel {kernel.shape}, stride {stride}: a shift by 1 matched an output "
        f"shift by {output_shift}")


# ---------------------------------------------------------------------------------------------
# Periodic convolution and the continuous limit.


@given(st.sampled_from([(5,), (8,), (3, 4), (6, 5), (2, 3, 4)]), st.integers(0, 2**16))
def test_periodic_convolution_is_the_product_of_fourier_transforms(shape, seed):
  f, g = random_array(seed, shape), random_array(seed + 1, shape)
  expected = np.real(np.fft.ifftn(np.fft.fftn(f) * np.fft.fftn(g)))
  np.testing.assert_allclose(periodic_convolve(f, g), expected, rtol=1e-4, atol=1e-4,
                             err_msg=f"shape {shape}")


def test_periodic_convolution_converges_to_the_continuous_one():
  """`(f * g)(x) = int_{-pi}^{pi} t cos(x - t) dt = 2 pi sin(x)` for the sawtooth f(t) = t.

  The Riemann sum `(2 pi / N) sum_k f(t_k) g(t_n - t_k)` on `t_k = -pi + 2 pi k / N` must approach
  it as N grows (O(1/N): the sawtooth jumps at +-pi).
  """
  errors = []
  for n in (16, 64, 256, 1024):
    spacing = 2 * np.pi / n
    t = -np.pi + spacing * np.arange(n)
    f = t.astype(np.float32)
    g = np.cos(spacing * np.arange(n)).astype(np.float32)  # g at t_n - t_k = 2 pi (n - k) / N
    discrete = spacing * np.asarray(periodic_convolve(f, g))
    errors.append(np.max(np.abs(discrete - 2 * np.pi * np.sin(t))))
  assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
  assert errors[-1] < 0.05, errors


# ---------------------------------------------------------------------------------------------
# The transposed convolution.


@settings(max_examples=12)
@given(conv_problems(allow_input_dilation=False))
def test_conv_transpose_is_the_adjoint_of_correlate(problem):
  x, w, options = problem
  options = {k: v for k, v in options.items() if k not in ("bias", "input_dilation")}
  y = random_array(3, correlate(x, w, **options).shape)
  forward = float(jnp.vdot(correlate(x, w, **options), y))
  backward = float(jnp.vdot(conv_transpose(y, w, input_shape=x.shape, **options), x))
  assert math.isclose(forward, backward, rel_tol=1e-4, abs_tol=1e-4), describe(x, w, options)


@settings(max_examples=10)
@given(conv_problems(allow_input_dilation=False))
def test_conv_transpose_equals_the_vjp_of_correlate(problem):
  x, w, options = problem
  options = {k: v for k, v in options.items() if k not in ("bias", "input_dilation")}
  y, vjp = jax.vjp(lambda a: correlate(a, w, **options), x)
  cotangent = random_array(4, y.shape)
  np.testing.assert_allclose(conv_transpose(cotangent, w, input_shape=x.shape, **options),
                             vjp(cotangent)[0], **TOLERANCE, err_msg=describe(x, w, options))


@pytest.mark.parametrize("padding", ["valid", "same", "full", "circular", 1])
def test_conv_transpose_without_input_shape_inverts_the_output_shape(padding):
  w = random_array(0, (3, 3, 2, 4))
  y = random_array(1, (1, 5, 4, 4))
  x = conv_transpose(y, w, stride=2, padding=padding)
  assert correlate(x, w, stride=2, padding=padding).shape == y.shape, (padding, x.shape)


@pytest.mark.parametrize("padding, size", [
    # (n' - 1) S + D (F - 1) + 1 - P_lo - P_hi rows and columns: 2 S + 3 - P for n' = (5, 4).
    ("valid", (11, 9)), ("full", (7, 5)), (1, (9, 7)),
    # 'same' and 'circular': S n', the size a stride-S 'same' convolution divides exactly.
    ("same", (10, 8)), ("circular", (10, 8))])
def test_conv_transpose_without_input_shape_takes_the_documented_input_size(padding, size):
  w = random_array(0, (3, 3, 2, 4))
  y = random_array(1, (1, 5, 4, 4))
  assert conv_transpose(y, w, stride=2, padding=padding).shape == (1, *size, 2)
  if padding not in ("same", "circular"):  # the smallest: one row fewer gives a smaller output
    smaller = np.zeros((1, size[0] - 1, size[1], 2), np.float32)
    assert correlate(smaller, w, stride=2, padding=padding).shape[1] == 4


# ---------------------------------------------------------------------------------------------
# Transformations: jit, vmap, grad.


@pytest.mark.parametrize("padding", ["valid", "same", "full", "circular", ((1, 2), (0, 1))])
def test_correlate_under_jit_matches_eager(padding):
  x, w = random_array(0, (2, 6, 5, 4)), random_array(1, (3, 2, 2, 6))
  options = dict(stride=(2, 1), padding=padding, kernel_dilation=(1, 2), groups=2)
  np.testing.assert_allclose(jax.jit(lambda a, b: correlate(a, b, **options))(x, w),
                             correlate(x, w, **options), **TOLERANCE)


@pytest.mark.parametrize("output_padding", [0, 1, (1, 0)])
def test_conv_transpose_output_padding_gives_torchs_size_and_the_adjoint(output_padding):
  """torch's ConvTranspose2d size `(n' - 1) S - 2 P + D (F - 1) + 1 + output_padding`, and the
  same values as the adjoint with that input_shape."""
  w = random_array(0, (3, 3, 2, 4))
  y = random_array(1, (1, 5, 4, 4))
  pads = (output_padding,) * 2 if isinstance(output_padding, int) else output_padding
  size = tuple((n - 1) * 2 - 2 + 2 + 1 + p for n, p in zip((5, 4), pads))
  x = conv_transpose(y, w, stride=2, padding=1, output_padding=output_padding)
  assert x.shape == (1, *size, 2)
  np.testing.assert_array_equal(
      x, conv_transpose(y, w, stride=2, padding=1, input_shape=(1, *size, 2)))


def test_conv_transpose_output_padding_equals_torchs_conv_transpose():
  torch = pytest.importorskip("torch")
  w = random_array(0, (3, 3, 2, 4))  # [KH, KW, C_in, C_out] of the forward correlation
  y = random_array(1, (1, 5, 4, 4))
  x = conv_transpose(y, w, stride=2, padding=1, output_padding=1)
  expected = torch.nn.functional.conv_transpose2d(
      torch.from_numpy(np.asarray(y).transpose(0, 3, 1, 2).copy()),
      torch.from_numpy(np.asarray(w).transpose(3, 2, 0, 1).copy()), stride=2, padding=1,
      output_padding=1).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(x, expected, **TOLERANCE)


def test_conv_transpose_output_padding_rejects_bad_values():
  w, y = random_array(0, (3, 3, 2, 4)), random_array(1, (1, 5, 4, 4))
  with pytest.raises(ValueError, match="output_padding=1 needs input_shape=None"):
    conv_transpose(y, w, stride=2, padding=1, output_padding=1, input_shape=(1, 10, 8, 2))
  with pytest.raises(ValueError, match="but correlate maps"):  # output_padding >= stride
    conv_transpose(y, w, stride=2, padding=1, output_padding=2)


def test_conv_transpose_and_periodic_convolve_under_jit_match_eager():
  y, w = random_array(0, (1, 4, 3, 4)), random_array(1, (3, 3, 2, 4))
  transpose = lambda a, b: conv_transpose(a, b, stride=2, padding="circular")
  np.testing.assert_allclose(jax.jit(transpose)(y, w), transpose(y, w), **TOLERANCE)
  f, g = random_array(2, (6, 5)), random_array(3, (6, 5))
  np.testing.assert_allclose(jax.jit(periodic_convolve)(f, g), periodic_convolve(f, g),
                             **TOLERANCE)


def test_correlate_vmaps_over_an_extra_leading_axis():
  x, w = random_array(0, (3, 2, 6, 2)), random_array(1, (3, 2, 3))
  batched = jax.vmap(lambda a: correlate(a, w, padding="same"))(x)
  for i in range(x.shape[0]):
    np.testing.assert_allclose(batched[i], correlate(x[i], w, padding="same"), **TOLERANCE)


def test_gradient_flows_through_circular_padding():
  """Circularly, stride 1, every input pixel is in exactly F windows per output channel, so
  `d/dx[c] sum(y) = sum_{k, o} w[k, c, o]` at every position, wrapped borders included."""
  x, w = random_array(0, (1, 5, 4, 2)), random_array(1, (3, 3, 2, 3))
  grad = jax.grad(lambda a: jnp.sum(correlate(a, w, padding="circular")))(x)
  expected = np.broadcast_to(w.sum(axis=(0, 1, 3)), x.shape)
  np.testing.assert_allclose(grad, expected, **TOLERANCE)


def test_gradient_with_respect_to_the_kernel_matches_finite_differences():
  x, w = random_array(0, (1, 6, 2)), random_array(1, (3, 2, 1))
  loss = lambda kernel: jnp.sum(jnp.sin(correlate(x, kernel, stride=2, padding="circular")))
  grad = jax.grad(loss)(w)
  step = 1e-2
  bump = np.zeros_like(w)
  bump[1, 0, 0] = step
  finite_difference = (loss(w + bump) - loss(w - bump)) / (2 * step)
  assert math.isclose(float(grad[1, 0, 0]), float(finite_difference), rel_tol=1e-2, abs_tol=1e-3)


# ---------------------------------------------------------------------------------------------
# Bad input.


BAD_CORRELATE_CALLS = [
    ("rank", dict(x=np.zeros((4, 3)), kernel=np.zeros((3, 3, 1))), r"x must be \[N, \*spatial"),
    ("kernel rank", dict(x=np.zeros((1, 5, 5, 2)), kernel=np.zeros((3, 2, 4))),
     r"kernel must be"),
    ("channel mismatch", dict(x=np.zeros((1, 5, 5, 3)), kernel=np.zeros((3, 3, 2, 4))),
     r"x needs 2 channels"),
    ("groups", dict(x=np.zeros((1, 5, 5, 4)), kernel=np.zeros((3, 3, 2, 3)), groups=2),
     r"groups=2 must divide"),
    ("groups zero", dict(x=np.zeros((1, 5, 2)), kernel=np.zeros((3, 2, 2)), groups=0),
     r"groups must be an int >= 1"),
    ("kernel too large", dict(x=np.zeros((1, 3, 1)), kernel=np.zeros((5, 1, 1))),
     r"kernel of size 5 .* larger than the padded input"),
    ("stride zero", dict(x=np.zeros((1, 5, 1)), kernel=np.zeros((3, 1, 1)), stride=0),
     r"stride must be >= 1"),
    ("stride per axis", dict(x=np.zeros((1, 5, 5, 1)), kernel=np.zeros((3, 3, 1, 1)),
                             stride=(1, 2, 3)), r"stride must be an int or a sequence of 2"),
    ("dilation zero", dict(x=np.zeros((1, 5, 1)), kernel=np.zeros((3, 1, 1)), kernel_dilation=0),
     r"kernel_dilation must be >= 1"),
    ("input dilation", dict(x=np.zeros((1, 5, 1)), kernel=np.zeros((3, 1, 1)), input_dilation=-1),
     r"input_dilation must be >= 1"),
    ("padding name", dict(x=np.zeros((1, 5, 1)), kernel=np.zeros((3, 1, 1)), padding="reflect"),
     r"padding must be one of"),
    ("padding negative", dict(x=np.zeros((1, 5, 1)), kernel=np.zeros((3, 1, 1)), padding=-1),
     r"padding must be >= 0"),
    ("padding axes", dict(x=np.zeros((1, 5, 5, 1)), kernel=np.zeros((3, 3, 1, 1)),
                          padding=[(1, 1)]), r"padding must give one entry per spatial axis"),
    ("bias shape", dict(x=np.zeros((1, 5, 2)), kernel=np.zeros((3, 2, 4)), bias=np.zeros(3)),
     r"bias must have shape \(4,\)"),
]


@pytest.mark.parametrize("arguments, message", [case[1:] for case in BAD_CORRELATE_CALLS],
                         ids=[case[0] for case in BAD_CORRELATE_CALLS])
def test_correlate_rejects_bad_input_naming_the_argument(arguments, message):
  with pytest.raises(ValueError, match=message):
    correlate(**arguments)


def test_conv_transpose_rejects_a_channel_mismatch():
  with pytest.raises(ValueError, match=r"y has 3 channels but the kernel produces 4"):
    conv_transpose(np.zeros((1, 4, 3)), np.zeros((3, 2, 4)))


def test_conv_transpose_rejects_an_inconsistent_input_shape():
  with pytest.raises(ValueError, match=r"correlate maps input_shape"):
    conv_transpose(np.zeros((1, 4, 4)), np.zeros((3, 2, 4)), input_shape=(1, 9, 2))


def test_periodic_convolve_rejects_different_shapes():
  with pytest.raises(ValueError, match=r"f and g must have the same shape"):
    periodic_convolve(np.zeros(4), np.zeros(5))


def test_convolve1d_rejects_a_2d_signal():
  with pytest.raises(ValueError, match=r"f must have 1 axes"):
    convolve1d(np.zeros((2, 3)), np.zeros(2))


def test_conv_transpose_takes_a_lowering_and_survives_the_geometry_that_aborts_xla():
  # Issue 17: XLA:CPU aborts the process on this transposed convolution, so it runs in a
  # subprocess; 'auto' and 'tiled' must equal the adjoint of correlate there, 'xla' refuses it.
  code = """
import jax.numpy as jnp, numpy as np
from cnn_jax.ops import conv_transpose, correlate
rng = np.random.default_rng(0)
w, y = rng.standard_normal((4, 2, 2, 1)), rng.standard_normal((1, 3, 6, 1))
x = rng.standard_normal((1, 6, 10, 2))
forward = float(jnp.vdot(correlate(x, w, stride=2, padding=1, lowering='tiled'), y))
for lowering in ('auto', 'tiled'):
  backward = float(jnp.vdot(conv_transpose(y, w, stride=2, padding=1, lowering=lowering), x))
  assert abs(forward - backward) <= 1e-4 * abs(forward), (lowering, forward, backward)
"""
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, XLA_FLAGS=""))
  assert result.returncode == 0, result.stderr[-2000:]
  with pytest.raises(ValueError, match=r"lowering='auto' or 'tiled'"):
    conv_transpose(jnp.ones((1, 3, 6, 1)), jnp.ones((4, 2, 2, 1)), stride=2, padding=1,
                   lowering="xla")
