import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from experiments import seed_statistics
from experiments.seed_statistics import Comparison, summarize, verdict

finite_floats = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


def test_summary_uses_sample_std_and_t_interval():
  summary = summarize([1.0, 2.0, 3.0, 4.0, 5.0])
  assert summary.n == 5 and summary.mean == 3.0
  assert summary.std == pytest.approx(math.sqrt(2.5))  # sum of squares 10 over n - 1 = 4
  half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)  # t_{0.975, 4} from tables
  assert (summary.low, summary.high) == pytest.approx((3.0 - half, 3.0 + half))


def test_summary_drops_nan_and_none_and_handles_small_cells():
  assert summarize([1.0, float("nan"), None, 3.0]).n == 2
  one = summarize([0.7])
  assert one.mean == 0.7 and math.isnan(one.std) and math.isnan(one.low)
  assert summarize([]).n == 0 and math.isnan(summarize([None]).mean)
  constant = summarize([0.5] * 5)
  assert constant.low == constant.high == 0.5


@settings(max_examples=50, deadline=None)
@given(st.lists(finite_floats, min_size=2, max_size=12))
def test_interval_contains_the_mean_and_widens_with_confidence(values):
  narrow, wide = summarize(values, 0.8), summarize(values, 0.99)
  # 1e-9 relative slack: the mean and the bounds are sums of the same float64 values.
  slack = 1e-9 * (1 + abs(narrow.mean))
  assert narrow.low - slack <= narrow.mean <= narrow.high + slack
  assert wide.low <= narrow.low + slack and wide.high >= narrow.high - slack


def test_welch_matches_its_definition():
  a, b = [0.90, 0.92, 0.91, 0.93, 0.89], [0.95, 0.97, 0.94, 0.99, 0.96, 0.93]
  x, y = np.array(a), np.array(b)
  se2 = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
  t = (y.mean() - x.mean()) / math.sqrt(sum(se2))
  dof = sum(se2) ** 2 / (se2[0] ** 2 / (len(x) - 1) + se2[1] ** 2 / (len(y) - 1))
  result = seed_statistics.welch_test(a, b)
  assert result.difference == pytest.approx(y.mean() - x.mean())
  assert result.p_value == pytest.approx(2 * stats.t.sf(abs(t), dof), rel=1e-9)


def test_welch_on_constant_cells():
  assert math.isnan(seed_statistics.welch_test([1.0, 1.0], [1.0, 1.0]).p_value)
  assert seed_statistics.welch_test([1.0, 1.0], [0.5, 0.5]).p_value == 0.0


def test_paired_test_sees_a_consistent_shift_that_welch_misses():
  a = [0.1, 0.5, 0.9, 0.3, 0.7]
  b = [v + 0.01 + 0.001 * i for i, v in enumerate(a)]
  assert seed_statistics.paired_test(a, b).p_value < 1e-3
  assert seed_statistics.welch_test(a, b).p_value > 0.5


def test_permutation_test_is_exact_for_separated_small_cells():
  # 5 vs 5 fully separated: the observed split is 2 of C(10, 5) = 252 relabelings (two-sided).
  result = seed_statistics.bootstrap_test([0, 1, 2, 3, 4], [10, 11, 12, 13, 14])
  assert result.difference == 10.0 and result.p_value == pytest.approx(2 / 252)


def test_difference_interval_brackets_a_clear_difference():
  low, high = seed_statistics.difference_interval([0.0, 0.1, 0.2, 0.1], [1.0, 1.1, 0.9, 1.0])
  assert 0.7 < low < 0.9 < high < 1.1


@pytest.mark.parametrize("sign, difference, p, expected", [
    (1, 0.1, 0.01, "supported"), (-1, -0.1, 0.01, "supported"), (1, -0.1, 0.01, "opposite"),
    (-1, 0.1, 0.049, "opposite"), (1, 0.1, 0.05, "not supported"),
    (1, 0.1, 0.3, "not supported"), (1, 0.0, float("nan"), "not supported")])
def test_verdict(sign, difference, p, expected):
  assert verdict(sign, Comparison(difference, p, "Welch t")) == expected


@pytest.mark.parametrize("call, message", [
    (lambda: verdict(0, Comparison(1.0, 0.01, "t")), "expected_sign must be 1 or -1, got 0"),
    (lambda: verdict(1, Comparison(1.0, 0.01, "t"), alpha=1.5), "alpha must be in"),
    (lambda: summarize([1.0, 2.0], confidence=95), "confidence must be in"),
    (lambda: seed_statistics.welch_test([1.0], [1.0, 2.0]), "at least 2 finite values, got 1"),
    (lambda: seed_statistics.paired_test([1.0, 2.0], [1.0]), "equal lengths, got 2 and 1"),
])
def test_bad_arguments_are_rejected(call, message):
  with pytest.raises(ValueError, match=message):
    call()


def test_formatting():
  assert seed_statistics.format_summary(summarize([0.5, 0.7])).startswith("0.600 ± 0.141 [")
  assert seed_statistics.format_summary(summarize([0.5])) == "0.500"
  assert seed_statistics.format_summary(summarize([])) == "–"
  assert seed_statistics.format_p(3e-6) == "< 1e-4"
  assert seed_statistics.format_p(0.0512) == "0.0512"
