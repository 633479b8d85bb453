"""On-device data augmentation: pure, jit-able warps of image batches.

Images are float `[N, H, W, C]` on the [0, 1] scale with 0 the black background, so filling
uncovered pixels with 0 embeds the digit or photo in a black canvas (the setting of Biscione &
Bowers 2021 and of Azulay & Weiss 2019, see REFERENCES.md).

Geometry. Pixel `(y, x)` is the point `(y, x)` (row, column; pixel centres on the integer grid)
and the image centre is `c = ((H - 1) / 2, (W - 1) / 2)`. A warp is given by where each output
pixel samples the input: with `p = (y, x) - c`,

    out[p] = in_bilinear(M [p; 1] + c),   M = [A | b] of shape [2, 3],

and samples outside the image read `fill`. Special cases:

* `translate(images, (dy, dx))`: content moves by `(dy, dx)`: `out[y, x] = in[y - dy, x - dx]`,
  `M = [[1, 0, -dy], [0, 1, -dx]]`.
* `rotate(images, theta)`: counter-clockwise as displayed (row 0 at the top), about the centre,
  `M = [[cos t, sin t, 0], [-sin t, cos t, 0]]`; `rotate(x, 90) == jnp.rot90(x, axes=(1, 2))`.

Random augmentations draw one independent transformation per example from
`jax.random.split(key, N)`; `build_augmentation` composes them from a spec string such as
"crop=4,rotate=30,flip".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

AUGMENTATION_NAMES = ("crop", "translate", "rotate", "flip")

# The value each augmentation takes in a spec: crop / translate in pixels, rotate in degrees.
_VALUE_TYPES = {"crop": int, "translate": int, "rotate": float, "flip": None}


def parse_augmentation(spec: str) -> tuple[tuple[str, float | int | None], ...]:
  """Parses "name[=value],..." into `((name, value), ...)`, in the given order.

  "crop=4,rotate=30,flip" -> `(('crop', 4), ('rotate', 30.0), ('flip', None))`; "" -> `()`.
  crop and translate take an int >= 0 (pixels), rotate a float >= 0 (degrees), flip no value.
  """
  if not isinstance(spec, str):
    raise ValueError(f"augmentation spec must be a string such as 'crop=4,flip', got {spec!r}")
  if not spec.strip():
    return ()
  stages = []
  for item in spec.split(","):
    name, has_value, text = (part.strip() for part in item.partition("="))
    if name not in AUGMENTATION_NAMES:
      raise ValueError(f"unknown augmentation {name!r} in spec {spec!r}; allowed names: "
                       f"{AUGMENTATION_NAMES}")
    value_type = _VALUE_TYPES[name]
    if value_type is None:
      if has_value:
        raise ValueError(f"augmentation {name!r} takes no value, got {item.strip()!r} in spec "
                         f"{spec!r}")
      stages.append((name, None))
      continue
    kind = "an int" if value_type is int else "a number"
    try:
      value = value_type(text)
    except ValueError:
      raise ValueError(f"augmentation {name!r} needs {kind} >= 0 as value ({name}=...), got "
                       f"{item.strip()!r} in spec {spec!r}") from None
    if not (value >= 0 and math.isfinite(value)):
      raise ValueError(f"augmentation {name!r} needs {kind} >= 0 as value, got {value!r} in spec "
                       f"{spec!r}")
    stages.append((name, value))
  return tuple(stages)


def _centered_grid(height: int, width: int) -> jax.Array:
  """`[3, H, W]`: homogeneous pixel coordinates `(y - c_y, x - c_x, 1)` about the centre."""
  rows = jnp.arange(height, dtype=jnp.float32) - (height - 1) / 2
  columns = jnp.arange(width, dtype=jnp.float32) - (width - 1) / 2
  grid_y, grid_x = jnp.meshgrid(rows, columns, indexing="ij")
  return jnp.stack([grid_y, grid_x, jnp.ones_like(grid_y)])


def affine_transform(images: jax.Array, matrix: jax.Array, fill: float = 0.0) -> jax.Array:
  """Bilinear warp: `out[p] = in(M [p; 1] + c)` for every output pixel `p` about the centre `c`.

  Bilinear sampling (`jax.scipy.ndimage.map_coordinates`, order 1) of the input extended by
  `fill` outside its border; see the module docstring for the coordinates. Differentiable in
  `matrix` almost everywhere: at sample points on the pixel grid (e.g. the identity) the
  derivative is the one-sided difference towards the next pixel, as for any piecewise-linear
  interpolation.

  Args:
    images: float `[N, H, W, C]`.
    matrix: `[2, 3]` (the same warp for all images) or `[N, 2, 3]`; maps output to input
      locations, in pixels.
    fill: value of the canvas outside the image, a Python float.

  Returns:
    `[N, H, W, C]`, the dtype of `images`.
  """
  images = jnp.asarray(images)
  matrix = jnp.asarray(matrix, jnp.float32)
  if images.ndim != 4:
    raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}")
  if matrix.shape not in ((2, 3), (images.shape[0], 2, 3)):
    raise ValueError(f"matrix must have shape (2, 3) or ({images.shape[0]}, 2, 3) for images of "
                     f"shape {images.shape}, got {matrix.shape}")
  matrix = jnp.broadcast_to(matrix, (images.shape[0], 2, 3))
  height, width = images.shape[1:3]
  grid = _centered_grid(height, width)
  center = jnp.array([(height - 1) / 2, (width - 1) / 2], jnp.float32)[:, None, None]

  def warp_one(image, image_matrix):
    source = jnp.einsum("ij,jhw->ihw", image_matrix, grid) + center  # [2, H, W]
    sample_channel = lambda channel: jax.scipy.ndimage.map_coordinates(
        channel, (source[0], source[1]), order=1, mode="constant", cval=fill)
    return jax.vmap(sample_channel, in_axes=-1, out_axes=-1)(image)

  return jax.vmap(warp_one)(images, matrix).astype(images.dtype)


def translate(images: jax.Array, shift, fill: float = 0.0) -> jax.Array:
  """Integer translation with `fill` entering at the border: `out[y, x] = in[y - dy, x - dx]`.

  Exact (no interpolation). Shifts of at least the image size give an image of `fill`.

  Args:
    images: `[N, H, W, C]`.
    shift: ints `(dy, dx)` for all images, or `[N, 2]` ints, one shift per image.
    fill: value of the pixels that enter the image.

  Returns:
    `[N, H, W, C]`, the dtype of `images`.
  """
  images = jnp.asarray(images)
  shift = jnp.asarray(shift)
  if images.ndim != 4:
    raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}")
  if not jnp.issubdtype(shift.dtype, jnp.integer) or shift.shape not in ((2,),
                                                                         (images.shape[0], 2)):
    raise ValueError(f"shift must be ints of shape (2,) or ({images.shape[0]}, 2), got dtype "
                     f"{shift.dtype} and shape {shift.shape}")
  shift = jnp.broadcast_to(shift, (images.shape[0], 2))
  height, width = images.shape[1:3]
  rows = jnp.arange(height)[:, None, None]
  columns = jnp.arange(width)[None, :, None]

  def translate_one(image, image_shift):
    dy, dx = image_shift[0], image_shift[1]
    # A roll moves the content; the pixels it wraps around are the ones that entered.
    rolled = jnp.roll(image, (dy, dx), axis=(0, 1))
    inside = ((rows - dy >= 0) & (rows - dy < height) & (columns - dx >= 0)
              & (columns - dx < width))
    return jnp.where(inside, rolled, jnp.asarray(fill, image.dtype))

  return jax.vmap(translate_one)(images, shift)


def rotate(images: jax.Array, degrees, fill: float = 0.0) -> jax.Array:
  """Bilinear rotation about the image centre, counter-clockwise as displayed.

  `out[p] = in(R(-theta) p + c)`, `M = [[cos t, sin t, 0], [-sin t, cos t, 0]]`.

  Args:
    images: float `[N, H, W, C]`.
    degrees: a float for all images, or `[N]`, one angle per image.
    fill: value of the canvas outside the image, a Python float.

  Returns:
    `[N, H, W, C]`.
  """
  images = jnp.asarray(images)
  radians = jnp.deg2rad(jnp.asarray(degrees, jnp.float32))
  if radians.shape not in ((), (images.shape[0],)):
    raise ValueError(f"degrees must be a scalar or have shape ({images.shape[0]},), got shape "
                     f"{radians.shape}")
  cos, sin, zero = jnp.cos(radians), jnp.sin(radians), jnp.zeros_like(radians)
  matrix = jnp.stack([jnp.stack([cos, sin, zero], -1), jnp.stack([-sin, cos, zero], -1)], -2)
  return affine_transform(images, matrix, fill)


def _check_amount(name: str, value, kind: type) -> None:
  if not isinstance(value, kind) or isinstance(value, bool) or not value >= 0:
    raise ValueError(f"{name} must be {'an int' if kind is int else 'a number'} >= 0, got "
                     f"{value!r}")


def random_crop(key: jax.Array, images: jax.Array, padding: int) -> jax.Array:
  """Zero-pads by `padding` on every side, then crops `[H, W]` back at a random offset.

  The offset is uniform in `[0, 2 padding]^2`, independently per example: a translation by a
  uniform integer shift in `[-padding, padding]^2` with zeros entering.

  Args:
    key: PRNG key.
    images: `[N, H, W, C]`.
    padding: int >= 0.

  Returns:
    `[N, H, W, C]`.
  """
  _check_amount("padding", padding, int)
  images = jnp.asarray(images)
  num_images, height, width, channels = images.shape
  padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  offsets = jax.vmap(lambda k: jax.random.randint(k, (2,), 0, 2 * padding + 1))(
      jax.random.split(key, num_images))
  crop_one = lambda image, offset: lax.dynamic_slice(
      image, (offset[0], offset[1], 0), (height, width, channels))
  return jax.vmap(crop_one)(padded, offsets)


def random_translate(key: jax.Array, images: jax.Array, max_shift: int) -> jax.Array:
  """`translate` by an integer shift uniform in `[-max_shift, max_shift]^2` per example."""
  _check_amount("max_shift", max_shift, int)
  images = jnp.asarray(images)
  shifts = jax.vmap(lambda k: jax.random.randint(k, (2,), -max_shift, max_shift + 1))(
      jax.random.split(key, images.shape[0]))
  return translate(images, shifts)


def random_rotate(key: jax.Array, images: jax.Array, max_degrees: float) -> jax.Array:
  """`rotate` by an angle uniform in `[-max_degrees, max_degrees]` per example."""
  _check_amount("max_degrees", max_degrees, (int, float))
  images = jnp.asarray(images)
  angles = jax.vmap(lambda k: jax.random.uniform(k, (), minval=-max_degrees,
                                                 maxval=max_degrees))(
      jax.random.split(key, images.shape[0]))
  return rotate(images, angles)


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
  """Horizontal flip (`x -> W - 1 - x`) of each example with probability 1/2."""
  images = jnp.asarray(images)
  flips = jax.vmap(lambda k: jax.random.bernoulli(k))(jax.random.split(key, images.shape[0]))
  return jnp.where(flips[:, None, None, None], images[:, :, ::-1], images)


_RANDOM_AUGMENTATIONS = {
    "crop": random_crop,
    "translate": random_translate,
    "rotate": random_rotate,
    "flip": lambda key, images, _: random_flip(key, images),
}


def build_augmentation(spec: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """The composition of the augmentations of `spec` (see `parse_augmentation`), in order.

  Returns:
    `augment(key, images) -> images`, pure and jit-able: `images` float `[N, H, W, C]`; stage
    `i` uses `jax.random.split(key, len(stages))[i]`. An empty spec gives the identity.
  """
  stages = parse_augmentation(spec)

  def augment(key: jax.Array, images: jax.Array) -> jax.Array:
    for stage_key, (name, value) in zip(jax.random.split(key, len(stages)), stages):
      images = _RANDOM_AUGMENTATIONS[name](stage_key, images, value)
    return images

  return augment
