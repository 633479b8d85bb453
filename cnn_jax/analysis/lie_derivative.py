"""The Lie derivative of a network under a continuous transformation (Gruver et al. 2022).

For a one-parameter family of warps `T_t` (`T_0 = identity`):

  L f(x) = d/dt f(T_t x) |_{t=0},

one forward-mode `jax.jvp` with respect to the scalar t. An invariant f has `L f = 0`; `||L f||`
is the local invariance violation. For translation, t is in pixels (Gruver's t = 2/W in [-1, 1]
grid units is one pixel); for rotation, in radians. The warps sample bilinearly
(`cnn_jax.data.augment.affine_transform`), so at t = 0 the derivative of the warp is a one-sided
pixel difference (the jvp takes the branch of the interpolation cell that t = 0 falls in).

Per layer. `layer_lie_derivatives` measures the Lie derivative of each prefix `f_{<=l}` in its
own feature space, which needs only the sown activations:

  L_l(x) = d/dt [ f_l(T_t x) - T'_t f_l(x) ] |_{t=0},

with `T'_t` the same warp on the feature map (translation scaled by the cumulative stride s:
`t / s` feature pixels; rotation unchanged) and `T' = identity` for layers without spatial axes.
`L_l = 0` for every l up to the first layer that breaks equivariance. Gruver et al.'s split of the
output's Lie derivative into what each layer introduced, `L f = sum_i J_{>i} L(layer_i)`, is
`cnn_jax.analysis.lie_attribution`.

Caveat: with bilinear warps even an exactly (integer-shift) equivariant ReLU layer has
`L(relu) != 0`, because `relu(y[n+1]) - relu(y[n]) != relu'(y[n]) (y[n+1] - y[n])`: this is the
aliasing of pointwise nonlinearities that Gruver et al. report.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from cnn_jax.analysis.intermediates import FeaturesFn
from cnn_jax.data.augment import affine_transform

MatrixFn = Callable[[jax.Array], jax.Array]

TRANSLATION_AXES = ("vertical", "horizontal")


class Transformation(NamedTuple):
  """A one-parameter family of affine warps `T_t`, as `affine_transform` matrices `t -> [2, 3]`.

  The input is warped by `cnn_jax.data.augment.affine_transform` (zeros enter: the black canvas
  of images on the [0, 1] scale); feature maps by the same matrix with edge extension, since a
  feature map's background is not 0 and a zero border would count as a violation.
  """
  name: str
  matrix: MatrixFn
  scales_with_stride: bool  # True: on a feature map of cumulative stride s, T'_t = T_{t / s}


def translation(axis: str = "horizontal") -> Transformation:
  """Content moves by t pixels along `axis` ('vertical': down, 'horizontal': right)."""
  if axis not in TRANSLATION_AXES:
    raise ValueError(f"axis must be one of {TRANSLATION_AXES}, got {axis!r}")
  direction = jnp.array([1.0, 0.0] if axis == "vertical" else [0.0, 1.0])
  return Transformation(f"translation_{axis}",
                        lambda t: jnp.concatenate([jnp.eye(2), -t * direction[:, None]], axis=1),
                        scales_with_stride=True)


def rotation() -> Transformation:
  """Counter-clockwise rotation by t radians about the image centre (as `augment.rotate`)."""

  def matrix(t):
    cos, sin = jnp.cos(t), jnp.sin(t)
    return jnp.stack([jnp.stack([cos, sin, 0.0 * t]), jnp.stack([-sin, cos, 0.0 * t])])

  return Transformation("rotation", matrix, scales_with_stride=False)


def warp_images(images: jax.Array, transformation: Transformation, t: jax.Array) -> jax.Array:
  """`T_t x` for images `[N, H, W, C]` on the [0, 1] scale: zeros enter at the border."""
  return affine_transform(images, transformation.matrix(t))


def warp_features(features: jax.Array, matrix: jax.Array) -> jax.Array:
  """The warp `out[p] = f(M [p; 1] + c)` of `features: [N, h, w, C]`, bilinear, edge-extended.

  The geometry of `cnn_jax.data.augment.affine_transform` (centre `c`, pixels on the integer
  grid), with the border value repeated outside instead of a constant fill.
  """
  height, width = features.shape[1:3]
  rows = jnp.arange(height, dtype=features.dtype) - (height - 1) / 2
  columns = jnp.arange(width, dtype=features.dtype) - (width - 1) / 2
  grid_y, grid_x = jnp.meshgrid(rows, columns, indexing="ij")
  source_y = matrix[0, 0] * grid_y + matrix[0, 1] * grid_x + matrix[0, 2] + (height - 1) / 2
  source_x = matrix[1, 0] * grid_y + matrix[1, 1] * grid_x + matrix[1, 2] + (width - 1) / 2
  sample = lambda channel: jax.scipy.ndimage.map_coordinates(
      channel, (source_y, source_x), order=1, mode="nearest")
  # Map over the batch and channel axes: map_coordinates works on one 2-D array.
  return jax.vmap(jax.vmap(sample, in_axes=-1, out_axes=-1))(features)


def feature_generator(activation: jax.Array, transformation: Transformation,
                      input_size: int) -> jax.Array:
  """`d/dt T'_t f_l |_{t=0}`: the warp's generator applied to a layer's activation.

  `T'_t` is the warp on a feature map of cumulative stride `s = input_size / h` (translation by
  `t / s` feature pixels; rotation unchanged), and the identity on activations without spatial
  axes, whose generator is 0.

  Args:
    activation: `[N, h, w, C]` or `[N, D]`.
    transformation: `translation(axis)` or `rotation()`.
    input_size: the input images' height H.

  Returns:
    An array of `activation`'s shape.
  """
  if activation.ndim != 4:
    return jnp.zeros_like(activation)
  scale = input_size / activation.shape[1] if transformation.scales_with_stride else 1.0
  zero = jnp.zeros((), activation.dtype)
  _, generator = jax.jvp(lambda t: warp_features(activation, transformation.matrix(t / scale)),
                         (zero,), (jnp.ones_like(zero),))
  return generator


class LayerLieDerivative(NamedTuple):
  """The size of one layer's Lie derivative, averaged over the images."""
  name: str
  shape: tuple[int, ...]
  norm: float  # mean_x ||L_l(x)||
  relative_norm: float  # mean_x ||L_l(x)|| / ||f_l(x)||


