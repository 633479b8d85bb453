"""Every visualization of a model in one directory, with an index page (`write_visualizations`).

Files written into `out_dir`:

  filters.png                 the first layer's filters (RGB on colour data); for the two-tower
                              AlexNet also filters_by_tower.png and each tower's colourfulness
  activations_<layer>.png     one image's activation maps, for every layer with spatial axes
  top<k>_<layer>.png          Zeiler & Fergus's figure: per channel, the deconvnet projections
                              of the k strongest images and the image patches, both cropped to
                              the unit's receptive field
  methods_<layer>.png         per channel, the strongest image and its saliency, deconvnet and
                              guided-backprop projections side by side
  index.md                    the page that shows them all, with the numbers
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import numpy as np
from flax import traverse_util

from cnn_jax.models.alexnet import TOWERS, AlexNet
from cnn_jax.viz import grids
from cnn_jax.viz.feature_maps import activation_grid
from cnn_jax.viz.filters import filter_grid, tower_colourfulness, tower_filter_grid
from cnn_jax.viz.projection import intermediates, layer_function, project
from cnn_jax.viz.top_activations import TopActivations, deconvnet_figure, top_activations

METHOD_TITLES = {
    "saliency": "saliency (Simonyan 2014)",
    "deconvnet": "deconvnet (Zeiler & Fergus 2014)",
    "guided_backprop": "guided backprop (Springenberg 2015)",
}


def first_layer_kernel(params) -> np.ndarray:
  """The first conv kernel `[KH, KW, C_in, C_out]` in creation (forward) order."""
  for path, value in traverse_util.flatten_dict(params).items():
    if path[-1] == "kernel" and np.ndim(value) == 4:
      return np.asarray(value)
  raise ValueError("the model has no conv kernel [KH, KW, C_in, C_out] in its params")


def spatial_layers(activations: dict) -> list[str]:
  """The names of the sown activations with spatial axes, `[N, H, W, C]`, in forward order."""
  return [name for name, value in activations.items() if np.ndim(value) == 4]


def default_layer(activations: dict) -> str:
  """The last layer with spatial axes named 'conv...', else the last one with spatial axes."""
  spatial = spatial_layers(activations)
  if not spatial:
    raise ValueError(f"the model sows no layer with spatial axes: {list(activations)}")
  convs = [name for name in spatial if name.split("/")[-1].startswith("conv")]
  return (convs or spatial)[-1]


def strongest_channels(model, variables, batches, layer: str, count: int) -> list[int]:
  """The `count` channels of `layer` with the largest activation anywhere in `batches`."""
  channel_maxima = jax.jit(
      lambda variables, images: layer_function(model, variables, layer)(images).max(axis=(0, 1, 2)))
  maxima = np.max([np.asarray(channel_maxima(variables, batch)) for batch in batches], axis=0)
  return sorted(int(c) for c in np.argsort(-maxima, kind="stable")[:count])


def methods_figure(model, variables, top: TopActivations, layer: str, scale: int) -> np.ndarray:
  """Per channel a row: the strongest image, then its saliency, deconvnet and guided projections.

  Returns:
    `[C_sel H s + (C_sel - 1) 2, 4 W s + 3 * 2, C]` (tiles `s = scale` times enlarged, 2 apart).
  """
  rows = []
  for channel, images, positions in zip(top.channels, top.images, top.positions):
    tiles = [grids.rescale_to_unit(images[0])]
    for method in METHOD_TITLES:
      projection, _ = project(model, variables, images[:1], layer, int(channel), positions[:1],
                              method=method)
      tiles.append(grids.signed_to_unit(projection[0]))
    rows.append(np.stack([grids.upscale(tile, scale) for tile in tiles]))
  return grids.image_grid(np.concatenate(rows), columns=len(METHOD_TITLES) + 1, gap=2)


def _file_name(prefix: str, layer: str) -> str:
  return f"{prefix}_{layer.replace('/', '_')}.png"


def write_visualizations(out_dir: str, model, variables, batches: Sequence, *,
                         layer: str | None = None, channels: Sequence[int] = (),
                         num_channels: int = 8, top_k: int = 9, scale: int = 0,
                         image_index: int = 0, title: str = "") -> str:
  """Writes the PNGs of the module docstring and `index.md` into `out_dir`.

  Args:
    out_dir: created if missing.
    model, variables: a model with an `act` field that sows 'intermediates' (`cnn_jax.models`).
    batches: preprocessed images `[B, H, W, C]`, scanned (twice when `channels` is empty) for
      the top-k search.
    layer: the layer of the top-k figures; default `default_layer` (the last conv layer).
    channels: its channels to show; default the `num_channels` with the largest activation.
    num_channels: see `channels`.
    top_k: images per channel.
    scale: enlargement of the top-k patches; 0 picks one that makes them about 64 pixels.
    image_index: the image of `batches` (counted across them) whose activation maps are shown.
    title: the page's title.

  Returns:
    The path of `index.md`.
  """
  if not len(batches):
    raise ValueError("batches must hold at least one batch of images, got none")
  sizes = np.cumsum([len(batch) for batch in batches])
  if not 0 <= image_index < sizes[-1]:
    raise ValueError(f"image_index must be in [0, {sizes[-1]}) (the images given), got "
                     f"{image_index!r}")
  batch_index = int(np.searchsorted(sizes, image_index, side="right"))
  within = image_index - (sizes[batch_index - 1] if batch_index else 0)
  activations = intermediates(model, variables, batches[batch_index][within:within + 1])
  layer = layer or default_layer(activations)
  if layer not in spatial_layers(activations):
    raise ValueError(f"layer must be one of the model's layers with spatial axes "
                     f"{spatial_layers(activations)}, got {layer!r}")
  os.makedirs(out_dir, exist_ok=True)
  lines = [f"# Visualizations: {title}" if title else "# Visualizations", ""]

  kernel = first_layer_kernel(variables["params"])
  # Tiles of about 48 pixels: 3x3 MNIST filters 16x, AlexNet's 11x11 4x.
  filter_scale = max(1, 48 // kernel.shape[0])
  grids.save_png(os.path.join(out_dir, "filters.png"), filter_grid(kernel, scale=filter_scale))
  lines += [f"## First-layer filters ({kernel.shape[-1]} filters, "
            f"{'x'.join(map(str, kernel.shape[:3]))})", "", "![filters](filters.png)", ""]
  if isinstance(model, AlexNet) and kernel.shape[2] == 3:
    grids.save_png(os.path.join(out_dir, "filters_by_tower.png"),
                   tower_filter_grid(kernel, TOWERS, scale=filter_scale))
    lines += ["### By tower (tower 0 above)", "", "![filters by tower](filters_by_tower.png)", "",
              "Colourfulness `||w - grey(w)|| / ||w||`, mean over each tower's filters (0: grey "
              "filters, 1: colour-opponent filters; `cnn_jax.viz.filters`):", "",
              "| tower | colourfulness |", "|---|---|"]
    lines += [f"| {tower} | {score:.3f} |"
              for tower, score in enumerate(tower_colourfulness(kernel, TOWERS))] + [""]

  lines += [f"## Activation maps of image {image_index}", ""]
  for name in spatial_layers(activations):
    path = _file_name("activations", name)
    grids.save_png(os.path.join(out_dir, path), activation_grid(activations[name][0], scale=2),
                   colormap="viridis")
    lines += [f"### {name} {tuple(activations[name].shape[1:])}", "", f"![{name}]({path})", ""]

  channels = list(channels) or strongest_channels(model, variables, batches, layer, num_channels)
  top = top_activations(model, variables, batches, layer, channels, top_k)
  figure = deconvnet_figure(model, variables, top, layer)
  field_height, field_width = figure.patches.shape[2:4]
  scale = scale or max(1, 64 // field_height)
  top_path = _file_name(f"top{top_k}", layer)
  grids.save_png(os.path.join(out_dir, top_path), figure.montage(scale, gap=2))
  methods_path = _file_name("methods", layer)
  grids.save_png(os.path.join(out_dir, methods_path), methods_figure(
      model, variables, top, layer, max(1, 96 // top.images.shape[2])))
  lines += [
      f"## {layer}: the top-{top_k} images of each channel (Zeiler & Fergus 2014, Fig. 2)", "",
      f"One row per channel ({', '.join(map(str, channels))}): left, the deconvnet projections "
      f"of each image's strongest unit (mid-grey is zero); right, the image patches; both "
      f"cropped to the unit's receptive field ({field_height}x{field_width} pixels, shown "
      f"{scale}x).", "", f"![top-{top_k} {layer}]({top_path})", "",
      "| channel | strongest activations |", "|---|---|"]
  lines += [f"| {channel} | {', '.join(f'{value:.2f}' for value in values)} |"
            for channel, values in zip(top.channels, top.values)]
  lines += ["", f"## {layer}: three projections of each channel's strongest image", "",
            "Per row (one channel): the image, then " + ", ".join(METHOD_TITLES.values()) +
            "; mid-grey is zero.", "", f"![methods {layer}]({methods_path})", ""]
  index = os.path.join(out_dir, "index.md")
  with open(index, "w") as file:
    file.write("\n".join(lines))
  return index
