import jax
import jax.numpy as jnp
import pytest

from cnn_jax.analysis.shift_consistency import shift_consistency

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


def test_position_reading_classifier_is_inconsistent(images):
  consistency = shift_consistency(position_classifier, images, KEY, max_shift=3, num_passes=4)
  # Two independent horizontal shifts agree with probability 1/7, so the top-1 rarely agrees.
  assert consistency < 0.5


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
