import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax.analysis.shift_consistency import shift_consistency

# The module, not the function of the same name that `cnn_jax.analysis` exports.
shift_consistency_module = importlib.import_module("cnn_jax.analysis.shift_consistency")

KEY = jax.random.PRNGKey(7)


def position_classifier(images):
  """Logit k = the k-th pixel of the first row: its prediction follows the content's position."""
  return images[:, 0, :, 0]


def test_circular_network_is_fully_consistent_under_circular_shifts(images, conv_net):
  _, apply_fn = conv_net(jax.random.PRNGKey(0))
  assert shift_consistency(apply_fn, images, KEY, max_shift=4, mode="circular") == 1.0


def test_constant_classifier_is_fully_consistent(images):
  constant = lambda x: jnp.tile(jnp.arange(3.0), (x.shape[0], 1))
  assert shift_consistency(constant, images, KEY, mode="crop") == 1.0


def test_no_shift_is_fully_consistent(images):
  assert shift_consistency(position_classifier, images, KEY, max_shift=0) == 1.0


def column_images(columns, width=12):
  """Images whose every row is one-hot at `columns[n]`: a column-reading classifier's top-1 is
  that column, moved by the horizontal part of a circular shift and unchanged by the vertical."""
  images = np.zeros((len(columns), width, width, 1), np.float32)
  images[np.arange(len(columns)), :, columns, 0] = 1.0
  return images


def test_consistency_is_the_mean_agreement_over_all_passes(monkeypatch):
  # Deterministic shifts, in the order the metric draws them (first, second; pass by pass).
  none, right = [0, 0], [0, 1]
  draws = iter(np.array(shifts, np.int32) for shifts in [
      [none] * 4, [none] * 4,  # pass 1: the same shifts, all 4 agree
      [none] * 4, [right] * 4,  # pass 2: every image moved one column apart, none agrees
      [right, right, none, none], [right] * 4])  # pass 3: images 0 and 1 agree
  monkeypatch.setattr(shift_consistency_module, "random_shifts",
                      lambda key, num_images, max_shift: next(draws))
  consistency = shift_consistency(position_classifier, column_images([2, 4, 6, 8]), KEY,
                                  max_shift=1, mode="circular", num_passes=3)
  assert consistency == pytest.approx((1.0 + 0.0 + 0.5) / 3, abs=1e-6)  # float32 mean of 3


def test_position_reading_classifier_agrees_as_often_as_two_random_shifts_coincide():
  # The top-1 follows the horizontal shift, so two shifts uniform in {-3..3} agree with
  # probability 1/7 (no wrap-around: the content is 3 columns or more from each side).
  columns = np.random.default_rng(0).integers(3, 9, 400)
  consistency = shift_consistency(position_classifier, column_images(columns), KEY,
                                  max_shift=3, mode="circular", num_passes=5)
  # 2,000 pairs: the standard deviation of the estimate is sqrt((1/7)(6/7) / 2000) = 0.008.
  assert consistency == pytest.approx(1 / 7, abs=0.03)


def test_strided_zero_padded_network_is_measurably_inconsistent(images, conv_net):
  _, apply_fn = conv_net(jax.random.PRNGKey(0), stride=2, padding="same", global_pool=False)
  consistency = shift_consistency(apply_fn, images, KEY, max_shift=3, mode="circular",
                                  num_passes=4)
  assert 0.0 < consistency < 1.0


@pytest.mark.parametrize("arguments, message", [
    ({"max_shift": -1}, "max_shift must be an int >= 0, got -1"),
    ({"num_passes": 0}, "num_passes must be an int >= 1, got 0"),
    ({"mode": "wrap"}, "mode must be one of"),
])
def test_bad_arguments_are_rejected(images, arguments, message):
  with pytest.raises(ValueError, match=message):
    shift_consistency(position_classifier, images, KEY, **arguments)
