"""Tests of cnn_jax/ops/lowering.py: every lowering computes the correlation exactly.

Values, both gradients and forward-mode derivatives must agree with a reference that is correct
by construction, the float64 NumPy sums over the kernel's taps of `tools/conv_gradient_map.py`
(XLA's own gradients are wrong or abort for some paddings: `docs/conv_gradients.md`), for any
shape, stride, padding, dilation and group count, whatever the tile size (a tiny `tile_bytes`
forces one row per tile, a large one the whole batch in one tile) and whichever parts run tiled.
Geometries that abort XLA are tested in subprocesses, so that an abort fails a test instead of
killing pytest.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, example, given, note, settings
from hypothesis import strategies as st

from cnn_jax import ops
from cnn_jax.ops import conv, lowering
from tools import conv_gradient_map as gradient_map

# float32 sums of at most a few hundred unit-normal products against float64: ~1e-6 relative.
TOLERANCE = dict(rtol=1e-4, atol=1e-4)
ALTERNATIVES = tuple(name for name in ops.lowering.available_lowerings() if name != "xla")


def _values_and_gradients(correlate, x, kernel, bias, dy):
  """`y` and the vector-Jacobian products with respect to x, the kernel and the bias."""
  def run(x, kernel, bias):
    y, pullback = jax.vjp(lambda x, k, b: correlate(x, k) + b, x, kernel, bias)
    return (y,) + pullback(dy)
  return jax.jit(run)(x, kernel, bias)


def _reference_values_and_gradients(x, kernel, bias, dy, options):
  """`(y, dx, dkernel, dbias)` of `ops.correlate(x, kernel, **options) + bias` in NumPy float64.

  Circular padding is the periodic extension of x followed by a 'valid' correlation; its
  adjoint adds each padded position's gradient into the pixel it copies.
  """
  x, kernel, dy = (np.asarray(a, np.float64) for a in (x, kernel, dy))
  correlation = conv.resolve_correlation(x.shape, kernel.shape, **options)
  spatial, pads = x.shape[1:-1], correlation.pads
  if correlation.circular:
    x = np.pad(x, ((0, 0),) + pads + ((0, 0),), mode="wrap")
    pads = ((0, 0),) * len(spatial)
  case = gradient_map.Case(
      x.shape[1:-1], kernel.shape[:-2], correlation.strides, correlation.kernel_dilations,
      correlation.input_dilations, pads, groups=correlation.groups, batch=x.shape[0],
      channels_in=kernel.shape[-2], channels_out=kernel.shape[-1] // correlation.groups)
  y, dx, dkernel = gradient_map.numpy_reference(x, kernel, dy, case)
  if correlation.circular:
    for axis, (n, (lo, hi)) in enumerate(zip(spatial, correlation.pads), start=1):
      folded = np.zeros(dx.shape[:axis] + (n,) + dx.shape[axis + 1:])
      np.add.at(folded, (slice(None),) * axis + ((np.arange(n + lo + hi) - lo) % n,), dx)
      dx = folded
  return y + np.asarray(bias), dx, dkernel, dy.sum(axis=tuple(range(dy.ndim - 1)))


@st.composite
def correlation_problems(draw):
  """A random correlation: x shape, kernel shape and the options of `ops.correlate`."""
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
  return (batch,) + spatial + (channels_in,), kernel_size + (channels_in // groups,
                                                             channels_out), options


def _random_problem(problem, seed):
  """x, kernel, bias and an output cotangent for a valid problem (else the example is skipped).

  Geometries where XLA would abort ('xla' rejects them) are skipped too: they run in the
  subprocesses of `test_no_lowering_aborts_or_errs_near_the_reported_geometries`.
  """
  x_shape, kernel_shape, options = problem
  try:
    y_shape = jax.eval_shape(lambda x, k: ops.correlate(x, k, lowering="xla", **options),
                             jax.ShapeDtypeStruct(x_shape, jnp.float32),
                             jax.ShapeDtypeStruct(kernel_shape, jnp.float32)).shape
  except ValueError:
    y_shape = None
  assume(y_shape is not None and all(n > 0 for n in y_shape))
  note(f"x {x_shape}, kernel {kernel_shape}, {options}")
  keys = jax.random.split(jax.random.key(seed), 4)
  return (jax.random.normal(keys[0], x_shape), jax.random.normal(keys[1], kernel_shape),
          jax.random.normal(keys[2], kernel_shape[-1:]), jax.random.normal(keys[3], y_shape))


def _xla_gpu_rejects(correlation) -> bool:
  """On a GPU, whether XLA's convolutions of this correlation may not compile."""
  return jax.default_backend() == "gpu" and lowering.xla_gpu_rejects(correlation)


