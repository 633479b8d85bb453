"""Project one activation back to pixel space: deconvnet, guided backprop and saliency.

Zeiler & Fergus (2014) reconstruct what excites one unit by running the network in reverse from
a feature map in which every activation but the chosen one is zeroed: per layer, unpool through
the switches recorded by the forward max pooling, rectify the signal with ReLU, and filter with
the transposed (spatially flipped) kernels. Reverse-mode differentiation already does two of the
three: the VJP of a max pooling sends each value to the argmax of its window (unpooling through
the switches) and the VJP of a convolution with respect to its input is the transposed
convolution. Only the ReLU rule differs, so the three methods are one VJP with three ReLUs,
swapped into a model through its `act` field. For upstream signal `g` and forward input `x`:

  saliency (Simonyan et al. 2014)          `g * [x > 0]`          (the plain gradient)
  deconvnet (Zeiler & Fergus 2014)         `relu(g)`
  guided backprop (Springenberg et al. 2015) `g * [x > 0] * [g > 0]`

The projection of unit `u = a[n, p, c]` of layer `a = f(image)` is `VJP_f(image)(e)` with
`e = a[n, p, c] * onehot(n, p, c)`: the feature map with every other activation zeroed, as in
the paper. For saliency this is `a_u * d a_u / d image`. Biases drop out of every VJP, as they do
from the paper's reconstruction. Layers that are not piecewise linear (local response
normalization) are reversed through their exact VJP, where the paper's reconstruction leaves
contrast normalization out.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from cnn_jax.analysis.intermediates import intermediates_in_order

ReluBackwardRule = Callable[[jax.Array, jax.Array], jax.Array]

RELU_BACKWARD_RULES: Mapping[str, ReluBackwardRule] = {
    "saliency": lambda upstream, x: upstream * (x > 0),
    "deconvnet": lambda upstream, x: jnp.maximum(upstream, 0),
    "guided_backprop": lambda upstream, x: upstream * (x > 0) * (upstream > 0),
}
METHODS = tuple(RELU_BACKWARD_RULES)


def relu_with_backward_rule(method: str) -> Callable[[jax.Array], jax.Array]:
  """`relu(x) = max(x, 0)` forward, with the backward rule of `method` (see module docstring).

  Args:
    method: one of `METHODS`: 'saliency', 'deconvnet' or 'guided_backprop'.

  Returns:
    An elementwise function `x: [...] -> [...]` with a custom VJP, to pass as a model's `act`.
  """
  if method not in RELU_BACKWARD_RULES:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  backward_rule = RELU_BACKWARD_RULES[method]

  @jax.custom_vjp
  def relu(x):
    return jnp.maximum(x, 0)

  def relu_forward(x):
    return relu(x), x

  def relu_backward(x, upstream):
    return (backward_rule(upstream, x).astype(upstream.dtype),)

  relu.defvjp(relu_forward, relu_backward)
  return relu


def intermediates(model, variables, images: jax.Array) -> dict[str, jax.Array]:
  """Every activation the model sows into 'intermediates', by name, in forward order.

  Names as in `cnn_jax.analysis.intermediates.intermediates_in_order`: the module path and the
  sown name joined by '/', e.g. 'conv1' or 'tower_0/conv1'.

  Args:
    model: a Flax module whose `__call__(x, train)` sows into 'intermediates'.
    variables: its variables ('params', and 'batch_stats' where it has them).
    images: `[N, H, W, C]`.

  Returns:
    `{name: activation}`, each `[N, *spatial, C_layer]` or `[N, C_layer]`.
  """
  _, state = model.apply(variables, images, train=False, mutable=["intermediates"])
  return dict(intermediates_in_order(state.get("intermediates", {})))


def layer_function(model, variables, layer: str) -> Callable[[jax.Array], jax.Array]:
  """The map `images: [N, H, W, C] -> activation of layer: [N, *spatial, C_layer]`."""
  return lambda images: intermediates(model, variables, images)[layer]


def check_layer(model, variables, images: jax.Array, layer: str) -> jax.ShapeDtypeStruct:
  """The shape of `layer`'s activation; ValueError naming the known layers if there is none."""
  shapes = jax.eval_shape(lambda x: intermediates(model, variables, x), images)
  if layer not in shapes:
    raise ValueError(f"layer must be one of the model's intermediates {list(shapes)}, got "
                     f"{layer!r}")
  return shapes[layer]


