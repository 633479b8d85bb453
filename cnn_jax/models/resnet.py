"""ResNets (He et al. 2016) and their plain (no-shortcut) twins, on `cnn_jax.ops`.

A residual block computes `y = act(F(x) + shortcut(x))`; a plain block `y = act(F(x))`.
ImageNet depths 18/34 use `BasicBlock` (F = conv3x3 -> BN -> act -> conv3x3 -> BN), 50/101/152
`BottleneckBlock` (1x1 -> 3x3 -> 1x1 with 4x expansion; the stride on the 3x3 conv, torchvision's
"v1.5"), with projection shortcuts (1x1 conv + BN, option B) where the shape changes; parameter
counts equal torchvision's (BN scale and bias are parameters, running statistics are not).

CIFAR depths 20/32/44/56/110 (`6n + 2` layers): 3x3 stem with 16 channels, stages 16-32-64 of n
basic blocks, global average pooling, fc. They use He et al.'s option A, the parameter-free
shortcut (subsample, then zero-pad the new channels), as the paper's CIFAR experiments do, so the
counts match Table 6 (ResNet-20: 269,722 for 10 classes vs the paper's 0.27M).

Sows 'conv1' (stem conv -> BN -> act), 'pool1' (ImageNet stem), 'block{stage}_{index}' after
each block (1-based), 'global_pool' and 'logits' into 'intermediates'.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_jax import ops
from cnn_jax.models import layers

ModuleDef = Any
STEMS = ("imagenet", "cifar")
SHORTCUTS = ("projection", "zero_pad")


def _shortcut(x: jax.Array, features: int, strides: int, *, kind: str, conv: ModuleDef,
              norm: ModuleDef, blur_pool: Callable | None) -> jax.Array:
  """The block's skip path to `[N, H / strides, W / strides, features]`.

  Identity when the shape is unchanged. Otherwise 'projection' (option B): 1x1 conv (stride
  `strides`) + BN; 'zero_pad' (option A): subsample by `strides`, append zero channels. With
  `blur_pool` the subsampling is anti-aliased: blur, then a stride-1 projection.
  """
  if strides == 1 and jnp.shape(x)[-1] == features:
    return x
  if blur_pool is not None and strides > 1:
    x, strides = blur_pool(x, strides), 1
  if kind == "projection":
    x = conv(features, (1, 1), strides=strides, name="ShortcutConv")(x)
    return norm(name="ShortcutNorm")(x)
  x = x[:, ::strides, ::strides, :]
  return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, features - jnp.shape(x)[-1])))


def _last_norm_scale_init(zero: bool) -> Callable:
  return nn.initializers.zeros_init() if zero else nn.initializers.ones_init()


class ResidualBlock(nn.Module):
  """A residual branch of convs with BN, plus the shortcut, then act: `[N, H, W, C]` ->
  `[N, H / strides, W / strides, expansion * features]`.

  Branch: `conv(K_1) -> BN -> act -> ... -> conv(K_L) -> BN`, every conv `features` wide but the
  last (`expansion * features`), the block's stride on conv `strided_index`; then
  `act(branch(x) + shortcut(x))`, or `act(branch(x))` for a plain block. `BasicBlock` and
  `BottleneckBlock` are its two layouts. Parameters are named Conv1, Norm1, Conv2, ... along the
  branch, and ShortcutConv, ShortcutNorm.

  Attributes:
    features: the branch's width (its output is `expansion * features`).
    strides: the block's stride.
    conv, norm: partially applied `layers.Conv` and `nn.BatchNorm`.
    act: the nonlinearity.
    kernel_sizes: the square kernel size of each conv of the branch.
    strided_index: the (0-based) conv that carries the stride.
    expansion: the last conv's width over `features`.
    residual: add the shortcut (False: a plain block).
    shortcut: 'projection' (option B) or 'zero_pad' (option A), used when the shape changes.
    zero_init_last_norm: initialize the last BN's scale to 0, so the branch is 0 at init.
    blur_pool: None, or `f(x, stride)` that replaces the strided conv by stride 1 + `f` (after
      its BN and act).
  """
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable
  kernel_sizes: Sequence[int] = (3, 3)
  strided_index: int = 0
  expansion: int = 1
  residual: bool = True
  shortcut: str = "projection"
  zero_init_last_norm: bool = False
  blur_pool: Callable | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    blur = self.blur_pool is not None and self.strides > 1
    last = len(self.kernel_sizes) - 1
    y = x
    for index, kernel in enumerate(self.kernel_sizes):
      strided = index == self.strided_index
      features = self.features * self.expansion if index == last else self.features
      y = self.conv(features, (kernel, kernel),
                    strides=self.strides if strided and not blur else 1,
                    name=f"Conv{index + 1}")(y)
      if index == last:
        y = self.norm(scale_init=_last_norm_scale_init(self.zero_init_last_norm),
                      name=f"Norm{index + 1}")(y)
      else:
        y = self.act(self.norm(name=f"Norm{index + 1}")(y))
      if strided and blur:
        y = self.blur_pool(y, self.strides)
    if self.residual:
      y = y + _shortcut(x, self.features * self.expansion, self.strides, kind=self.shortcut,
                        conv=self.conv, norm=self.norm, blur_pool=self.blur_pool)
    return self.act(y)


# conv3x3(stride) -> BN -> act -> conv3x3 -> BN.
BasicBlock = functools.partial(ResidualBlock, kernel_sizes=(3, 3), strided_index=0, expansion=1)
# conv1x1 -> BN -> act -> conv3x3(stride) -> BN -> act -> conv1x1 (4x) -> BN (torchvision v1.5).
BottleneckBlock = functools.partial(ResidualBlock, kernel_sizes=(1, 3, 1), strided_index=1,
                                    expansion=4)


class ResNet(nn.Module):
  """A ResNet (or, with `residual=False`, its plain twin).

  stem -> stages of blocks (stage i > 1 starts with stride 2) -> global average pool -> fc.

  Attributes:
    stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
    block: `BasicBlock` or `BottleneckBlock`.
    num_classes: size of the output layer.
    widths: the base width of each stage (a bottleneck stage outputs 4x).
    stem: 'imagenet' (7x7/2 conv, BN, act, 3x3/2 max-pool) or 'cifar' (3x3 conv, BN, act).
    residual: with shortcuts (ResNet) or without (plain network).
    shortcut: 'projection' (He et al. option B) or 'zero_pad' (option A, parameter-free).
    zero_init_residual: initialize the last BN scale of every residual branch to 0, so every
      block starts as `act(shortcut(x))` (Goyal et al. 2017); needs residual=True.
    dtype: compute dtype (e.g. jnp.bfloat16); parameters and logits are float32.
    padding: 'same', 'circular' or 'torch', in every conv and the stem's max-pool. 'torch' pads
      `(K - 1) // 2` on both sides of every layer, as torchvision's ResNets (7x7/2 stem 3,
      3x3/2 max-pool 1, every 3x3 conv 1, 1x1 convs 0), so strided layers sample the same pixels;
      'same' pads `(2, 3)`, `(0, 1)`, `(0, 1)` at stride 2 on even inputs (TensorFlow's rule).
    blur: anti-aliased downsampling (Zhang 2019): every stride-2 conv becomes stride 1 + blur,
      the max-pool becomes max-pool(stride 1) + blur, shortcuts blur before the 1x1 projection.
      The ImageNet stem's 7x7 conv keeps its stride, as in Zhang's antialiased ResNets.
    blur_size: the blur filter size (Zhang's ResNets: 3 or 5).
    batch_norm_variance: the running variance's update, 'biased' (Flax) or 'unbiased'
      (PyTorch, `n / (n - 1)` times the batch variance; `layers.BatchNorm`).
    axis_name: None, or the named axis (e.g. 'batch' under pmap/shard_map) over which BN
      averages its batch statistics when training; must be bound when set.
    act: the nonlinearity (every ReLU of the network).
    lowering: how convolutions and max pooling are computed ('xla', 'tiled', 'auto'; see
      `cnn_jax.ops.lowering`); never changes parameters or values beyond float rounding.
  """
  stage_sizes: Sequence[int]
  block: ModuleDef
  num_classes: int = 1000
  widths: Sequence[int] = (64, 128, 256, 512)
  stem: str = "imagenet"
  residual: bool = True
  shortcut: str = "projection"
  zero_init_residual: bool = False
  dtype: Any = None
  padding: str = "same"
  blur: bool = False
  blur_size: int = 3
  batch_norm_variance: str = "biased"
  axis_name: str | None = None
  act: Callable = nn.relu
  lowering: str = ops.DEFAULT_LOWERING

  def __post_init__(self):
    if self.batch_norm_variance not in layers.BATCH_NORM_VARIANCES:
      raise ValueError(f"batch_norm_variance must be one of {layers.BATCH_NORM_VARIANCES}, got "
                       f"{self.batch_norm_variance!r}")
    if len(self.stage_sizes) != len(self.widths):
      raise ValueError(f"stage_sizes and widths need one entry per stage, got "
                       f"{self.stage_sizes!r} and {self.widths!r}")
    if self.stem not in STEMS:
      raise ValueError(f"stem must be one of {STEMS}, got {self.stem!r}")
    if self.shortcut not in SHORTCUTS:
      raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {self.shortcut!r}")
    if self.zero_init_residual and not self.residual:
      raise ValueError("zero_init_residual=True needs residual=True: a plain network with a "
                       "zero-initialized last norm would output constants")
    layers.check_padding_mode(self.padding)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """`x: [N, H, W, C]` -> logits `[N, num_classes]` float32."""
    layers.check_image_batch(x, "ResNet")
    inputs = x
    # He initialization (fan_out, normal), as torchvision.
    conv = functools.partial(layers.Conv, use_bias=False, dtype=self.dtype, padding=self.padding,
                             lowering=self.lowering,
                             kernel_init=nn.initializers.variance_scaling(2.0, "fan_out",
                                                                          "normal"))
    norm = functools.partial(layers.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype, axis_name=self.axis_name,
                             variance=self.batch_norm_variance)
    blur_pool = (functools.partial(layers.blur_downsample, filter_size=self.blur_size,
                                   padding=self.padding, lowering=self.lowering)
                 if self.blur else None)
    if self.stem == "imagenet":
      x = self.act(norm(name="StemNorm")(conv(self.widths[0], (7, 7), strides=2,
                                              name="StemConv")(x)))
      x = layers.record_layer(self, "conv1", x)
      x = layers.pool(x, "max", 3, 2, self.padding, blur=self.blur, blur_size=self.blur_size,
                      lowering=self.lowering)
      x = layers.record_layer(self, "pool1", x)
    else:
      x = self.act(norm(name="StemNorm")(conv(self.widths[0], (3, 3), name="StemConv")(x)))
      x = layers.record_layer(self, "conv1", x)
    for stage, (size, width) in enumerate(zip(self.stage_sizes, self.widths), start=1):
      for index in range(1, size + 1):
        x = self.block(features=width, strides=2 if stage > 1 and index == 1 else 1, conv=conv,
                       norm=norm, act=self.act, residual=self.residual, shortcut=self.shortcut,
                       zero_init_last_norm=self.zero_init_residual, blur_pool=blur_pool,
                       name=f"Block{stage}_{index}")(x)
        x = layers.record_layer(self, f"block{stage}_{index}", x)
    x = ops.global_avg_pool(x)
    x = layers.record_layer(self, "global_pool", x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="Head")(x).astype(jnp.float32)
    x = layers.nan_where_input_is_not_finite(inputs, x)
    x = layers.record_layer(self, "logits", x)
    return x


_CIFAR = dict(block=BasicBlock, num_classes=10, widths=(16, 32, 64), stem="cifar",
              shortcut="zero_pad")

ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BottleneckBlock)
ResNet101 = functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block=BottleneckBlock)
ResNet152 = functools.partial(ResNet, stage_sizes=(3, 8, 36, 3), block=BottleneckBlock)
ResNet20 = functools.partial(ResNet, stage_sizes=(3, 3, 3), **_CIFAR)
ResNet32 = functools.partial(ResNet, stage_sizes=(5, 5, 5), **_CIFAR)
ResNet44 = functools.partial(ResNet, stage_sizes=(7, 7, 7), **_CIFAR)
ResNet56 = functools.partial(ResNet, stage_sizes=(9, 9, 9), **_CIFAR)
ResNet110 = functools.partial(ResNet, stage_sizes=(18, 18, 18), **_CIFAR)

Plain18 = functools.partial(ResNet18, residual=False)
Plain34 = functools.partial(ResNet34, residual=False)
Plain20 = functools.partial(ResNet20, residual=False)
Plain32 = functools.partial(ResNet32, residual=False)
Plain44 = functools.partial(ResNet44, residual=False)
Plain56 = functools.partial(ResNet56, residual=False)
Plain110 = functools.partial(ResNet110, residual=False)
