"""Convolution arithmetic in plain Python ints: output sizes, receptive fields, parameter counts.

Nothing here traces or touches arrays: these are the numbers one works out on paper before
building a network (Dumoulin & Visin 2016, "A guide to convolution arithmetic"; Araujo et al.,
Distill 2019, "Computing receptive fields of convolutional neural networks").

The seed notes' parameter counts, computed by the functions below (weights only, `bias=False`),
for a single-channel image of `size = (1000, 1000)`:

| layer ("local": locally connected) | weights | call |
|---|---|---|
| fully connected to 10^6 units | 10^12 | `fully_connected_params(10**6, 10**6)` |
| local, 10x10, stride 10 | 10^6 | `locally_connected_params(size, (10, 10), 1, 1, 10)` |
| local, 10x10, stride 1 | 98,208,100 | `locally_connected_params(size, (10, 10), 1, 1)` |
| convolution, one shared 10x10 kernel | 100 | `conv_params((10, 10), 1, 1)` |
| 5 inputs -> 5 outputs, fully connected | 25 | `fully_connected_params(5, 5)` |
| 5 inputs -> 5 outputs, shared size 3 | 3 | `conv_params((3,), 1, 1)` |

So the notes' "10^6 parameters with 10x10 kernels" is not a convolution's count: with weight
sharing one 10x10 kernel has 100 weights whatever the image size. 10^6 is what locality alone
gives, without sharing: a locally connected layer whose 10^4 units (100 x 100 positions) each own
a 10x10 window (non-overlapping windows, stride 10), or equally 10^4 different shared 10x10
kernels. With overlapping windows (stride 1) locality alone gives about 10^8.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple, Union

PaddingAmount = Union[int, tuple[int, int]]


def _check_int(name: str, value, minimum: int) -> None:
  if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _padding_pair(padding: PaddingAmount) -> tuple[int, int]:
  pair = (padding, padding) if isinstance(padding, int) else tuple(padding)
  if len(pair) != 2 or not all(isinstance(p, int) and p >= 0 for p in pair):
    raise ValueError(f"padding must be an int >= 0 or a (lo, hi) pair of them, got {padding!r}")
  return pair


def output_size(n: int, kernel: int, stride: int = 1, padding: PaddingAmount = 0,
                dilation: int = 1, *, strict: bool = False) -> int:
  """Number of positions of a kernel sliding over one spatial axis.

  `N' = floor((N + P_lo + P_hi - D (F - 1) - 1) / S) + 1`; with no padding and no dilation this
  is the seed notes' `(N - F) / S + 1`. The same formula holds for pooling windows.

  Args:
    n: input size N >= 1.
    kernel: kernel (or window) size F >= 1.
    stride: S >= 1.
    padding: P on both sides, or a `(P_lo, P_hi)` pair.
    dilation: D >= 1; the kernel spans `D (F - 1) + 1` pixels.
    strict: if True, raise when the stride does not tile the padded input exactly, i.e. when
      `(N + P_lo + P_hi - D (F - 1) - 1) mod S != 0` and the last pixels are never visited
      (AlexNet's first layer: 227 tiles with F = 11, S = 4; 224 leaves a remainder of 1).

  Returns:
    N' >= 1.
  """
  _check_int("n", n, 1)
  _check_int("kernel", kernel, 1)
  _check_int("stride", stride, 1)
  _check_int("dilation", dilation, 1)
  lo, hi = _padding_pair(padding)
  span = n + lo + hi - dilation * (kernel - 1) - 1
  if span < 0:
    raise ValueError(f"kernel {kernel} (dilation {dilation}, spanning "
                     f"{dilation * (kernel - 1) + 1} pixels) is larger than the padded input: "
                     f"n={n}, padding=({lo}, {hi})")
  if strict and span % stride:
    raise ValueError(f"stride {stride} does not tile the input exactly: (n + padding - "
                     f"dilation*(kernel-1) - 1) = {span} leaves remainder {span % stride} "
                     f"(n={n}, kernel={kernel}, padding=({lo}, {hi}), dilation={dilation})")
  return span // stride + 1


@dataclasses.dataclass(frozen=True)
class LayerGeometry:
  """One spatial axis of a conv or pooling layer: kernel (window) F, stride S, dilation D, padding
  P on the low side (the side that moves the first window; the high side does not matter for
  receptive fields)."""
  kernel: int
  stride: int = 1
  dilation: int = 1
  padding: int = 0


class ReceptiveField(NamedTuple):
  """Receptive field of the units of the last layer of a stack, on one input axis.

  Coordinates are input pixel indices (pixel i has its centre at i; padding pixels are at
  negative indices or >= N). Unit n of the output sees the input interval
  `[start + n jump - (size - 1) / 2, start + n jump + (size - 1) / 2]`, which may reach into the
  padding.

  Attributes:
    size: r, the number of input pixels spanned by one unit's field.
    jump: the distance in input pixels between the fields of adjacent units, the product of the
      strides.
    start: the input coordinate of the centre of unit 0's field; negative or half-integer with
      padding or even kernels.
  """
  size: int
  jump: int
  start: float


def receptive_field(layers: Sequence[LayerGeometry]) -> ReceptiveField:
  """Receptive field of a stack of conv/pool layers along one axis (Araujo et al. 2019).

  With `k_l = D_l (F_l - 1) + 1` the dilated kernel and `j_l = prod_{i <= l} S_i`, layer by layer
  from the input (Dumoulin & Visin's convention, `r_0 = 1, j_0 = 1, start_0 = 0`):
  `r_l = r_{l-1} + (k_l - 1) j_{l-1}`,
  `start_l = start_{l-1} + ((k_l - 1) / 2 - P_l) j_{l-1}`. Equivalently Araujo's closed form
  `r = 1 + sum_l (k_l - 1) prod_{i<l} S_i`; for L stride-1 layers of size K, `r = L (K - 1) + 1`.
  An empty stack is the identity: `ReceptiveField(1, 1, 0.0)`.
  """
  size, jump, start = 1, 1, 0.0
  for index, layer in enumerate(layers):
    if not isinstance(layer, LayerGeometry):
      raise ValueError(f"layers[{index}] must be a LayerGeometry, got {layer!r}")
    _check_int(f"layers[{index}].kernel", layer.kernel, 1)
    _check_int(f"layers[{index}].stride", layer.stride, 1)
    _check_int(f"layers[{index}].dilation", layer.dilation, 1)
    _check_int(f"layers[{index}].padding", layer.padding, 0)
    span = layer.dilation * (layer.kernel - 1) + 1
    size += (span - 1) * jump
    start += ((span - 1) / 2 - layer.padding) * jump
    jump *= layer.stride
  return ReceptiveField(size, jump, start)


def fully_connected_params(n_in: int, n_out: int, bias: bool = True) -> int:
  """Parameters of a dense layer `y = W x + b`: `n_in n_out` weights plus `n_out` biases."""
  _check_int("n_in", n_in, 1)
  _check_int("n_out", n_out, 1)
  return n_in * n_out + (n_out if bias else 0)


def _per_axis_values(name: str, value, ndim: int) -> tuple:
  """An int for every axis, or a sequence of one entry per axis, as a tuple of `ndim` entries."""
  values = (value,) * ndim if isinstance(value, int) else tuple(value)
  if len(values) != ndim:
    raise ValueError(f"{name} must be an int or one entry per spatial axis ({ndim}), "
                     f"got {value!r}")
  return values


def locally_connected_params(input_size: tuple, kernel: tuple, c_in: int, c_out: int,
                             stride=1, padding=0, bias: bool = True) -> int:
  """Parameters of a locally connected layer: a convolution without weight sharing.

  Each of the `prod_i N'_i` output positions (`N'_i = output_size(N_i, F_i, S_i, P_i)`) owns its
  `prod(F) c_in c_out` weights, and, with `bias`, its own `c_out` biases (unshared, as Keras's
  `LocallyConnected2D`): `prod(N') (prod(F) c_in c_out + c_out)`.

  Args:
    input_size: spatial size, one int per axis.
    kernel: window size, one int per axis.
    c_in, c_out: channels.
    stride: an int or one per axis.
    padding: an int, or per axis an int or a `(lo, hi)` pair.
    bias: count the unshared biases.
  """
  input_size, kernel = tuple(input_size), tuple(kernel)
  if len(kernel) != len(input_size):
    raise ValueError(f"kernel {kernel} must have one size per axis of input_size {input_size}")
  _check_int("c_in", c_in, 1)
  _check_int("c_out", c_out, 1)
  ndim = len(input_size)
  # output_size validates every entry.
  strides = _per_axis_values("stride", stride, ndim)
  paddings = _per_axis_values("padding", padding, ndim)
  positions = math.prod(output_size(n, f, s, p)
                        for n, f, s, p in zip(input_size, kernel, strides, paddings))
  per_position = math.prod(kernel) * c_in * c_out + (c_out if bias else 0)
  return positions * per_position


def conv_params(kernel: tuple, c_in: int, c_out: int, groups: int = 1, bias: bool = True) -> int:
  """Parameters of a convolution: `prod(F) (c_in / groups) c_out` shared weights + `c_out` biases.

  Independent of the input size: the same kernel slides over every position.
  """
  kernel = tuple(kernel)
  for size in kernel:
    _check_int("kernel", size, 1)
  _check_int("c_in", c_in, 1)
  _check_int("c_out", c_out, 1)
  _check_int("groups", groups, 1)
  if c_in % groups or c_out % groups:
    raise ValueError(f"groups={groups} must divide c_in ({c_in}) and c_out ({c_out})")
  return math.prod(kernel) * (c_in // groups) * c_out + (c_out if bias else 0)
