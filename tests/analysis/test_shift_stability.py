import jax
import jax.numpy as jnp
import pytest

from cnn_jax.analysis.shift_stability import prediction_change_under_shift


def test_constant_classifier_never_changes(images):
  constant = lambda x: jnp.tile(jnp.array([0.0, 2.0, 1.0]), (x.shape[0], 1))
  assert prediction_change_under_shift(constant, images) == {"p_top1_change": 0.0,
                                                             "mean_abs_change": 0.0}


def test_circular_network_never_changes_under_circular_shifts(images, conv_net):
  _, apply_fn = conv_net(jax.random.PRNGKey(0))
  result = prediction_change_under_shift(apply_fn, images, mode="circular")
  assert result["p_top1_change"] == 0.0
  assert result["mean_abs_change"] < 1e-5


def test_diagonal_position_classifier_changes_at_every_step():
  # One bright pixel on the diagonal; logit k reads pixel (k, k), so the class is the position.
  images = jnp.zeros((3, 12, 12, 1)).at[:, 6, 6, 0].set(1.0)
  diagonal = lambda x: 10 * jnp.diagonal(x[..., 0], axis1=1, axis2=2)
  result = prediction_change_under_shift(diagonal, images, num_positions=8)
  assert result["p_top1_change"] == 1.0
  # The top class (pixel 6) holds probability e^10 / (e^10 + 11) at the centre position and
  # 1 / (e^10 + 11) elsewhere: only the two steps into and out of the centre change it.
  peak = jnp.exp(10.0) / (jnp.exp(10.0) + 11) - 1 / (jnp.exp(10.0) + 11)
  assert result["mean_abs_change"] == pytest.approx(float(2 * peak / 7), rel=1e-5)


def test_too_few_positions_are_rejected(images):
  with pytest.raises(ValueError, match="num_positions must be an int >= 2, got 1"):
    prediction_change_under_shift(lambda x: x[:, 0, :, 0], images, num_positions=1)