def lie_derivative(fn: Callable[[jax.Array], jax.Array], images: jax.Array,
                   warp: Callable[[jax.Array, jax.Array], jax.Array]) -> jax.Array:
  """`L f(x) = d/dt f(warp(x, t))|_{t=0}` by one `jax.jvp`.

  Args:
    fn: `images [N, H, W, C] -> outputs [N, ...]`, differentiable.
    images: `[N, H, W, C]`.
    warp: `(images, t) -> images` with `warp(images, 0) = images`, e.g.
      `lambda x, t: warp_images(x, translation('horizontal'), t)`.

  Returns:
    `[N, ...]`, the derivative of every output with respect to t.
  """
  images = jnp.asarray(images)
  zero = jnp.zeros((), images.dtype)
  _, tangent = jax.jvp(lambda t: fn(warp(images, t)), (zero,), (jnp.ones_like(zero),))
  return tangent


def _per_image_norm(values: jax.Array) -> jax.Array:
  return jnp.linalg.norm(values.reshape(values.shape[0], -1), axis=-1)


def layer_lie_derivatives(features_fn: FeaturesFn, images: jax.Array,
                          transformation: Transformation) -> list[LayerLieDerivative]:
  """The Lie derivative `L_l` of every layer's activation (see the module docstring).

  Args:
    features_fn: `images -> [(name, activation), ...]` in forward order; activations
      `[N, h, w, C]` or `[N, D]`.
    images: `[N, H, W, C]` on the [0, 1] scale (normalize inside `features_fn`).
    transformation: `translation(axis)` or `rotation()`.

  Returns:
    One `LayerLieDerivative` per layer, in forward order.
  """
  images = jnp.asarray(images)
  zero = jnp.zeros((), images.dtype)
  names = []  # filled while tracing: jvp's outputs must be arrays, the layer names are not

  def activations_of(t):
    layers = features_fn(warp_images(images, transformation, t))
    names[:] = [name for name, _ in layers]
    return [activation for _, activation in layers]

  activations, tangents = jax.jvp(activations_of, (zero,), (jnp.ones_like(zero),))
  results = []
  for name, activation, tangent in zip(names, activations, tangents):
    tangent = tangent - feature_generator(activation, transformation, images.shape[1])
    norms = _per_image_norm(tangent)
    # Layers that are zero on an image (dead ReLUs) carry no violation there: count 0, not 0/0.
    feature_norms = _per_image_norm(activation)
    relative = jnp.where(feature_norms > 0, norms / jnp.where(feature_norms > 0, feature_norms, 1),
                         0.0)
    results.append(LayerLieDerivative(name, tuple(activation.shape), float(jnp.mean(norms)),
                                      float(jnp.mean(relative))))
  return results