# The two reported failures of XLA's gradient, pinned so that every run tries them: issue 20's
# low padding of 3 over a kernel of 3 (XLA's input gradient wrong) and its wider neighbours.
ISSUE_20 = ((2, 2, 1), (3, 1, 3), dict(padding=[(3, 1)]))
ISSUE_20_WIDE = ((2, 3, 2), (2, 2, 8), dict(padding=[(4, 1)], stride=2))


# Each example compiles one program; 8 examples per test (16 between the two tests of
# correlate) cover every option within the time budget.
@settings(max_examples=8)
@given(correlation_problems(), st.sampled_from(ops.lowering.available_lowerings()),
       st.integers(0, 2 ** 16))
@example(problem=ISSUE_20, name="xla", seed=0)
@example(problem=ISSUE_20, name="auto", seed=0)
@example(problem=ISSUE_20_WIDE, name="xla", seed=1)
@example(problem=ISSUE_20_WIDE, name="tiled", seed=1)
def test_correlate_lowerings_equal_the_reference_in_values_and_gradients(problem, name, seed):
  x, kernel, bias, dy = _random_problem(problem, seed)
  options = problem[2]
  if name == "xla":  # the reference is XLA's, including what XLA:GPU cannot compile
    assume(not _xla_gpu_rejects(conv.resolve_correlation(x.shape, kernel.shape, **options)))
  actual = _values_and_gradients(
      lambda x, k: ops.correlate(x, k, lowering=name, **options), x, kernel, bias, dy)
  expected = _reference_values_and_gradients(x, kernel, bias, dy, options)
  for part, a, e in zip(("y", "dx", "dkernel", "dbias"), actual, expected):
    np.testing.assert_allclose(a, e, err_msg=part, **TOLERANCE)


@settings(max_examples=8)
@given(correlation_problems(), st.sets(st.sampled_from(lowering.TILED_PARTS)), st.booleans(),
       st.sampled_from([1, 64, 2 ** 12, 2 ** 21]), st.integers(0, 2 ** 16))
@example(problem=ISSUE_20, parts=set(), materialize=True, tile_bytes=64, seed=0)
def test_any_tiled_parts_and_tile_size_equal_the_reference(problem, parts, materialize,
                                                          tile_bytes, seed):
  x, kernel, bias, dy = _random_problem(problem, seed)
  correlation = conv.resolve_correlation(x.shape, kernel.shape, **problem[2])
  note(f"tiled {parts}, materialize_input {materialize}, tile_bytes {tile_bytes}")
  if set(parts) != set(lowering.TILED_PARTS):
    assume(not _xla_gpu_rejects(correlation))
  actual = _values_and_gradients(
      lambda x, k: lowering.correlate(x, k, correlation, tiled=frozenset(parts),
                                      materialize_input=materialize, tile_bytes=tile_bytes),
      x, kernel, bias, dy)
  expected = _reference_values_and_gradients(x, kernel, bias, dy, problem[2])
  for part, a, e in zip(("y", "dx", "dkernel", "dbias"), actual, expected):
    np.testing.assert_allclose(a, e, err_msg=part, **TOLERANCE)


def test_no_lowering_aborts_or_errs_near_the_reported_geometries():
  # `tools/conv_gradient_map.py` runs each case in a subprocess and records an abort.
  cases = gradient_map.small_cases()
  results = gradient_map.scan(cases, gradient_map.OPS_FORMULATIONS)
  aborting = 0
  for case, result in zip(cases, results):
    aborts = gradient_map.predicted_failure(case) == "abort"
    aborting += aborts
    assert gradient_map.outcome(result, "ops:tiled") == "ok", (case, result)
    assert gradient_map.outcome(result, "ops:auto") == "ok", (case, result)
    assert gradient_map.outcome(result, "ops:xla") == ("rejected" if aborts else "ok"), (
        case, result)
  assert aborting >= 3  # issue 17's case and neighbours: the guard was exercised


def test_xla_lowering_names_the_shapes_and_the_alternative_where_xla_would_abort():
  x, kernel = jnp.ones((1, 6, 10, 2)), jnp.ones((4, 2, 2, 1))
  with pytest.raises(ValueError, match=r"x shape \(1, 6, 10, 2\).*lowering='auto' or 'tiled'"):
    ops.correlate(x, kernel, stride=2, padding=1, lowering="xla")


