import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax.analysis.lie_derivative import (layer_lie_derivatives, lie_derivative, rotation,
                                             translation, warp_features, warp_images)


def brightness(images, t):
  """`T_t x = e^t x`: a one-parameter group, smooth in t."""
  return images * jnp.exp(t)


def test_lie_derivative_of_a_degree_one_homogeneous_map_is_the_map(images, conv_net):
  # f(e^t x) = e^t f(x) for a bias-free ReLU network, so d/dt at 0 is f(x) itself.
  _, apply_fn = conv_net(jax.random.PRNGKey(0))
  np.testing.assert_allclose(lie_derivative(apply_fn, images, brightness), apply_fn(images),
                             rtol=1e-5, atol=1e-6)


def test_lie_derivative_agrees_with_a_central_finite_difference(images, conv_net):
  _, apply_fn = conv_net(jax.random.PRNGKey(1), activation=jnp.tanh, padding="same")
  warp = lambda x, t: x + t * jnp.sin(3 * x)
  eps = 1e-3
  finite_difference = (apply_fn(warp(images, eps)) - apply_fn(warp(images, -eps))) / (2 * eps)
  np.testing.assert_allclose(lie_derivative(apply_fn, images, warp), finite_difference,
                             rtol=1e-2, atol=1e-4)


def test_an_invariant_map_has_zero_lie_derivative(images):
  # The mean brightness ratio is invariant under T_t x = e^t x.
  ratio = lambda x: x.mean(axis=(1, 2, 3))[:, None] / x.std(axis=(1, 2, 3))[:, None]
  np.testing.assert_allclose(lie_derivative(ratio, images, brightness), 0.0, atol=1e-5)


def test_translation_lie_derivative_is_the_one_sided_finite_difference(centred_images,
                                                                      conv_net):
  # At t = 0 bilinear sampling takes the cell towards the next pixel, which t < 0 moves into.
  _, apply_fn = conv_net(jax.random.PRNGKey(1), activation=jnp.tanh, padding="same")
  transformation = translation("horizontal")
  warp = lambda x, t: warp_images(x, transformation, t)
  eps = 1e-3
  finite_difference = (apply_fn(warp(centred_images, -eps)) - apply_fn(centred_images)) / -eps
  np.testing.assert_allclose(lie_derivative(apply_fn, centred_images, warp), finite_difference,
                             rtol=1e-2, atol=1e-4)


def test_whole_pixel_translation_warp_is_the_integer_shift(centred_images):
  np.testing.assert_allclose(
      warp_images(centred_images, translation("vertical"), jnp.float32(2.0)),
      jnp.roll(centred_images, 2, axis=1), atol=1e-6)
  np.testing.assert_allclose(warp_features(centred_images, translation("horizontal").matrix(
      jnp.float32(-1.0))), jnp.roll(centred_images, -1, axis=2), atol=1e-6)


def test_linear_circular_stack_has_zero_layer_lie_derivatives(centred_images, conv_net):
  # Linear shift-invariant layers commute with the interpolation's one-sided difference, and the
  # global average of a translated, zero-bordered map does not change.
  features_fn, _ = conv_net(jax.random.PRNGKey(0), activation=lambda x: x)
  layers = layer_lie_derivatives(features_fn, centred_images, translation("horizontal"))
  assert [layer.name for layer in layers] == ["conv0", "conv1", "pooled", "logits"]
  for layer in layers:
    assert layer.relative_norm < 1e-5, layer


def test_relu_aliasing_shows_in_the_layer_lie_derivative(centred_images, conv_net):
  features_fn, _ = conv_net(jax.random.PRNGKey(0))
  layers = layer_lie_derivatives(features_fn, centred_images, translation("horizontal"))
  assert layers[0].relative_norm > 1e-2


def test_striding_shows_in_the_layer_lie_derivative(centred_images, conv_net):
  features_fn, _ = conv_net(jax.random.PRNGKey(0), activation=lambda x: x, stride=2)
  conv0 = layer_lie_derivatives(features_fn, centred_images, translation("vertical"))[0]
  assert conv0.relative_norm > 1e-2


def test_strided_layer_lie_derivative_is_the_one_sided_finite_difference(centred_images,
                                                                         conv_net):
  # L_l = d/dt [f_l(T_t x) - T'_t f_l(x)] with T'_t the warp by t / s feature pixels, s = 2 here;
  # estimated from t = -eps (the side the jvp's interpolation cell lies on) with the stride
  # written out, so a scale taken the wrong way round (t s instead of t / s) shows.
  features_fn, _ = conv_net(jax.random.PRNGKey(2), activation=jnp.tanh, stride=2,
                            channels=(3,), global_pool=True)
  transformation = translation("vertical")
  eps = 1e-2
  layer = lambda x: features_fn(x)[0][1]
  features = layer(centred_images)
  moved_input = (layer(warp_images(centred_images, transformation, jnp.float32(-eps)))
                 - features) / -eps
  moved_features = (warp_features(features, transformation.matrix(jnp.float32(-eps / 2)))
                    - features) / -eps
  expected = np.mean(np.linalg.norm((moved_input - moved_features).reshape(16, -1), axis=1))
  conv0 = layer_lie_derivatives(features_fn, centred_images, transformation)[0]
  assert conv0.shape == (16, 6, 6, 3)
  # rtol: the warps are linear in t on [-eps, 0]; what remains is tanh's curvature over
  # eps = 0.01 of a pixel and float32 rounding divided by eps.
  assert conv0.norm == pytest.approx(float(expected), rel=2e-2)


def test_rotation_by_quarter_turns_matches_rot90(centred_images):
  quarter = warp_images(centred_images, rotation(), jnp.float32(jnp.pi / 2))
  np.testing.assert_allclose(quarter, jnp.rot90(centred_images, axes=(1, 2)), atol=1e-5)


def test_unknown_axis_is_rejected():
  with pytest.raises(ValueError, match="axis must be one of"):
    translation("diagonal")
