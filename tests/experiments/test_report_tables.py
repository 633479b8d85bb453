import math

import pytest

from experiments import report_tables


def test_cells_use_sample_std_and_drop_missing_values():
  mean, std = report_tables.mean_std([1.0, 3.0, float("nan"), None])
  assert mean == 2.0 and std == pytest.approx(math.sqrt(2.0))  # ddof=1: 2 / (2 - 1)
  assert report_tables.cell([1.0, 3.0]).startswith("2.000 ± 1.414 [")
  assert report_tables.cell([0.25]) == "0.250" and report_tables.cell([]) == "–"