def strongest_positions(activation: jax.Array, channel: int) -> jax.Array:
  """Per image, the spatial position of the largest activation of one channel.

  Args:
    activation: `[N, *spatial, C]`.
    channel: index into C.

  Returns:
    `[N, len(spatial)]` int32 positions `argmax_p activation[n, p, channel]` (first on ties).
  """
  maps = activation[..., channel]
  spatial_shape = maps.shape[1:]
  if not spatial_shape:  # a dense layer: one unit per channel
    return jnp.zeros((maps.shape[0], 0), jnp.int32)
  flat_argmax = jnp.argmax(maps.reshape(maps.shape[0], -1), axis=1)
  return jnp.stack(jnp.unravel_index(flat_argmax, spatial_shape), axis=1).astype(jnp.int32)


def _check_channel_and_positions(shape: Sequence[int], channel: int, positions) -> None:
  channels, spatial = shape[-1], tuple(shape[1:-1])
  if not isinstance(channel, numbers.Integral) or not 0 <= channel < channels:
    raise ValueError(f"channel must be an int in [0, {channels}), got {channel!r}")
  if positions is None:
    return
  positions = jnp.asarray(positions)
  if positions.shape not in ((len(spatial),), (shape[0], len(spatial))):
    raise ValueError(f"position must have shape ({len(spatial)},) or ({shape[0]}, "
                     f"{len(spatial)}) for a layer of shape {tuple(shape)}, got {positions.shape}")
  if bool(jnp.any(positions < 0)) or bool(jnp.any(positions >= jnp.array(spatial))):
    raise ValueError(f"position must lie in the layer's spatial shape {spatial}, got "
                     f"{positions.tolist()}")


def project(model, variables, images: jax.Array, layer: str, channel: int, position=None,
            method: str = "deconvnet") -> tuple[jax.Array, jax.Array]:
  """Project one activation per image back to pixel space (see module docstring).

  For each image n, unit `u_n = (n, p_n, channel)` of `layer` with activation `a[u_n]` is sent
  back alone: `projection = VJP(image -> a)(a[u_n] onehot(u_n))`, through a copy of the model
  whose `act` is `relu_with_backward_rule(method)`. Images are independent in eval mode, so one
  batched VJP gives every image's projection.

  Args:
    model: a Flax module with an `act` field through which every nonlinearity goes, and whose
      `__call__(x, train)` sows activations into 'intermediates' (e.g. `get_model('cnn')`).
    variables: the model's variables.
    images: `[N, H, W, C]`, preprocessed as the model expects.
    layer: a name from `intermediates(model, variables, images)`.
    channel: the channel of `layer` to project.
    position: the unit's spatial position in the layer, `[len(spatial)]` for every image or
      `[N, len(spatial)]`; None picks each image's strongest activation of `channel`.
    method: 'deconvnet', 'guided_backprop' or 'saliency'.

  Returns:
    `(projections, positions)`: `[N, H, W, C]` and `[N, len(spatial)]` int32.
  """
  if method not in RELU_BACKWARD_RULES:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  if not hasattr(model, "act"):
    raise ValueError(f"model must have an `act` field to swap the ReLU through, got "
                     f"{type(model).__name__} without one")
  images = jnp.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}")
  shape = check_layer(model, variables, images, layer).shape
  _check_channel_and_positions(shape, channel, position)
  reversed_model = model.clone(act=relu_with_backward_rule(method))

  @jax.jit
  def project_batch(variables, images, position):
    activation, pullback = jax.vjp(layer_function(reversed_model, variables, layer), images)
    if position is None:
      positions = strongest_positions(activation, channel)
    else:
      positions = jnp.broadcast_to(position, (images.shape[0], activation.ndim - 2))
    index = (jnp.arange(images.shape[0]),) + tuple(positions.T) + (int(channel),)
    chosen_only = jnp.zeros_like(activation).at[index].set(activation[index])
    (projections,) = pullback(chosen_only)
    return projections, positions.astype(jnp.int32)

  return project_batch(variables, images,
                       None if position is None else jnp.asarray(position, jnp.int32))
