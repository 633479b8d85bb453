"""AlexNet: the 2012 paper's two-tower network and torchvision's single-tower layout.

Krizhevsky, Sutskever & Hinton 2012 ("ImageNet Classification with Deep Convolutional Neural
Networks"): conv 96-256-384-384-256 (11x11/4, 5x5, 3x3, 3x3, 3x3), ReLU, local response
normalization after conv1 and conv2, overlapping 3/2 max pooling after both normalizations and
conv5, FC 4096-4096-classes with dropout 0.5: 60,965,224 parameters for 1000 classes.

Input size: the paper says 224x224, but its first layer only tiles 227: `(224 - 11) / 4 + 1` is
not an integer while `(227 - 11) / 4 + 1 = 55` is (see `ops.arithmetic.output_size(...,
strict=True)`). We accept 227x227, so that 55 -> 27 -> 13 -> 6 matches the paper's figure.

The paper's two GPUs ("towers") each hold half of every layer's kernels and exchange activations
only at conv3 and the fully connected layers. On one device that is a grouped convolution:
groups=2 on conv2, conv4 and conv5 (each half of the output sees only its own tower's half of the
input), full connections elsewhere, and a local response normalization that never crosses the
towers. `apply_on_two_devices` places the towers on two devices of a mesh axis 'tower'.

torchvision's single-tower layout (61,100,840 parameters for 1000 classes, input 224) is the same
network with other data (`LAYOUTS['torchvision']`, `AlexNetTorchvision`): conv 64-192-384-256-256,
conv1 padded by 2, no normalization, one tower, Flax's default initialization, adaptive average
pooling to 6x6 before fc6, dropout on the inputs of fc6 and fc7 instead of the outputs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from cnn_jax import ops
from cnn_jax.models import layers

TOWERS = 2


class AlexNetLayout(NamedTuple):
  """What distinguishes the paper's AlexNet from torchvision's."""
  features: tuple[int, ...]  # conv1 .. conv5 output channels
  towers: int  # groups of conv2, conv4, conv5 and of the normalization (1: one tower)
  conv1_padding: int  # conv1's zero padding with padding='same'
  local_response_norm: bool  # after conv1 and conv2 (sown 'norm1', 'norm2')
  paper_init: bool  # weights N(0, 0.01^2), biases 1 in conv2, conv4, conv5, fc6, fc7
  adaptive_pool: bool  # average pooling to 6x6 before fc6 (sown 'avgpool')
  dropout_on_inputs: bool  # dropout on the inputs of fc6 and fc7 (else on their outputs)


LAYOUTS = {
    "paper": AlexNetLayout((96, 256, 384, 384, 256), TOWERS, 0, True, True, False, False),
    "torchvision": AlexNetLayout((64, 192, 384, 256, 256), 1, 2, False, False, True, True),
}
# The layers that the paper initializes with bias 1 (Section 5).
_UNIT_BIAS_LAYERS = ("Conv2", "Conv4", "Conv5", "Fc6", "Fc7")


class AlexNet(nn.Module):
  """AlexNet, in the paper's layout (two towers as grouped convolutions, input 227x227x3) or in
  torchvision's (`layout='torchvision'`, input 224x224x3).

  conv1 11x11/4 -> (LRN) -> max-pool 3/2 -> conv2 5x5 -> (LRN) -> max-pool 3/2 -> conv3, conv4,
  conv5 3x3 -> max-pool 3/2 -> (adaptive average pool to 6x6) -> fc6 -> fc7 -> fc8, ReLU after
  every conv and hidden fc, dropout 0.5 around fc6 and fc7 (see `AlexNetLayout`).

  Sows 'conv1', ('norm1'), 'pool1', 'conv2', ('norm2'), 'pool2', 'conv3', 'conv4', 'conv5',
  'pool5', ('avgpool'), 'fc6', 'fc7' and 'logits' into 'intermediates'.

  Attributes:
    num_classes: size of the output layer (even in the paper's layout: each tower computes half).
    dropout_rate: dropout around fc6 and fc7 when training.
    fc_features: width of fc6 and fc7 (4096; smaller for quick experiments).
    layout: 'paper' or 'torchvision' (`LAYOUTS`).
    dtype: compute dtype; parameters stay float32, logits are float32.
    padding: 'same' (the layout's zero padding: conv1 0 or 2 pixels, the others size-preserving)
      or 'circular' (periodic padding of the 'same' amounts in every conv, conv1 included), or
      'torch' (`K // 2` on both sides of conv2-5, conv1 as 'same'): the same pads as 'same' here,
      since AlexNet's padded convs have stride 1 and odd kernels and its pools are 'valid'.
    blur: anti-aliased downsampling (Zhang 2019's AlexNet): conv1 at stride 2 + blur stride 2
      instead of stride 4, and max-pool(3, stride 1) + blur stride 2 instead of max-pool 3/2.
    blur_size: the blur filter size.
    act: the nonlinearity.
    tower_axis: None for the grouped single-device form. Set by `apply_on_two_devices` (paper
      layout only): the module then runs per device inside `shard_map`, holds one tower's half of
      every layer, and all-gathers activations along this axis where the towers communicate.
    lowering: how convolutions and max pooling are computed ('xla', 'tiled', 'auto'; see
      `cnn_jax.ops.lowering`); never changes parameters or values beyond float rounding.
  """
  num_classes: int = 1000
  dropout_rate: float = 0.5
  fc_features: int = 4096
  layout: str = "paper"
  dtype: Any = None
  padding: str = "same"
  blur: bool = False
  blur_size: int = 3
  act: Callable = nn.relu
  tower_axis: str | None = None
  lowering: str = ops.DEFAULT_LOWERING

  def __post_init__(self):
    layers.check_padding_mode(self.padding)
    if self.layout not in LAYOUTS:
      raise ValueError(f"layout must be one of {tuple(LAYOUTS)}, got {self.layout!r}")
    towers = LAYOUTS[self.layout].towers
    for name in ("num_classes", "fc_features"):
      if getattr(self, name) % towers:
        raise ValueError(f"{name} must be even (each tower computes half of the layer), "
                         f"got {getattr(self, name)!r}")
    if self.tower_axis is not None and towers == 1:
      raise ValueError(f"tower_axis needs a layout with towers, got layout {self.layout!r}")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """`x: [N, H, W, 3]` (227 paper, 224 torchvision; other sizes change the paper's fc6 input)
    -> `[N, num_classes]` float32.

    Raises:
      ValueError: the paper layout's conv1 stride does not tile the input (224: the paper's typo;
        use 227).
    """
    layout = LAYOUTS[self.layout]
    layers.check_image_batch(x, "AlexNet")
    inputs = x
    if self.padding != "circular" and layout.conv1_padding == 0:
      for size in x.shape[1:3]:
        try:
          ops.output_size(size, 11, 2 if self.blur else 4, strict=True)
        except ValueError as error:
          raise ValueError(f"AlexNet's conv1 (11x11, stride {2 if self.blur else 4}, no padding) "
                           f"does not tile a {size}-pixel input: {error}. Use 227x227 images "
                           f"(config.image_size=227), as the paper's figure does") from None
    split = self.tower_axis is not None
    # Per device, a grouped layer is one tower's plain layer on that tower's channels.
    width = (lambda features: features // layout.towers) if split else (lambda f: f)
    tower_groups = 1 if split else layout.towers

    def initializers(name):
      if not layout.paper_init:
        return {}
      return dict(kernel_init=nn.initializers.normal(0.01), bias_init=nn.initializers.constant(
          1.0 if name in _UNIT_BIAS_LAYERS else 0.0))

    conv = lambda features, kernel, name, **kw: layers.Conv(
        width(features), kernel, dtype=self.dtype, lowering=self.lowering, name=name,
        **initializers(name), **kw)
    dense = lambda features, name: nn.Dense(width(features), dtype=self.dtype, name=name,
                                            **initializers(name))
    dropout = lambda h: nn.Dropout(self.dropout_rate, deterministic=not train)(h)

    def exchange(h):
      """Both towers' channels, in the grouped form's order (tower 0 first)."""
      return jax.lax.all_gather(h, self.tower_axis, axis=-1, tiled=True) if split else h

    def pool(h):
      return layers.pool(h, "max", 3, 2, "valid", blur=self.blur, blur_size=self.blur_size,
                         lowering=self.lowering)

    def normalize(h, index):
      if not layout.local_response_norm:
        return h
      return layers.record_layer(self, f"norm{index}",
                                 layers.local_response_norm(h, groups=tower_groups))

    padding = self.padding
    features = layout.features
    conv1_padding = "circular" if padding == "circular" else layout.conv1_padding
    x = self.act(conv(features[0], 11, "Conv1", strides=2 if self.blur else 4,
                      padding=conv1_padding)(x))
    if self.blur:
      x = layers.blur_downsample(x, 2, filter_size=self.blur_size, padding=padding,
                                 lowering=self.lowering)
    x = layers.record_layer(self, "conv1", x)
    x = layers.record_layer(self, "pool1", pool(normalize(x, 1)))
    x = self.act(conv(features[1], 5, "Conv2", padding=padding, groups=tower_groups)(x))
    x = layers.record_layer(self, "conv2", x)
    x = layers.record_layer(self, "pool2", pool(normalize(x, 2)))
    x = self.act(conv(features[2], 3, "Conv3", padding=padding)(exchange(x)))
    x = layers.record_layer(self, "conv3", x)
    x = self.act(conv(features[3], 3, "Conv4", padding=padding, groups=tower_groups)(x))
    x = layers.record_layer(self, "conv4", x)
    x = self.act(conv(features[4], 3, "Conv5", padding=padding, groups=tower_groups)(x))
    x = layers.record_layer(self, "conv5", x)
    x = layers.record_layer(self, "pool5", pool(x))
    x = exchange(x)
    if layout.adaptive_pool:
      x = layers.record_layer(self, "avgpool", layers.adaptive_avg_pool(x, (6, 6)))
    x = jnp.reshape(x, (jnp.shape(x)[0], -1))
    for index in (6, 7):
      x = dropout(x) if layout.dropout_on_inputs else x
      x = self.act(dense(self.fc_features, f"Fc{index}")(exchange(x) if index == 7 else x))
      x = x if layout.dropout_on_inputs else dropout(x)
      x = layers.record_layer(self, f"fc{index}", x)
    x = exchange(dense(self.num_classes, "Fc8")(exchange(x))).astype(jnp.float32)
    x = layers.nan_where_input_is_not_finite(inputs, x)
    x = layers.record_layer(self, "logits", x)
    return x


# torchvision's single-tower AlexNet (61,100,840 parameters for 1000 classes, input 224).
AlexNetTorchvision = functools.partial(AlexNet, layout="torchvision")


def apply_on_two_devices(model: AlexNet, variables, x: jax.Array, mesh: Mesh, *,
                         train: bool = False, rngs=None) -> jax.Array:
  """Runs the paper's AlexNet with its two towers on two devices (model parallelism).

  Every parameter of the grouped form is split in half along its last (output) axis, one half per
  device of the mesh axis 'tower'; inside `jax.shard_map` each device runs one tower
  (`model.clone(tower_axis='tower')`), and the towers exchange activations with `all_gather`
  only before conv3 and the FC layers, as on the paper's two GPUs. The result equals
  `model.apply(variables, x, train=False)` up to float rounding.

  Args:
    model: an `AlexNet` with `tower_axis=None`.
    variables: `{'params': ...}` of the grouped form, from `model.init`.
    x: `[N, H, W, 3]`, replicated on both devices.
    mesh: a mesh with an axis 'tower' of size 2.
    train: dropout on (then each device draws its own mask from `rngs`).
    rngs: `{'dropout': key}` when training.

  Returns:
    logits `[N, num_classes]` float32, replicated.
  """
  if "tower" not in mesh.shape or mesh.shape["tower"] != TOWERS:
    raise ValueError(f"mesh must have an axis 'tower' of size {TOWERS}, got axes "
                     f"{dict(mesh.shape)}")
  tower_model = model.clone(tower_axis="tower")
  split_last = lambda p: PartitionSpec(*([None] * (jnp.ndim(p) - 1)), "tower")
  variable_specs = jax.tree.map(split_last, variables)

  def per_device(tower_variables, images, tower_rngs):
    return tower_model.apply(tower_variables, images, train=train, rngs=tower_rngs)

  run = jax.shard_map(per_device, mesh=mesh, in_specs=(variable_specs, PartitionSpec(),
                                                       PartitionSpec()),
                      out_specs=PartitionSpec(), check_vma=False)
  return run(variables, x, rngs)
