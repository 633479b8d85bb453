"""Tests of tools/conv_gradient_map.py: its NumPy reference, and the map it draws of XLA:CPU.

The map is a fact about the installed jaxlib (0.10.2). If these tests fail after an upgrade,
XLA changed: rerun the full scan and update `cnn_jax.ops.lowering.xla_convolution_failure` and
`docs/conv_gradients.md`.
"""

import itertools

import numpy as np
import pytest

from tools import conv_gradient_map as gradient_map
from tools.conv_gradient_map import Case


def _by_definition(x, kernel, case: Case) -> np.ndarray:
  """`y[b, n, o] = sum_{k, c} x_pad[b, n S + k D, g(o) C_g + c] w[k, c, o]`, one at a time."""
  x_pad = gradient_map._padded(np.asarray(x, np.float64), case)
  out_size = case.output_size()
  channels_out = kernel.shape[-1]
  per_group_out = channels_out // case.groups
  y = np.zeros((x.shape[0],) + out_size + (channels_out,))
  for b, n, o in itertools.product(range(x.shape[0]), np.ndindex(*out_size),
                                   range(channels_out)):
    group = o // per_group_out
    for k in np.ndindex(*case.kernel):
      position = tuple(i * s + j * d for i, j, s, d in zip(n, k, case.stride, case.dilation))
      for c in range(case.channels_in):
        y[(b,) + n + (o,)] += (x_pad[(b,) + position + (group * case.channels_in + c,)]
                               * kernel[k + (c, o)])
  return y


REFERENCE_CASES = [
    gradient_map.ISSUE_20,
    Case((5,), (2,), (2,), (2,), (2,), ((-1, 3),), groups=2, batch=2, channels_in=2,
         channels_out=1),
    Case((4, 3), (2, 3), (1, 2), (1, 1), (2, 1), ((2, -1), (3, 1)), groups=1, channels_in=2,
         channels_out=2),
    Case((3, 2, 3), (2, 1, 2), (2, 1, 1), (1, 1, 2), (1, 2, 1), ((0, 1), (1, 0), (2, 2)),
         groups=3),
]


@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_numpy_reference_is_the_definition_and_its_adjoint(case):
  x, kernel, dy = gradient_map._inputs(case, seed=1)
  y, dx, dkernel = gradient_map.numpy_reference(x, kernel, dy, case)
  # float64 sums of a few products of float32 inputs: equal to rounding.
  np.testing.assert_allclose(y, _by_definition(x, kernel, case), rtol=1e-12, atol=1e-12)
  # y is bilinear: <dy, y(x, w)> = <dx, x> = <dkernel, w> for the adjoints of both arguments.
  inner = np.sum(dy * y)
  np.testing.assert_allclose(np.sum(dx * x), inner, rtol=1e-10, atol=1e-10)
  np.testing.assert_allclose(np.sum(dkernel * kernel), inner, rtol=1e-10, atol=1e-10)


def _assert_the_map_holds(cases, results):
  """Aborts exactly where the rule says, wrong values only inside its 'wrong' region, and the
  explicit-padding formulation right wherever the guard uses it."""
  for case, result in zip(cases, results):
    predicted, observed = gradient_map.predicted_failure(case), gradient_map.outcome(result)
    assert (observed == "abort") == (predicted == "abort"), (case, result)
    assert observed != "wrong" or predicted == "wrong", (case, result)
    if predicted == "wrong":
      assert gradient_map.outcome(result, "explicit") == "ok", (case, result)


def test_the_reported_neighbourhoods_follow_the_map():
  cases = gradient_map.small_cases()
  results = gradient_map.scan(cases)
  _assert_the_map_holds(cases, results)
  outcomes = {case: gradient_map.outcome(result) for case, result in zip(cases, results)}
  assert outcomes[gradient_map.ISSUE_17] == "abort"
  assert outcomes[gradient_map.FORWARD_ABORT] == "abort"


@pytest.mark.slow
def test_the_full_scan_follows_the_map():
  cases = gradient_map.full_cases()
  _assert_the_map_holds(cases, gradient_map.scan(cases))
