"""Baselines of the seed notes: a small CNN (conv -> ReLU -> pool stacks, then fully connected
layers) and an MLP of configurable widths, to compare parameter count and accuracy at matched
budgets ("CNN vs MLP": small local filters instead of one large matrix per layer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_jax import ops
from cnn_jax.models import layers

CNN_PADDINGS = ("valid", "same", "circular")
CNN_POOLS = ("max", "avg")
CNN_HEADS = ("flatten", "global_avg")
# How a CNN stage marked in `pool_after` downsamples: a pooling layer after the conv, the conv
# itself at stride `pool_window` (Springenberg et al. 2015's "Strided-CNN"), or an extra 3x3 conv
# at that stride in place of the pooling layer (their "All-CNN").
CNN_DOWNSAMPLES = ("pool", "stride", "conv")


class MLP(nn.Module):
  """A multilayer perceptron on flattened images: `h_l = act(W_l h_{l-1} + b_l)`.

  Sows 'fc1', 'fc2', ... (after each activation) and 'logits' into 'intermediates'.

  Attributes:
    num_classes: size of the output layer.
    widths: the hidden layers' widths, input to output.
    dropout_rate: dropout on the input of every dense layer after the first, when training.
    dtype: compute dtype; parameters stay float32, logits are float32.
    act: the nonlinearity.
  """
  num_classes: int = 10
  widths: Sequence[int] = (512, 512)
  dropout_rate: float = 0.0
  dtype: Any = None
  act: Callable = nn.relu

  def __post_init__(self):
    if not all(isinstance(w, int) and w >= 1 for w in self.widths):
      raise ValueError(f"widths must be ints >= 1, got {self.widths!r}")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate!r}")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """`x: [N, H, W, C]` (any trailing shape) -> logits `[N, num_classes]` float32."""
    if jnp.ndim(x) < 2:
      raise ValueError(f"MLP expects x of shape [N, ...], got shape {jnp.shape(x)}")
    inputs = x
    x = jnp.reshape(x, (jnp.shape(x)[0], -1))
    for index, width in enumerate(self.widths, start=1):
      if index > 1:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = self.act(nn.Dense(width, dtype=self.dtype, name=f"Fc{index}")(x))
      x = layers.record_layer(self, f"fc{index}", x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="Head")(x).astype(jnp.float32)
    x = layers.nan_where_input_is_not_finite(inputs, x)
    x = layers.record_layer(self, "logits", x)
    return x


def mlp_param_count(input_dim: int, widths: Sequence[int], num_classes: int) -> int:
  """Weights and biases of an MLP: `sum_l (d_{l-1} + 1) d_l` over `input_dim, *widths, classes`."""
  sizes = (input_dim, *widths, num_classes)
  return sum((fan_in + 1) * fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))


def mlp_width_for_params(num_params: int, input_dim: int, num_classes: int,
                         depth: int = 1) -> int:
  """The hidden width w whose MLP with `depth` hidden layers of width w has closest to
  `num_params` parameters.

  The count is `(d + 1) w + (depth - 1)(w + 1) w + (w + 1) K` for input size d and K classes,
  a quadratic in w (linear when depth = 1); the positive root is rounded to the better integer.

  Args:
    num_params: the parameter budget, e.g. a CNN's count.
    input_dim: the flattened input size (H W C).
    num_classes: K.
    depth: the number of hidden layers, >= 1.

  Returns:
    The width, >= 1.
  """
  for name, value, minimum in (("num_params", num_params, 1), ("input_dim", input_dim, 1),
                               ("num_classes", num_classes, 1), ("depth", depth, 1)):
    if not isinstance(value, int) or value < minimum:
      raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
  # a w^2 + b w + c = 0 with the terms of the count above.
  a = depth - 1
  b = input_dim + 1 + (depth - 1) + num_classes
  c = num_classes - num_params
  root = -c / b if a == 0 else (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
  candidates = {max(1, math.floor(root)), max(1, math.ceil(root))}
  return min(candidates, key=lambda w: (
      abs(mlp_param_count(input_dim, (w,) * depth, num_classes) - num_params), w))


class CNN(nn.Module):
  """A small CNN: [conv -> act (-> pool)] stages, then fully connected layers (the seed notes).

  The default is the classic MNIST CNN: conv32 3x3 -> conv64 3x3 -> max-pool 2 -> dropout 0.25
  -> fc128 -> dropout 0.5 -> fc10, 'valid' padding (1,199,882 parameters on 28x28x1).

  Sows 'conv1', 'conv2', ... (after each activation), 'pool1', ... (after each pooling) or
  'down1', ... (after each downsampling conv),
  'global_pool' (with head='global_avg'), 'fc1', ... and 'logits'.

  Attributes:
    num_classes: size of the output layer.
    features: output channels of each conv layer.
    kernel_sizes: the square kernel size of each conv layer.
    pool_after: for each conv layer, whether it downsamples by `pool_window` (see `downsample`).
    downsample: 'pool' (a pooling layer after the activation), 'stride' (no pooling layer: that
      conv runs at stride `pool_window`, same parameters, same output size with 'same' padding;
      Springenberg et al. 2015's Strided-CNN) or 'conv' (the pooling layer replaced by a 3x3
      conv of the same width at stride `pool_window`, then the activation: their All-CNN, with
      `9 C^2 + C` more parameters per stage; sown as 'down1', 'down2', ...). Not with `blur`.
    pool: 'max' or 'avg'.
    pool_window: the pooling window F and stride F (non-overlapping, as in the seed notes).
    hidden: widths of the fully connected hidden layers.
    dropout_rates: one per dense layer (len(hidden) + 1), applied to that layer's input.
    head: 'flatten' (flatten the last map, size-dependent) or 'global_avg' (mean over space).
    norm: batch norm after every conv, before the activation (the convs then have no bias):
      one mean, variance, scale and bias per channel, as `P4CNN`'s group batch norm per p4
      channel.
    padding: 'valid', 'same' or 'circular', used by every conv (and, for 'circular', the pools).
    blur: anti-aliased pooling: pool(stride 1) + blur_downsample(stride F).
    blur_size: the blur filter size.
    axis_name: None, or the named axis over which batch norm averages its batch statistics.
    dtype: compute dtype; parameters stay float32, logits are float32.
    act: the nonlinearity.
    lowering: how convolutions and max pooling are computed ('xla', 'tiled', 'auto'; see
      `cnn_jax.ops.lowering`); never changes parameters or values beyond float rounding.
  """
  num_classes: int = 10
  features: Sequence[int] = (32, 64)
  kernel_sizes: Sequence[int] = (3, 3)
  pool_after: Sequence[bool] = (False, True)
  pool: str = "max"
  pool_window: int = 2
  downsample: str = "pool"
  hidden: Sequence[int] = (128,)
  dropout_rates: Sequence[float] = (0.25, 0.5)
  head: str = "flatten"
  norm: bool = False
  padding: str = "valid"
  blur: bool = False
  blur_size: int = 3
  axis_name: str | None = None
  dtype: Any = None
  act: Callable = nn.relu
  lowering: str = ops.DEFAULT_LOWERING

  def __post_init__(self):
    if not len(self.features) == len(self.kernel_sizes) == len(self.pool_after):
      raise ValueError(
          f"features, kernel_sizes and pool_after need one entry per conv layer, got "
          f"{self.features!r}, {self.kernel_sizes!r}, {self.pool_after!r}")
    if len(self.dropout_rates) != len(self.hidden) + 1:
      raise ValueError(f"dropout_rates needs one rate per dense layer (len(hidden) + 1 = "
                       f"{len(self.hidden) + 1}), got {self.dropout_rates!r}")
    layers.check_padding_mode(self.padding, CNN_PADDINGS)
    if self.pool not in CNN_POOLS:
      raise ValueError(f"pool must be one of {CNN_POOLS}, got {self.pool!r}")
    if self.head not in CNN_HEADS:
      raise ValueError(f"head must be one of {CNN_HEADS}, got {self.head!r}")
    if self.downsample not in CNN_DOWNSAMPLES:
      raise ValueError(f"downsample must be one of {CNN_DOWNSAMPLES}, got {self.downsample!r}")
    if self.downsample != "pool" and self.blur:
      raise ValueError(f"blur=True anti-aliases a pooling layer; downsample={self.downsample!r} "
                       "has none (use downsample='pool')")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """`x: [N, H, W, C]` -> logits `[N, num_classes]` float32."""
    layers.check_image_batch(x, "CNN")
    inputs = x
    pool_padding = "circular" if self.padding == "circular" else "valid"
    pool_count = 0
    for index, (features, kernel, pooled) in enumerate(
        zip(self.features, self.kernel_sizes, self.pool_after), start=1):
      strided = pooled and self.downsample == "stride"
      x = layers.Conv(features, kernel, strides=self.pool_window if strided else 1,
                      padding=self.padding, use_bias=not self.norm, dtype=self.dtype,
                      lowering=self.lowering, name=f"Conv{index}")(x)
      if self.norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         dtype=self.dtype, axis_name=self.axis_name, name=f"Norm{index}")(x)
      x = self.act(x)
      x = layers.record_layer(self, f"conv{index}", x)
      if pooled and self.downsample == "conv":
        pool_count += 1
        x = layers.Conv(features, 3, strides=self.pool_window, padding=self.padding,
                        use_bias=not self.norm, dtype=self.dtype, lowering=self.lowering,
                        name=f"Down{pool_count}")(x)
        if self.norm:
          x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                           dtype=self.dtype, axis_name=self.axis_name,
                           name=f"DownNorm{pool_count}")(x)
        x = layers.record_layer(self, f"down{pool_count}", self.act(x))
      elif pooled and not strided:
        pool_count += 1
        x = layers.pool(x, self.pool, self.pool_window, self.pool_window, pool_padding,
                        blur=self.blur, blur_size=self.blur_size, lowering=self.lowering)
        x = layers.record_layer(self, f"pool{pool_count}", x)
    if self.head == "global_avg":
      x = ops.global_avg_pool(x)
      x = layers.record_layer(self, "global_pool", x)
    else:
      x = jnp.reshape(x, (jnp.shape(x)[0], -1))
    for index, (width, rate) in enumerate(zip(self.hidden, self.dropout_rates), start=1):
      x = nn.Dropout(rate, deterministic=not train)(x)
      x = self.act(nn.Dense(width, dtype=self.dtype, name=f"Fc{index}")(x))
      x = layers.record_layer(self, f"fc{index}", x)
    x = nn.Dropout(self.dropout_rates[-1], deterministic=not train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="Head")(x).astype(jnp.float32)
    x = layers.nan_where_input_is_not_finite(inputs, x)
    x = layers.record_layer(self, "logits", x)
    return x