@pytest.mark.parametrize("parts", [parts for count in range(4)
                                   for parts in itertools.combinations(lowering.TILED_PARTS,
                                                                       count)])
def test_every_choice_of_tiled_parts_equals_reference_on_a_strided_grouped_3d_problem(parts):
  options = dict(stride=(2, 1, 2), padding="same", kernel_dilation=(1, 2, 1), groups=2)
  x = jax.random.normal(jax.random.key(0), (2, 5, 6, 5, 4))
  kernel = jax.random.normal(jax.random.key(1), (2, 2, 3, 2, 6))
  bias = jnp.zeros(6)
  dy = jax.random.normal(jax.random.key(2), ops.correlate(x, kernel, **options).shape)
  correlation = conv.resolve_correlation(x.shape, kernel.shape, **options)
  expected = _reference_values_and_gradients(x, kernel, bias, dy, options)
  actual = _values_and_gradients(
      lambda x, k: lowering.correlate(x, k, correlation, tiled=frozenset(parts), tile_bytes=256),
      x, kernel, bias, dy)
  for a, e in zip(actual, expected):
    np.testing.assert_allclose(a, e, **TOLERANCE)


@pytest.mark.parametrize("name", ALTERNATIVES)
def test_correlate_lowerings_have_the_reference_forward_mode_derivative(name):
  # jax.jvp must work (the Lie derivative uses it) and give the same tangent.
  options = dict(stride=2, padding="same")
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 32))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 32, 32))
  tangents = (jax.random.normal(jax.random.key(2), x.shape),
              jax.random.normal(jax.random.key(3), kernel.shape))
  jvp = lambda lowering_name: jax.jvp(
      lambda x, k: ops.correlate(x, k, lowering=lowering_name, **options), (x, kernel), tangents)
  for a, e in zip(jvp(name), jvp("xla")):
    np.testing.assert_allclose(a, e, **TOLERANCE)


def _without_onednn(monkeypatch):
  monkeypatch.setattr(lowering.onednn_kernels, "available", lambda: False)


def _with_onednn(monkeypatch):
  monkeypatch.setattr(lowering.onednn_kernels, "available", lambda: True)


def test_auto_runs_unmeasured_shapes_in_onednn_on_cpu_only(monkeypatch):
  _with_onednn(monkeypatch)
  monkeypatch.setattr(lowering, "measured_auto_choices", dict)
  shape, kernel_shape = (128, 32, 32, 64), (3, 3, 64, 64)
  correlation = conv.resolve_correlation(shape, kernel_shape, padding="same")
  dtypes = (jnp.float32, jnp.float32)
  assert lowering.onednn_parts("auto", shape, kernel_shape, correlation, dtypes,
                               "cpu") == set(lowering.TILED_PARTS)
  assert not lowering.tiled_parts("auto", shape, kernel_shape, correlation, "cpu")
  for platform in ("gpu", "tpu"):
    assert not lowering.onednn_parts("auto", shape, kernel_shape, correlation, dtypes, platform)
  # bfloat16 goes to oneDNN where it has optimized bfloat16 kernels; float16 never.
  bfloat16 = (jnp.bfloat16, jnp.bfloat16)
  for supported in (True, False):
    monkeypatch.setattr(lowering.onednn_kernels, "bfloat16_supported", lambda: supported)
    assert bool(lowering.onednn_parts("auto", shape, kernel_shape, correlation, bfloat16,
                                      "cpu")) == supported
  assert not lowering.onednn_parts("auto", shape, kernel_shape, correlation,
                                   (jnp.float16, jnp.float16), "cpu")


def test_the_measured_table_applies_to_float32_only(monkeypatch):
  _with_onednn(monkeypatch)
  monkeypatch.setattr(lowering.onednn_kernels, "bfloat16_supported", lambda: True)
  shape, kernel_shape = (128, 32, 32, 64), (3, 3, 64, 64)
  correlation = conv.resolve_correlation(shape, kernel_shape, padding="same")
  monkeypatch.setattr(lowering, "measured_auto_choices", lambda: _table_for(
      shape, kernel_shape, correlation, {"kernel_gradient": "xla"}))
  choices = lambda dtype: lowering.auto_choices(shape, kernel_shape, correlation,
                                                (dtype, dtype), "cpu")
  assert choices(jnp.float32) == {"forward": "onednn", "input_gradient": "onednn",
                                  "kernel_gradient": "xla"}
  assert choices(jnp.bfloat16) == dict.fromkeys(lowering.TILED_PARTS, "onednn")


