"""A p4 group-equivariant CNN (Cohen & Welling 2016, "Group Equivariant Convolutional Networks").

The group p4 holds the translations of the pixel grid and the rotations by multiples of 90°
about a pixel. A p4 feature map is a function of a position `t` and a rotation `r` in 0..3; here
it is stored as an ordinary channels-last map `[N, H, W, C * 4]` whose channel `4 c + r` is
feature `c` at rotation `r` (`as_rotations` views it as `[N, H, W, C, 4]`), so spatial pooling,
the analysis code and the receptive-field tracer treat it like any other feature map.

With `R` the rotation by 90° (`jnp.rot90` on the spatial axes) and filters `psi`:

  lifting (Z2 -> p4)  `[f * psi](t, r) = sum_y sum_c f_c(y) psi_c(R^-r (y - t))`
  group   (p4 -> p4)  `[f * psi](t, r) = sum_y sum_s sum_c f_c(y, s) psi_c(R^-r (y - t), s - r)`

i.e. a cross-correlation (`ops.correlate`) with a filter bank of 4 rotated copies of each
filter; in the group layer copy `r` also shifts the filter's own rotation axis cyclically by `r`
(`lifting_filter_bank`, `group_filter_bank`). Both are equivariant: rotating the input image,
`x -> R x`, rotates every p4 map and shifts its rotation axis by one,
`f(t, r) -> f(R^-1 t, r - 1)` (`rotate_p4`). Bias, batch norm (statistics and scale shared by
the 4 rotations of a channel), the nonlinearity and spatial pooling commute with that action.
Pooling over the 4 rotations then gives maps that only rotate, and the global average over
space makes the features, hence the logits, invariant.

Exactness on a pixel grid: `R` must map each layer's sampling grid onto itself. For square
inputs that holds for stride-1 convolutions with 'valid' padding (any kernel size) or with
'same'/'circular' padding and odd kernels (equal padding on both sides), and for a pooling of
window = stride F when the side of its input is divisible by F (the windows tile the map; a
remainder is dropped or wrapped on one side only). `P4CNN.is_exactly_equivariant(side)` checks
this for a model; the default is exact on 28x28 digits (28 -> 14 -> 7).

Parameter budget: a p4 -> p4 layer of C_in -> C_out p4 channels has `K^2 C_in 4 C_out` weights,
so halving the channels of a CNN (divide by sqrt(4), as Cohen & Welling do) keeps the weights of
its inner layers; the lifting layer and the dense head see half the channels of the CNN's.
The default `P4CNN()` (8-16-32 p4 channels, 23,554 parameters) is matched to `MATCHED_CNN`, the
CNN with the same layers at 16-32-64 channels (23,946 parameters, `get_model('cnn',
**MATCHED_CNN)`), within 2%. The P4CNN adds group batch norm (112 of its parameters), without
which it trains markedly slower on the digits; `norm=False` (23,498 parameters) has exactly the
layers of `MATCHED_CNN`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_jax import ops
from cnn_jax.models import layers
from cnn_jax.ops.conv import Padding

ROTATIONS = 4  # the rotations of p4: 0°, 90°, 180°, 270°
P4CNN_PADDINGS = ("valid", "same", "circular")
P4CNN_POOLS = ("max", "avg")

# The plain CNN that the default P4CNN is matched to: the same layers and head at twice the
# channels (`get_model('cnn', **MATCHED_CNN)`), no normalization (the CNN has none).
MATCHED_CNN = {
    "features": (16, 32, 64), "kernel_sizes": (3, 3, 3), "pool_after": (True, True, False),
    "pool": "max", "pool_window": 2, "hidden": (), "dropout_rates": (0.0,), "head": "global_avg",
    "padding": "same",
}


def as_rotations(x: jax.Array) -> jax.Array:
  """A p4 map `[N, H, W, C * 4]` viewed as `[N, H, W, C, 4]` (last axis: the rotation r)."""
  return jnp.reshape(x, jnp.shape(x)[:-1] + (jnp.shape(x)[-1] // ROTATIONS, ROTATIONS))


def rotate_images(x: jax.Array, k: int = 1) -> jax.Array:
  """Rotates `[N, H, W, C]` by `k` x 90° counterclockwise (`jnp.rot90` on axes 1, 2)."""
  return jnp.rot90(x, k, axes=(1, 2))


def rotate_p4(x: jax.Array, k: int = 1) -> jax.Array:
  """The action of the rotation by `k` x 90° on a p4 map: `f(t, r) -> f(R^-k t, r - k)`.

  `[N, H, W, C * 4]` -> `[N, W, H, C * 4]`: the spatial axes rotate (`rotate_images`) and each
  channel's 4 rotations shift cyclically by `k`.
  """
  rotated = jnp.roll(as_rotations(rotate_images(x, k)), k, axis=-1)
  return jnp.reshape(rotated, jnp.shape(rotated)[:-2] + (-1,))


def lifting_filter_bank(kernel: jax.Array) -> jax.Array:
  """The lifting layer's filters: `[K, K, C_in, F]` -> `[K, K, C_in, F * 4]`.

  Output channel `4 f + r` is filter f rotated by r x 90°: `psi_r(u) = psi(R^-r u)`.
  """
  bank = jnp.stack([jnp.rot90(kernel, r, axes=(0, 1)) for r in range(ROTATIONS)], axis=-1)
  return jnp.reshape(bank, jnp.shape(kernel)[:-1] + (-1,))


def group_filter_bank(kernel: jax.Array) -> jax.Array:
  """The p4 -> p4 layer's filters: `[K, K, C_in, 4, F]` -> `[K, K, C_in * 4, F * 4]`.

  Input channel `4 c + s`, output channel `4 f + r`: `psi_r(u, s) = psi(R^-r u, s - r)`, the
  filter rotated by r x 90° with its rotation axis shifted cyclically by r.
  """
  copies = [jnp.roll(jnp.rot90(kernel, r, axes=(0, 1)), r, axis=3) for r in range(ROTATIONS)]
  bank = jnp.stack(copies, axis=-1)
  size, channels_in, features = jnp.shape(kernel)[:2], jnp.shape(kernel)[2], jnp.shape(kernel)[4]
  return jnp.reshape(bank, size + (channels_in * ROTATIONS, features * ROTATIONS))


class P4Conv(nn.Module):
  """A p4 convolution on `ops.correlate`: lifting (Z2 -> p4) or group (p4 -> p4), stride 1.

  Lifting: `x: [N, H, W, C_in]`, kernel 'kernel' `[K, K, C_in, features]`; group:
  `x: [N, H, W, C_in * 4]`, kernel `[K, K, C_in, 4, features]` (axis 3: the input rotation s).
  Either way the output is `[N, H', W', features * 4]` and 'bias' `[features]` is shared by the
  4 rotations of a feature (a bias per rotation would break equivariance).

  Attributes:
    features: output p4 channels F.
    kernel_size: the square kernel size K (odd with 'same' or 'circular' padding for exact
      equivariance).
    lifting: the first layer, on images (True), or a layer on p4 maps (False).
    padding: any `ops` padding spec; 'valid', 'same' and 'circular' keep exact equivariance.
    use_bias: whether to add the learned bias.
    dtype: compute dtype (None: from the inputs); parameters are kept in `param_dtype`.
    param_dtype: dtype of the parameters.
    kernel_init, bias_init: initializers (the kernel's fan-in, `K^2 C_in` or `K^2 C_in 4`, is
      that of its stored shape).
    lowering: how `ops.correlate` computes the layer: 'xla', 'tiled' or 'auto'.
  """
  features: int
  kernel_size: int
  lifting: bool = False
  padding: Padding = "same"
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros_init()
  lowering: str = ops.DEFAULT_LOWERING

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`x: [N, H, W, C_in]` (lifting) or `[N, H, W, C_in * 4]` -> `[N, H', W', features * 4]`."""
    channels = jnp.shape(x)[-1]
    size = (self.kernel_size, self.kernel_size)
    if self.lifting:
      shape, to_bank = size + (channels, self.features), lifting_filter_bank
    else:
      if channels % ROTATIONS:
        raise ValueError(f"P4Conv {self.name}: a p4 map needs a multiple of {ROTATIONS} "
                         f"channels, got x of shape {jnp.shape(x)}")
      shape = size + (channels // ROTATIONS, ROTATIONS, self.features)
      to_bank = group_filter_bank
    kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
    bias = (jnp.repeat(self.param("bias", self.bias_init, (self.features,), self.param_dtype),
                       ROTATIONS) if self.use_bias else None)
    x, bank, bias = nn.dtypes.promote_dtype(x, to_bank(kernel), bias, dtype=self.dtype)
    return ops.correlate(x, bank, padding=self.padding, bias=bias, lowering=self.lowering)


def rotation_pool(x: jax.Array, kind: str) -> jax.Array:
  """Max or mean over the 4 rotations: p4 map `[N, H, W, C * 4]` -> `[N, H, W, C]`.

  The result only rotates with the input (`rotate_images`), its channels no longer permute.
  """
  reduce = jnp.max if kind == "max" else jnp.mean
  return reduce(as_rotations(x), axis=-1)


class P4CNN(nn.Module):
  """A p4-equivariant CNN, invariant to 90° rotations: [p4 conv -> (norm) -> act (-> pool)]
  stages, pooling over rotations, global average pooling, fully connected layers.

  The first conv lifts the image to p4 maps, the others are p4 -> p4 group convolutions; the
  fields mirror `CNN`'s, with `features` counting p4 channels (each stored as 4 rotations). The
  default, 8-16-32 p4 channels of 3x3, 'same' padding, 2x2 max pooling after the first two, is
  exactly equivariant on 28x28 inputs and has 23,554 parameters (`MATCHED_CNN`: 23,946).

  Sows 'conv1', 'conv2', ... (after each activation, p4 maps `[N, H, W, F * 4]`), 'pool1', ...
  (after each pooling), 'rotation_pool' (`[N, H, W, F]`), 'global_pool', 'fc1', ... and
  'logits' into 'intermediates'.

  Attributes:
    num_classes: size of the output layer.
    features: p4 channels of each conv layer (the first lifts).
    kernel_sizes: the square kernel size of each conv layer.
    pool_after: for each conv layer, whether a spatial pooling follows it.
    pool: 'max' or 'avg', the spatial pooling.
    pool_window: the pooling window F and stride F.
    rotation_pool: 'max' or 'avg' over the 4 rotations before the head.
    hidden: widths of the fully connected hidden layers.
    dropout_rates: one per dense layer (len(hidden) + 1), applied to that layer's input.
    norm: group batch norm after every conv: statistics over batch, space and the 4 rotations,
      one scale and bias per p4 channel (the convs then have no bias).
    padding: 'valid', 'same' or 'circular', used by every conv (and, for 'circular', the pools).
    axis_name: None, or the named axis over which batch norm averages its batch statistics.
    dtype: compute dtype; parameters stay float32, logits are float32.
    act: the nonlinearity (pointwise, so it commutes with rotations).
    lowering: how convolutions and max pooling are computed ('xla', 'tiled', 'auto'; see
      `cnn_jax.ops.lowering`); never changes parameters or values beyond float rounding.
  """
  num_classes: int = 10
  features: Sequence[int] = (8, 16, 32)
  kernel_sizes: Sequence[int] = (3, 3, 3)
  pool_after: Sequence[bool] = (True, True, False)
  pool: str = "max"
  pool_window: int = 2
  rotation_pool: str = "max"
  hidden: Sequence[int] = ()
  dropout_rates: Sequence[float] = (0.0,)
  norm: bool = True
  padding: str = "same"
  axis_name: str | None = None
  dtype: Any = None
  act: Callable = nn.relu
  lowering: str = ops.DEFAULT_LOWERING

  def __post_init__(self):
    if not len(self.features) == len(self.kernel_sizes) == len(self.pool_after) >= 1:
      raise ValueError(
          f"features, kernel_sizes and pool_after need one entry per conv layer (at least one), "
          f"got {self.features!r}, {self.kernel_sizes!r}, {self.pool_after!r}")
    if len(self.dropout_rates) != len(self.hidden) + 1:
      raise ValueError(f"dropout_rates needs one rate per dense layer (len(hidden) + 1 = "
                       f"{len(self.hidden) + 1}), got {self.dropout_rates!r}")
    layers.check_padding_mode(self.padding, P4CNN_PADDINGS)
    if self.padding != "valid" and any(kernel % 2 == 0 for kernel in self.kernel_sizes):
      raise ValueError(f"kernel_sizes must be odd with padding {self.padding!r} (an even kernel "
                       f"pads one side more, which breaks exact rotation equivariance), got "
                       f"{self.kernel_sizes!r}")
    for name, value in (("pool", self.pool), ("rotation_pool", self.rotation_pool)):
      if value not in P4CNN_POOLS:
        raise ValueError(f"{name} must be one of {P4CNN_POOLS}, got {value!r}")
    super().__post_init__()

  def is_exactly_equivariant(self, side: int) -> bool:
    """Whether every layer is exactly equivariant to 90° rotations of `side x side` inputs.

    True when the input of every pooling has a side divisible by `pool_window` ('valid' convs
    shrink the side by K - 1; 'same' and 'circular' keep it) and the last map is non-empty.
    """
    for kernel, pooled in zip(self.kernel_sizes, self.pool_after):
      side -= kernel - 1 if self.padding == "valid" else 0
      if side < 1 or (pooled and side % self.pool_window):
        return False
      side //= self.pool_window if pooled else 1
    return side >= 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """`x: [N, H, W, C]` -> logits `[N, num_classes]` float32."""
    layers.check_image_batch(x, "P4CNN")
    inputs = x
    pool_padding = "circular" if self.padding == "circular" else "valid"
    pool_count = 0
    for index, (features, kernel, pooled) in enumerate(
        zip(self.features, self.kernel_sizes, self.pool_after), start=1):
      x = P4Conv(features, kernel, lifting=index == 1, padding=self.padding,
                 use_bias=not self.norm, dtype=self.dtype, lowering=self.lowering,
                 name=f"Conv{index}")(x)
      if self.norm:
        # Feature axis -2 of [N, H, W, F, 4]: statistics over N, H, W and the rotations.
        normalized = nn.BatchNorm(use_running_average=not train, axis=-2, momentum=0.9,
                                  epsilon=1e-5, dtype=self.dtype, axis_name=self.axis_name,
                                  name=f"Norm{index}")(as_rotations(x))
        x = jnp.reshape(normalized, jnp.shape(x))
      x = self.act(x)
      x = layers.record_layer(self, f"conv{index}", x)
      if pooled:
        pool_count += 1
        x = layers.pool(x, self.pool, self.pool_window, self.pool_window, pool_padding,
                        blur=False, blur_size=1, lowering=self.lowering)
        x = layers.record_layer(self, f"pool{pool_count}", x)
    x = rotation_pool(x, self.rotation_pool)
    x = layers.record_layer(self, "rotation_pool", x)
    x = ops.global_avg_pool(x)
    x = layers.record_layer(self, "global_pool", x)
    for index, (width, rate) in enumerate(zip(self.hidden, self.dropout_rates), start=1):
      x = nn.Dropout(rate, deterministic=not train)(x)
      x = self.act(nn.Dense(width, dtype=self.dtype, name=f"Fc{index}")(x))
      x = layers.record_layer(self, f"fc{index}", x)
    x = nn.Dropout(self.dropout_rates[-1], deterministic=not train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="Head")(x).astype(jnp.float32)
    x = layers.nan_where_input_is_not_finite(inputs, x)
    x = layers.record_layer(self, "logits", x)
    return x
