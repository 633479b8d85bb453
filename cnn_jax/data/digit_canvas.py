"""Digits placed on a larger black canvas, each at its own random position (fixed by a seed).

MNIST centres each digit's mass in its 28 x 28 frame: every digit sits in the middle, its ink
touches the border in 1.7% of the 5,000 offline digits, so a shift with zeros entering (crop)
and a circular shift mostly give the same image, and a network never has to read a digit next
to its padding. On the canvas the ink's bounding box (the rows and columns that hold a nonzero
pixel) is placed at a uniformly random position, from touching the top-left corner to touching
the bottom-right one: the digit can be anywhere, and its ink touches the border in 18% of them
(40 x 40 canvas), where crop and circular shifts differ and padding meets the digit.

Every nonzero pixel of a digit is kept, at `canvas[top + i, left + j] = digit[box_top + i,
box_left + j]`; the rest of the canvas is 0. The positions come from
`numpy.random.default_rng(seed)` (PCG64, the same stream on every platform), so the images are
the same on every machine. Pixel statistics do not depend on the positions: a canvas of side S
holds the digit's ink on `S^2` pixels instead of `28^2`, so `E[x]` and `E[x^2]` scale by
`28^2 / S^2`.
"""

from __future__ import annotations

import numpy as np

# The canvas of the 'mnist_canvas' dataset (cnn_jax.data.get_dataset_info) and its seed.
CANVAS_SIZE = 40
PLACEMENT_SEED = 0


def ink_boxes(images: np.ndarray) -> np.ndarray:
  """The bounding box of each image's nonzero pixels (over all channels).

  Args:
    images: `[N, H, W, C]`, each with at least one nonzero pixel.

  Returns:
    int64 `[N, 4]`: `(top, left, height, width)`.
  """
  rows = np.any(images != 0, axis=(2, 3))  # [N, H]
  columns = np.any(images != 0, axis=(1, 3))  # [N, W]
  blank = ~np.any(rows, axis=1)
  if np.any(blank):
    raise ValueError(f"images must each have a nonzero pixel; images {np.flatnonzero(blank)[:5]} "
                     "are blank")

  def first_and_extent(mask):
    first = np.argmax(mask, axis=1)
    last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
    return first, last - first + 1

  top, height = first_and_extent(rows)
  left, width = first_and_extent(columns)
  return np.stack([top, left, height, width], axis=1).astype(np.int64)


def place_on_canvas(images: np.ndarray, size: int, seed: int,
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Each image's ink box on a black `size x size` canvas, at a uniformly random position.

  Args:
    images: `[N, H, W, C]` (e.g. uint8 digits), each with a nonzero pixel whose ink box fits in
      `size x size`.
    size: side of the canvas.
    seed: seeds `numpy.random.default_rng`; image n's position is the n-th draw.

  Returns:
    canvases: `[N, size, size, C]`, the dtype of `images`.
    positions: int64 `[N, 2]`: the canvas row and column of each ink box's top-left pixel,
      uniform in `[0, size - height] x [0, size - width]`.
  """
  if not isinstance(size, (int, np.integer)) or size < 1:
    raise ValueError(f"size must be an int >= 1, got {size!r}")
  boxes = ink_boxes(images)
  too_large = np.flatnonzero(np.max(boxes[:, 2:], axis=1) > size)
  if len(too_large):
    raise ValueError(f"size must hold every image's ink box, got {size} for boxes of up to "
                     f"{int(boxes[:, 2:].max())} pixels (images {too_large[:5]})")
  rng = np.random.default_rng(seed)
  # integers(0, high) with high = size - extent + 1: uniform over every position that fits.
  positions = rng.integers(0, size - boxes[:, 2:] + 1)
  canvases = np.zeros((len(images), size, size, images.shape[-1]), images.dtype)
  for canvas, image, (top, left, height, width), (row, column) in zip(
      canvases, images, boxes, positions):
    canvas[row:row + height, column:column + width] = image[top:top + height,
                                                            left:left + width]
  return canvases, positions.astype(np.int64)