def test_auto_without_onednn_tiles_the_kernel_gradient_of_1x1_convolutions_on_cpu_only(
    monkeypatch):
  _without_onednn(monkeypatch)
  shortcut = conv.resolve_correlation((128, 32, 32, 64), (1, 1, 64, 128), stride=2)
  assert lowering.tiled_parts("auto", (128, 32, 32, 64), (1, 1, 64, 128), shortcut,
                              "cpu") == {"kernel_gradient"}
  for platform in ("gpu", "tpu"):
    assert not lowering.tiled_parts("auto", (128, 32, 32, 64), (1, 1, 64, 128), shortcut,
                                    platform)
  assert lowering.tiled_parts("tiled", (128, 32, 32, 64), (1, 1, 64, 128), shortcut,
                              "gpu") == set(lowering.TILED_PARTS)
  assert not lowering.tiled_parts("xla", (128, 32, 32, 64), (1, 1, 64, 128), shortcut, "cpu")


def test_auto_on_a_gpu_tiles_the_convolutions_xla_gpu_may_not_compile():
  # Two geometries whose gradients XLA:GPU failed to compile (jaxlib 0.11.2, one H200): grouped
  # and input-dilated, with one and with three output positions.
  for x_shape, kernel_shape in [((1, 1, 2), (1, 1, 2)), ((1, 2, 2), (1, 1, 2))]:
    rejected = conv.resolve_correlation(x_shape, kernel_shape, groups=2, input_dilation=2)
    assert lowering.xla_gpu_rejects(rejected)
    assert lowering.tiled_parts("auto", x_shape, kernel_shape, rejected, "gpu") == set(
        lowering.TILED_PARTS)
    assert not lowering.tiled_parts("auto", x_shape, kernel_shape, rejected, "tpu")
  # Neighbours that compiled there: no groups; no input dilation.
  for kernel_shape, options in [((1, 2, 2), dict(input_dilation=2)), ((1, 1, 2), dict(groups=2))]:
    correlation = conv.resolve_correlation((1, 1, 2), kernel_shape, **options)
    assert not lowering.xla_gpu_rejects(correlation)
    assert not lowering.tiled_parts("auto", (1, 1, 2), kernel_shape, correlation, "gpu")


@pytest.mark.parametrize("x_shape, kernel_shape, options, tiled", [
    ((128, 32, 32, 64), (1, 1, 64, 128), dict(stride=2), True),  # 1x1 strided shortcut
    ((32, 56, 56, 64), (1, 1, 64, 256), dict(), True),  # 1x1 bottleneck
    ((256, 28, 28, 1), (3, 3, 1, 32), dict(), True),  # one input channel
    ((256, 26, 26, 32), (3, 3, 32, 64), dict(), False),  # 3x3: XLA's is faster
    ((128, 16, 16, 32), (3, 3, 32, 64), dict(stride=2, padding="same"), False),  # strided 3x3
    ((32, 224, 224, 3), (11, 11, 3, 64), dict(stride=4, padding=2), False),  # AlexNet's stem
    ((32, 27, 27, 64), (1, 1, 32, 192), dict(groups=2), False),  # grouped
])
def test_auto_tiles_only_the_kernel_gradients_that_measured_faster(x_shape, kernel_shape,
                                                                   options, tiled):
  correlation = conv.resolve_correlation(x_shape, kernel_shape, **options)
  parts = lowering.auto_tiled_parts(x_shape, kernel_shape, correlation)
  assert parts == ({"kernel_gradient"} if tiled else set())


def test_the_kernel_gradient_input_is_materialized_on_cpu_only_and_never_under_xla():
  assert lowering.materializes_kernel_gradient_input("auto", "cpu")
  assert lowering.materializes_kernel_gradient_input("tiled", "cpu")
  assert not lowering.materializes_kernel_gradient_input("xla", "cpu")
  for platform in ("gpu", "tpu"):
    assert not lowering.materializes_kernel_gradient_input("auto", platform)
    assert not lowering.materializes_kernel_gradient_input("tiled", platform)


