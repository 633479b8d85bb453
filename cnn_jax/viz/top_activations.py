"""Zeiler & Fergus's figure: for a unit, the dataset images that excite it most, cropped to its
receptive field, next to their deconvnet projections.

`top_activations` scans a dataset once and keeps, per channel of a layer, the k images whose
strongest activation of that channel is largest (one position per image, the argmax).
`deconvnet_figure` crops each of them to the receptive field of the unit at that position
(`cnn_jax.models.inspect.traced_receptive_field`) and projects the unit back to pixels
(`projection.project`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cnn_jax.viz import grids, projection
from cnn_jax.models.inspect import field_bounds, traced_receptive_field


class TopActivations(NamedTuple):
  """The k strongest images per channel, strongest first.

  Attributes:
    channels: `[C_sel]` the channels searched.
    values: `[C_sel, k]` each image's largest activation of the channel.
    positions: `[C_sel, k, len(spatial)]` where in the layer it occurs.
    indices: `[C_sel, k]` the images' positions in the scanned stream.
    images: `[C_sel, k, H, W, C]` the images, as given to the model.
  """
  channels: np.ndarray
  values: np.ndarray
  positions: np.ndarray
  indices: np.ndarray
  images: np.ndarray


def top_activations(model, variables, batches: Iterable, layer: str, channels: Sequence[int],
                    k: int = 9) -> TopActivations:
  """Scans `batches` once for the k images with the strongest activation of each channel.

  Args:
    model, variables: as for `projection.project`.
    batches: an iterable of `[B, H, W, C]` preprocessed image batches (any B, padding removed).
    layer: an 'intermediates' name with spatial axes, `[N, *spatial, C_layer]`.
    channels: the channels of `layer` to search.
    k: images kept per channel.

  Returns:
    `TopActivations`; fewer than k per channel if the stream has fewer images.
  """
  if not isinstance(k, int) or k < 1:
    raise ValueError(f"k must be an int >= 1, got {k!r}")
  channels = np.asarray(channels, np.int32)
  if channels.ndim != 1 or channels.size == 0:
    raise ValueError(f"channels must be a non-empty sequence of ints, got {channels!r}")

  @jax.jit
  def strongest(variables, images):
    activation = projection.layer_function(model, variables, layer)(images)[..., channels]
    flat = activation.reshape(activation.shape[0], -1, len(channels))
    argmax = jnp.argmax(flat, axis=1)  # [B, C_sel]
    values = jnp.take_along_axis(flat, argmax[:, None], axis=1)[:, 0]
    positions = jnp.stack(jnp.unravel_index(argmax, activation.shape[1:-1]), axis=-1)
    return values.T, jnp.swapaxes(positions, 0, 1)

  best = None
  seen = 0
  for batch in batches:
    batch = np.asarray(batch, np.float32)
    if best is None:
      shape = projection.check_layer(model, variables, batch, layer).shape
      if len(shape) < 3:
        raise ValueError(f"layer must have spatial axes for a top-k search, got {layer!r} of "
                         f"shape {tuple(shape)}")
      if channels.min() < 0 or channels.max() >= shape[-1]:
        raise ValueError(f"channels must lie in [0, {shape[-1]}), got {channels.tolist()}")
    values, positions = map(np.asarray, strongest(variables, batch))  # [C_sel, B], [C_sel, B, d]
    candidate = TopActivations(
        channels, values, positions,
        np.broadcast_to(np.arange(seen, seen + len(batch)), values.shape),
        np.broadcast_to(batch, (len(channels),) + batch.shape))
    seen += len(batch)
    if best is not None:
      candidate = TopActivations(channels, *(np.concatenate([old, new], axis=1) for old, new in
                                             zip(best[1:], candidate[1:])))
    order = np.argsort(-candidate.values, axis=1, kind="stable")[:, :k]
    best = TopActivations(channels, *(np.take_along_axis(
        field, order.reshape(order.shape + (1,) * (field.ndim - 2)), axis=1)
        for field in candidate[1:]))
  if best is None:
    raise ValueError("batches must yield at least one batch of images")
  return best


def crop(image: np.ndarray, rows: tuple[int, int], columns: tuple[int, int],
         fill: float = 0.0) -> np.ndarray:
  """`image[rows[0]:rows[1]+1, columns[0]:columns[1]+1]` of `[H, W, C]`, `fill` outside it."""
  top, bottom = rows
  left, right = columns
  height, width = image.shape[:2]
  padded = np.pad(image, ((max(0, -top), max(0, bottom - height + 1)),
                          (max(0, -left), max(0, right - width + 1)), (0, 0)),
                  constant_values=fill)
  top_in, left_in = top + max(0, -top), left + max(0, -left)
  return padded[top_in:top_in + bottom - top + 1, left_in:left_in + right - left + 1]


class DeconvnetFigure(NamedTuple):
  """Per channel, k projections and k image patches, all cropped to the receptive field.

  Attributes:
    projections: `[C_sel, k, h, w, C]` on [0, 1], mid-grey = 0 (`grids.signed_to_unit`).
    patches: `[C_sel, k, h, w, C]` on [0, 1] (each image min-max rescaled before cropping).
  """
  projections: np.ndarray
  patches: np.ndarray

  def montage(self, scale: int = 1, gap: int = 1) -> np.ndarray:
    """One row per channel: k projections, a `3 gap` space, k patches, each enlarged `scale` x.

    Returns:
      `[C_sel h s + (C_sel - 1) gap, 2 k w s + (2 k + 1) gap, C]`, `s = scale`.
    """
    def row(tiles):
      return grids.image_grid(np.stack([grids.upscale(tile, scale) for tile in tiles]),
                              len(tiles), gap)

    rows = []
    for channel_projections, channel_patches in zip(self.projections, self.patches):
      left, right = row(channel_projections), row(channel_patches)
      spacer = np.ones((left.shape[0], 3 * gap, left.shape[2]), np.float32)
      rows.append(np.concatenate([left, spacer, right], axis=1))
    return grids.stack_vertically(rows, gap)


def deconvnet_figure(model, variables, top: TopActivations, layer: str,
                     method: str = "deconvnet") -> DeconvnetFigure:
  """The figure of Zeiler & Fergus (2014, Fig. 2) for the channels of `top`.

  Each unit is projected alone (`projection.project` at its recorded position) and both the
  projection and the image are cropped to the unit's receptive field, `[h, w]` = its size per
  axis (the whole image when the unit sees all of it); pixels of the field outside the image
  (padding) are black in the patch and mid-grey (zero) in the projection.

  Args:
    model, variables: the model scanned by `top_activations`.
    top: its result for `layer`.
    layer: the layer of `top`.
    method: 'deconvnet', 'guided_backprop' or 'saliency'.

  Returns:
    `DeconvnetFigure`; `.montage()` is the image.
  """
  image_shape = top.images.shape[2:]
  fields = traced_receptive_field(projection.layer_function(model, variables, layer),
                                  (1,) + image_shape)
  all_projections, all_patches = [], []
  for channel, channel_images, positions in zip(top.channels, top.images, top.positions):
    projections, _ = projection.project(model, variables, channel_images, layer, int(channel),
                                        positions, method=method)
    channel_projections, channel_patches = [], []
    for image, signal, position in zip(channel_images, np.asarray(projections), positions):
      if fields is None:
        bounds = [(0, size - 1) for size in image_shape[:-1]]
      else:
        bounds = [field_bounds(field, int(unit)) for field, unit in zip(fields, position)]
      channel_projections.append(crop(grids.signed_to_unit(signal), *bounds, fill=0.5))
      channel_patches.append(crop(grids.rescale_to_unit(image), *bounds))
    all_projections.append(np.stack(channel_projections))
    all_patches.append(np.stack(channel_patches))
  return DeconvnetFigure(np.stack(all_projections), np.stack(all_patches))
