"""The traced receptive field (`cnn_jax.models.inspect`) against what the visualizations see:
gradient supports, projections, field bounds."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnn_jax.models import get_model
from cnn_jax.models.inspect import field_bounds, traced_receptive_field
from cnn_jax.ops import avg_pool, correlate
from cnn_jax.ops.arithmetic import LayerGeometry, ReceptiveField, receptive_field
from cnn_jax.viz.projection import layer_function, project


def abstract_layer_function(model, image_shape, layer):
  """`layer_function` with all-zero variables made inside the trace (no big allocation)."""
  abstract = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                            jax.ShapeDtypeStruct(image_shape, jnp.float32))
  zeros = lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), abstract)
  return lambda images: layer_function(model, zeros(), layer)(images)


def test_a_unit_after_flattening_sees_the_whole_image():
  image_shape = (1, 28, 28, 1)
  function = abstract_layer_function(get_model("cnn"), image_shape, "fc1")
  assert traced_receptive_field(function, image_shape) is None


def test_field_of_a_strided_same_convolution_starts_where_the_low_padding_says():
  # ops 'same' on 8 pixels, kernel 3, stride 2: total padding 1, all of it on the high side.
  kernel = jnp.ones((3, 3, 1, 1))
  traced = traced_receptive_field(lambda x: correlate(x, kernel, stride=2, padding="same"),
                                  (1, 8, 8, 1))
  assert traced == (ReceptiveField(3, 2, 1.0),) * 2
  assert field_bounds(traced[0], 3) == (6, 8)


@pytest.mark.parametrize("field, unit, bounds", [
    (ReceptiveField(3, 1, 0.0), 0, (-1, 1)),
    (ReceptiveField(4, 2, 0.5), 2, (3, 6)),
    (ReceptiveField(195, 32, 33.0), 5, (96, 290)),  # AlexNet pool5: 33 + 5 * 32 +- 97
])
def test_field_bounds_are_centre_plus_minus_half_the_size(field, unit, bounds):
  assert field_bounds(field, unit) == bounds


class LinearStack(nn.Module):
  """conv 3 'same' -> avg pool 2 -> conv 3 stride 2 'valid' -> conv 2 dilation 2, linear."""
  act: object = nn.relu

  @nn.compact
  def __call__(self, x, train=False):
    del train
    kernels = [self.param(f"k{i}", nn.initializers.normal(1.0), shape) for i, shape in
               enumerate([(3, 3, x.shape[-1], 3), (3, 3, 3, 3), (2, 2, 3, 2)])]
    h = avg_pool(correlate(x, kernels[0], padding="same"), 2)
    h = correlate(h, kernels[1], stride=2)
    out = correlate(h, kernels[2], kernel_dilation=2)
    self.sow("intermediates", "out", out)
    return out


def test_traced_field_is_exactly_the_support_of_a_generic_linear_units_gradient(init_variables):
  # With random weights and no ReLU, a unit depends on every pixel of its field and no other:
  # field size 1 + 2 + 1*1 + 2*2 + 2*4 = 16 (conv 3, pool 2, conv 3 s2, conv 2 d2), jump 4.
  model = LinearStack()
  images = np.random.default_rng(0).normal(size=(1, 32, 32, 2)).astype(np.float32)
  variables = init_variables(model, images)
  fields = traced_receptive_field(layer_function(model, variables, "out"), images.shape)
  assert fields == (receptive_field([LayerGeometry(3, 1, 1, 1), LayerGeometry(2, 2),
                                     LayerGeometry(3, 2), LayerGeometry(2, 1, 2)]),) * 2
  assert fields[0].size == 16 and fields[0].jump == 4
  unit = (2, 3)
  gradient = jax.grad(lambda x: model.apply(variables, x)[0, unit[0], unit[1], 1])(images)
  support = np.abs(np.asarray(gradient[0])).sum(axis=-1) > 0
  (top, bottom), (left, right) = (field_bounds(f, u) for f, u in zip(fields, unit))
  expected = np.zeros_like(support)
  expected[max(top, 0):bottom + 1, max(left, 0):right + 1] = True
  np.testing.assert_array_equal(support, expected)


@settings(max_examples=6, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), channel=st.integers(0, 4),
       method=st.sampled_from(["deconvnet", "guided_backprop", "saliency"]),
       layer=st.sampled_from(["relu0", "pool0", "pool1"]))
def test_a_projections_support_lies_inside_the_units_receptive_field(conv_stack, seed, channel,
                                                                     method, layer):
  model, variables, images = conv_stack(
      seed, image_shape=(2, 20, 20, 3),
      blocks=((3, 5, 2, "same", 2), (3, 5, 1, "valid", 2)))
  channel = channel % projection_channels(model, variables, images, layer)
  projections, positions = project(model, variables, images, layer, channel, method=method)
  fields = traced_receptive_field(layer_function(model, variables, layer), images.shape)
  for signal, position in zip(np.asarray(projections), np.asarray(positions)):
    (top, bottom), (left, right) = (field_bounds(f, int(u)) for f, u in zip(fields, position))
    outside = np.abs(signal).sum(axis=-1)
    outside[max(top, 0):bottom + 1, max(left, 0):right + 1] = 0
    assert not outside.any()


def projection_channels(model, variables, images, layer):
  return layer_function(model, variables, layer)(images).shape[-1]