@pytest.mark.parametrize("materialize", [False, True])
def test_a_materialized_kernel_gradient_input_survives_jax_and_xla_as_a_conditional(
    materialize):
  # The input is an elementwise chain (batch-norm apply + ReLU), as in a network. JAX drops a
  # conditional whose branches only forward their operand and XLA folds one with a constant
  # predicate; either would silently let XLA fuse the chain into the kernel gradient again.
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
  correlation = conv.resolve_correlation(x.shape, kernel.shape, padding="same")

  def loss(kernel, x, scale):
    layer_input = jax.nn.relu(x * scale + 1.0)
    return lowering.correlate(layer_input, kernel, correlation,
                              materialize_input=materialize).sum()

  optimized = jax.jit(jax.grad(loss)).lower(kernel, x, 0.5).compile().as_text()
  assert ("conditional(" in optimized) == materialize


def test_correlate_rejects_an_unknown_lowering():
  with pytest.raises(ValueError, match="lowering must be one of"):
    ops.correlate(jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 2)), lowering="im2col")


@pytest.mark.parametrize("name", ops.LOWERINGS)
def test_every_lowering_rejects_bad_input_like_the_reference(name):
  x, kernel = jnp.ones((1, 5, 5, 4)), jnp.ones((3, 3, 3, 2))
  with pytest.raises(ValueError, match="groups"):
    ops.correlate(x, kernel, groups=2, lowering=name)


@st.composite
def pooling_problems(draw):
  ndim = draw(st.integers(1, 2))
  window = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
  stride = draw(st.one_of(st.none(), st.tuples(*[st.integers(1, 3)] * ndim)))
  padding = draw(st.one_of(st.sampled_from(("valid", "same")), st.integers(0, 1)))
  shape = (draw(st.integers(1, 2)),) + tuple(draw(st.integers(3, 8)) for _ in range(ndim)) + (
      draw(st.integers(1, 3)),)
  return shape, window, stride, padding


@settings(max_examples=10)
@given(pooling_problems(), st.sampled_from(ALTERNATIVES), st.integers(0, 2 ** 16))
def test_max_pool_lowerings_equal_the_reference_in_values_and_gradients_even_with_ties(
    problem, name, seed):
  shape, window, stride, padding = problem
  if isinstance(padding, int):
    assume(all(padding < f for f in window))  # a window of padding alone has no maximum
  # Small integers make tied maxima common: the gradient must go to the same (first) one.
  x = jax.random.randint(jax.random.key(seed), shape, -2, 3).astype(jnp.float32)
  reference = lambda x: ops.max_pool(x, window, stride, padding, lowering="xla")
  alternative = lambda x: ops.max_pool(x, window, stride, padding, lowering=name)
  dy = jax.random.normal(jax.random.key(seed + 1), jax.eval_shape(reference, x).shape)
  with_gradient = lambda pool: jax.jit(lambda x, dy: (pool(x), jax.vjp(pool, x)[1](dy)[0]))
  y, dx = with_gradient(reference)(x, dy)
  y_alternative, dx_alternative = with_gradient(alternative)(x, dy)
  np.testing.assert_array_equal(y_alternative, y)
  np.testing.assert_allclose(dx_alternative, dx, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ALTERNATIVES)
def test_max_pool_lowerings_have_the_reference_forward_mode_derivative(name):
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 3))
  dx = jax.random.normal(jax.random.key(1), x.shape)
  jvp = lambda lowering_name: jax.jvp(
      lambda x: ops.max_pool(x, 3, 2, "same", lowering=lowering_name), (x,), (dx,))
  for a, e in zip(jvp(name), jvp("xla")):
    np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6)


def test_switch_max_pool_sends_a_tied_windows_gradient_to_its_first_maximum():
  x = jnp.array([[5.0, 5.0], [5.0, 1.0]]).reshape(1, 2, 2, 1)
  (dx,) = jax.grad(lambda x: ops.max_pool(x, 2, lowering="tiled").sum(), argnums=(0,))(x)
  np.testing.assert_array_equal(dx.reshape(2, 2), [[1.0, 0.0], [0.0, 0.0]])


def test_max_pool_uses_switches_on_cpu_under_auto_and_never_under_xla():
  assert lowering.max_pool_uses_switches("auto", "cpu")
  assert not lowering.max_pool_uses_switches("auto", "gpu")
  assert not lowering.max_pool_uses_switches("xla", "cpu")
  assert lowering.max_pool_uses_switches("tiled", "tpu")


@pytest.mark.parametrize("name", ops.LOWERINGS)
def test_max_pool_rejects_bad_input_like_the_reference(name):
  with pytest.raises(ValueError, match="circular"):
    ops.max_pool(jnp.ones((1, 4, 4, 1)), 2, padding="circular", lowering=name)
  with pytest.raises(ValueError, match="lowering must be one of"):
    ops.max_pool(jnp.ones((1, 4, 4, 1)), 2, lowering="switch")


