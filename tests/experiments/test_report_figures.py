"""The shared figure pieces: sample-std error bars and a log axis that keeps exact zeros."""

import math

from matplotlib.figure import Figure
import numpy as np
import pytest

from experiments import report_figures


def test_seed_summary_uses_the_sample_std_and_zero_for_one_seed():
  means, stds = report_figures.seed_summary([[1.0, 3.0], [2.0], []])
  np.testing.assert_allclose(means[:2], [2.0, 2.0])
  assert stds[0] == pytest.approx(math.sqrt(2.0))  # ddof=1: sqrt(((1-2)^2 + (3-2)^2) / 1)
  assert stds[1] == 0.0 and math.isnan(means[2])


def test_errorbar_draws_nothing_and_no_legend_entry_without_values():
  axis = Figure().subplots()
  assert report_figures.errorbar_over_seeds(axis, [0, 1], [[], [math.nan]], label="empty") == []
  assert axis.get_legend_handles_labels() == ([], [])
  drawn = report_figures.errorbar_over_seeds(axis, [0, 1], [[0.1, 0.3], []], clip_at_zero=True,
                                             label="one point")
  assert drawn == pytest.approx([0.2]) and axis.get_legend_handles_labels()[1] == ["one point"]


def test_zero_aware_log_scale_keeps_exact_zeros_at_zero():
  axis = Figure().subplots()
  report_figures.zero_aware_log_scale(axis, [0.0, 3e-8, 0.4])
  assert axis.get_yscale() == "symlog"
  assert axis.yaxis.get_transform().linthresh == pytest.approx(1e-8)
  assert axis.get_ylim() == pytest.approx((0.0, 1.0))


def test_zero_aware_log_scale_is_linear_when_everything_is_zero():
  axis = Figure().subplots()
  report_figures.zero_aware_log_scale(axis, [0.0, 0.0, math.nan])
  assert axis.get_yscale() == "linear" and axis.get_ylim()[0] == 0.0
