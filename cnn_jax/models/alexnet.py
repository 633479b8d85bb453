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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from cnn_jax import ops
from cnn_jax.models import layers
from cnn_jax.ops.arithmetic import LayerGeometry

TOWERS = 2


def _conv1_padding(padding: str, published: int):
  """conv1's published zero padding, or periodic padding of the 'same' amounts."""
  return "circular" if padding == "circular" else published


class AlexNet(nn.Module):
  """The paper's AlexNet, two towers expressed as grouped convolutions (input 227x227x3).

  Sows 'conv1', 'norm1', 'pool1', 'conv2', 'norm2', 'pool2', 'conv3', 'conv4', 'conv5', 'pool5',
  'fc6', 'fc7' and 'logits' into 'intermediates'.

  Initialization follows the paper: weights N(0, 0.01^2), biases 1 in conv2, conv4, conv5 and the
  hidden FC layers (to give the ReLUs positive inputs early), 0 elsewhere.

  Attributes:
    num_classes: size of the output layer (even, for the tower split of the last layer).
    dropout_rate: dropout on the outputs of fc6 and fc7 when training.
    fc_features: width of fc6 and fc7 (the paper's 4096; smaller for quick experiments).
    dtype: compute dtype; parameters stay float32, logits are float32.
    padding: 'same' (the paper's zero padding: conv1 none, the others size-preserving) or
      'circular' (periodic padding of the 'same' amounts in every conv, conv1 included).
    blur: anti-aliased downsampling (Zhang 2019's AlexNet): conv1 at stride 2 + blur stride 2
      instead of stride 4, and max-pool(3, stride 1) + blur stride 2 instead of max-pool 3/2.
    blur_size: the blur filter size.
    act: the nonlinearity.
    tower_axis: None for the grouped single-device form. Set by `apply_on_two_devices`: the
      module then runs per device inside `shard_map`, holds one tower's half of every layer, and
      all-gathers activations along this axis where the towers communicate.
    lowering: how convolutions and max pooling are computed ('xla', 'tiled', 'auto'; see
      `cnn_jax.ops.lowering`); never changes parameters or values beyond float rounding.
  """
  num_classes: int = 1000
  dropout_rate: float = 0.5
  fc_features: int = 4096
  dtype: Any = None
  padding: str = "same"
  blur: bool = False
  blur_size: int = 3
  act: Callable = nn.relu
  tower_axis: str | None = None
  lowering: str = ops.DEFAULT_LOWERING

  def __post_init__(self):
    layers.check_padding_mode(self.padding)
    for name in ("num_classes", "fc_features"):
      if getattr(self, name) % TOWERS:
        raise ValueError(f"{name} must be even (each tower computes half of the layer), "
                         f"got {getattr(self, name)!r}")
    super().__post_init__()

  def geometry(self) -> list[LayerGeometry]:
    """The conv and pooling layers along the network, for `ops.arithmetic.receptive_field`.

    'same' and 'circular' layers get the low-side padding `(F - 1) // 2` of a stride-1 layer; the
    strided ones' true amount depends on the input size and moves `start` only.
    """
    pools = ([LayerGeometry(kernel=3, stride=1), LayerGeometry(kernel=self.blur_size, stride=2,
                                                                padding=(self.blur_size - 1) // 2)]
             if self.blur else [LayerGeometry(kernel=3, stride=2)])
    conv1 = ([LayerGeometry(kernel=11, stride=2),
              LayerGeometry(kernel=self.blur_size, stride=2, padding=(self.blur_size - 1) // 2)]
             if self.blur else [LayerGeometry(kernel=11, stride=4)])
    if self.padding == "circular":
      conv1[0] = LayerGeometry(kernel=11, stride=conv1[0].stride, padding=5)
    return (conv1 + pools + [LayerGeometry(kernel=5, padding=2)] + pools
            + [LayerGeometry(kernel=3, padding=1)] * 3 + pools)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """`x: [N, 227, 227, 3]` (other sizes change the fc6 input) -> `[N, num_classes]` float32.

    Raises:
      ValueError: conv1's stride does not tile the input (224: the paper's typo; use 227).
    """
    layers.check_image_batch(x, "AlexNet")
    if self.padding != "circular":
      for size in x.shape[1:3]:
        try:
          ops.output_size(size, 11, 2 if self.blur else 4, strict=True)
        except ValueError as error:
          raise ValueError(f"AlexNet's conv1 (11x11, stride {2 if self.blur else 4}, no padding) "
                           f"does not tile a {size}-pixel input: {error}. Use 227x227 images "
                           f"(config.image_size=227), as the paper's figure does") from None
    split = self.tower_axis is not None
    # Per device, a grouped layer is one tower's plain layer on that tower's channels.
    width = (lambda features: features // TOWERS) if split else (lambda features: features)
    tower_groups = 1 if split else TOWERS
    weight_init = nn.initializers.normal(0.01)
    conv = lambda features, kernel, name, bias=0.0, **kw: layers.Conv(
        width(features), kernel, dtype=self.dtype, kernel_init=weight_init,
        bias_init=nn.initializers.constant(bias), lowering=self.lowering, name=name, **kw)
    dense = lambda features, name, bias=0.0: nn.Dense(
        width(features), dtype=self.dtype, kernel_init=weight_init,
        bias_init=nn.initializers.constant(bias), name=name)

    def exchange(h):
      """Both towers' channels, in the grouped form's order (tower 0 first)."""
      return jax.lax.all_gather(h, self.tower_axis, axis=-1, tiled=True) if split else h

    def pool(h):
      return layers.pool(h, "max", 3, 2, "valid", blur=self.blur, blur_size=self.blur_size,
                         lowering=self.lowering)

    def blur_stride(h, stride):
      return layers.blur_downsample(h, stride, filter_size=self.blur_size, padding=self.padding,
                                    lowering=self.lowering)

    padding = self.padding
    x = conv(96, 11, "Conv1", strides=2 if self.blur else 4, padding=_conv1_padding(padding, 0))(x)
    x = self.act(x)
    if self.blur:
      x = blur_stride(x, 2)
    x = layers.record_layer(self, "conv1", x)
    x = layers.local_response_norm(x, groups=tower_groups)
    x = layers.record_layer(self, "norm1", x)
    x = pool(x)
    x = layers.record_layer(self, "pool1", x)
    x = self.act(conv(256, 5, "Conv2", bias=1.0, padding=padding, groups=tower_groups)(x))
    x = layers.record_layer(self, "conv2", x)
    x = layers.local_response_norm(x, groups=tower_groups)
    x = layers.record_layer(self, "norm2", x)
    x = pool(x)
    x = layers.record_layer(self, "pool2", x)
    x = self.act(conv(384, 3, "Conv3", padding=padding)(exchange(x)))
    x = layers.record_layer(self, "conv3", x)
    x = self.act(conv(384, 3, "Conv4", bias=1.0, padding=padding, groups=tower_groups)(x))
    x = layers.record_layer(self, "conv4", x)
    x = self.act(conv(256, 3, "Conv5", bias=1.0, padding=padding, groups=tower_groups)(x))
    x = layers.record_layer(self, "conv5", x)
    x = pool(x)
    x = layers.record_layer(self, "pool5", x)
    x = exchange(x)
    x = jnp.reshape(x, (jnp.shape(x)[0], -1))
    x = self.act(dense(self.fc_features, "Fc6", bias=1.0)(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = layers.record_layer(self, "fc6", x)
    x = self.act(dense(self.fc_features, "Fc7", bias=1.0)(exchange(x)))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = layers.record_layer(self, "fc7", x)
    x = exchange(dense(self.num_classes, "Fc8")(exchange(x))).astype(jnp.float32)
    x = layers.record_layer(self, "logits", x)
    return x


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


class AlexNetTorchvision(nn.Module):
  """torchvision's single-tower AlexNet (61,100,840 parameters for 1000 classes, input 224).

  conv 64 11x11/4 pad 2 -> max-pool 3/2 -> conv 192 5x5 -> max-pool 3/2 -> conv 384, 256, 256
  3x3 -> max-pool 3/2 -> adaptive average pool to 6x6 -> dropout -> fc 4096 -> dropout ->
  fc 4096 -> fc classes (ReLU after every conv and hidden fc). No normalization.

  Sows 'conv1', 'pool1', 'conv2', 'pool2', 'conv3', 'conv4', 'conv5', 'pool5', 'avgpool', 'fc6',
  'fc7' and 'logits' into 'intermediates'.

  Attributes:
    num_classes: size of the output layer.
    dropout_rate: dropout before fc6 and fc7 when training.
    fc_features: width of fc6 and fc7 (torchvision's 4096).
    dtype: compute dtype; parameters stay float32, logits are float32.
    padding: 'same' (torchvision's zero padding: 2 on conv1, size-preserving elsewhere) or
      'circular' (periodic padding of the 'same' amounts in every conv).
    blur: anti-aliased downsampling as in `AlexNet`.
    blur_size: the blur filter size.
    act: the nonlinearity.
    lowering: how convolutions and max pooling are computed ('xla', 'tiled', 'auto'; see
      `cnn_jax.ops.lowering`); never changes parameters or values beyond float rounding.
  """
  num_classes: int = 1000
  dropout_rate: float = 0.5
  fc_features: int = 4096
  dtype: Any = None
  padding: str = "same"
  blur: bool = False
  blur_size: int = 3
  act: Callable = nn.relu
  lowering: str = ops.DEFAULT_LOWERING

  def __post_init__(self):
    layers.check_padding_mode(self.padding)
    super().__post_init__()

  def geometry(self) -> list[LayerGeometry]:
    """The conv and pooling layers along the network (before the adaptive pooling)."""
    pools = ([LayerGeometry(kernel=3, stride=1), LayerGeometry(kernel=self.blur_size, stride=2,
                                                                padding=(self.blur_size - 1) // 2)]
             if self.blur else [LayerGeometry(kernel=3, stride=2)])
    conv1_padding = 5 if self.padding == "circular" else 2
    conv1 = ([LayerGeometry(kernel=11, stride=2, padding=conv1_padding),
              LayerGeometry(kernel=self.blur_size, stride=2, padding=(self.blur_size - 1) // 2)]
             if self.blur else [LayerGeometry(kernel=11, stride=4, padding=conv1_padding)])
    return (conv1 + pools + [LayerGeometry(kernel=5, padding=2)] + pools
            + [LayerGeometry(kernel=3, padding=1)] * 3 + pools)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """`x: [N, H, W, 3]` (224 in torchvision; >= 63 for a non-empty map) -> `[N, num_classes]`."""
    layers.check_image_batch(x, "AlexNetTorchvision")
    conv = lambda features, kernel, name, **kw: layers.Conv(
        features, kernel, dtype=self.dtype, lowering=self.lowering, name=name, **kw)

    def pool(h):
      return layers.pool(h, "max", 3, 2, "valid", blur=self.blur, blur_size=self.blur_size,
                         lowering=self.lowering)

    padding = self.padding
    x = self.act(conv(64, 11, "Conv1", strides=2 if self.blur else 4,
                      padding=_conv1_padding(padding, 2))(x))
    if self.blur:
      x = layers.blur_downsample(x, 2, filter_size=self.blur_size, padding=padding,
                                 lowering=self.lowering)
    x = layers.record_layer(self, "conv1", x)
    x = pool(x)
    x = layers.record_layer(self, "pool1", x)
    x = self.act(conv(192, 5, "Conv2", padding=padding)(x))
    x = layers.record_layer(self, "conv2", x)
    x = pool(x)
    x = layers.record_layer(self, "pool2", x)
    for index, features in ((3, 384), (4, 256), (5, 256)):
      x = self.act(conv(features, 3, f"Conv{index}", padding=padding)(x))
      x = layers.record_layer(self, f"conv{index}", x)
    x = pool(x)
    x = layers.record_layer(self, "pool5", x)
    x = layers.adaptive_avg_pool(x, (6, 6))
    x = layers.record_layer(self, "avgpool", x)
    x = jnp.reshape(x, (jnp.shape(x)[0], -1))
    for index in (6, 7):
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = self.act(nn.Dense(self.fc_features, dtype=self.dtype, name=f"Fc{index}")(x))
      x = layers.record_layer(self, f"fc{index}", x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="Fc8")(x).astype(jnp.float32)
    x = layers.record_layer(self, "logits", x)
    return x