def _table_for(x_shape, kernel_shape, correlation, choices):
  return {lowering.cpu_isa(): {lowering.conv_signature(x_shape, kernel_shape, correlation):
                               choices}}


@pytest.mark.parametrize("onednn_runs", [False, True])
def test_auto_takes_the_measured_choice_per_part_on_cpu_only(monkeypatch, onednn_runs):
  (_with_onednn if onednn_runs else _without_onednn)(monkeypatch)
  x_shape, kernel_shape = (8, 16, 16, 32), (3, 3, 32, 32)
  correlation = conv.resolve_correlation(x_shape, kernel_shape, padding="same")
  choices = {"forward": "xla", "input_gradient": "tiled", "kernel_gradient": "tiled"}
  monkeypatch.setattr(lowering, "measured_auto_choices",
                      lambda: _table_for(x_shape, kernel_shape, correlation, choices))
  dtypes = (jnp.float32, jnp.float32)
  assert lowering.auto_choices(x_shape, kernel_shape, correlation, dtypes, "cpu") == choices
  assert lowering.tiled_parts("auto", x_shape, kernel_shape, correlation, "cpu") == {
      "input_gradient", "kernel_gradient"}
  assert set(lowering.auto_choices(x_shape, kernel_shape, correlation, dtypes,
                                   "gpu").values()) == {"xla"}
  # Another batch size is the same shape to the table; another stride is not.
  assert lowering.auto_choices((2,) + x_shape[1:], kernel_shape, correlation, dtypes,
                               "cpu") == choices
  strided = conv.resolve_correlation(x_shape, kernel_shape, padding="same", stride=2)
  assert set(lowering.auto_choices(x_shape, kernel_shape, strided, dtypes,
                                   "cpu").values()) == {"onednn" if onednn_runs else "xla"}


def test_auto_falls_back_where_the_table_chose_onednn_but_it_cannot_run(monkeypatch):
  _without_onednn(monkeypatch)
  x_shape, kernel_shape = (8, 16, 16, 32), (1, 1, 32, 32)
  correlation = conv.resolve_correlation(x_shape, kernel_shape)
  monkeypatch.setattr(lowering, "measured_auto_choices", lambda: _table_for(
      x_shape, kernel_shape, correlation, dict.fromkeys(lowering.TILED_PARTS, "onednn")))
  assert lowering.auto_choices(x_shape, kernel_shape, correlation,
                               (jnp.float32, jnp.float32), "cpu") == {
      "forward": "xla", "input_gradient": "xla", "kernel_gradient": "tiled"}


def test_auto_never_gives_onednn_a_shape_it_is_not_given(monkeypatch):
  # A table entry cannot override the blocklist (oneDNN#6035's strided 1x1, few channels).
  x_shape, kernel_shape = (8, 16, 16, 8), (1, 1, 8, 32)
  correlation = conv.resolve_correlation(x_shape, kernel_shape, stride=2)
  monkeypatch.setattr(lowering, "measured_auto_choices", lambda: _table_for(
      x_shape, kernel_shape, correlation, dict.fromkeys(lowering.TILED_PARTS, "onednn")))
  assert not lowering.onednn_parts("auto", x_shape, kernel_shape, correlation,
                                   (jnp.float32, jnp.float32), "cpu")


def test_the_shipped_auto_table_names_isa_classes_parts_and_lowerings():
  for isa, shapes in lowering.measured_auto_choices().items():
    assert isa in ("avx2", "avx512", "other")
    for signature, choices in shapes.items():
      assert set(choices) == set(lowering.TILED_PARTS), signature
      assert set(choices.values()) <= {"xla", "tiled", "onednn"}, signature


def test_conv_signature_reads_circular_padding_as_a_valid_correlation_of_the_padded_input():
  circular = conv.resolve_correlation((4, 8, 8, 3), (3, 3, 3, 5), padding="circular")
  valid = conv.resolve_correlation((4, 10, 10, 3), (3, 3, 3, 5))
  assert (lowering.conv_signature((4, 8, 8, 3), (3, 3, 3, 5), circular)
          == lowering.conv_signature((4, 10, 10, 3), (3, 3, 3, 5), valid)
          == "10x10x3 k3x3x3x5 s1x1 p0-0,0-0 d1x1 i1x1 g1")
