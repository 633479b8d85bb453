"""Layers shared by the models, all on `cnn_jax.ops`, so a padding mode or blur reaches every layer.

Layout NHWC throughout: `x: [N, H, W, C]`. The `Conv` module stores its kernel as
`[KH, KW, C_in // groups, C_out]`, the layout of `ops.correlate`.

Lowering: `Conv`, `max_pool`, `pool` and `blur_downsample` take a `lowering` ('xla', 'tiled',
'auto'; `cnn_jax.ops.lowering`) that only changes how XLA computes them, never their parameters
or values (beyond float rounding). The default is the ops default, 'auto': the fastest measured
lowering per backend. Force 'xla', the reference, to rule the lowering out of a comparison.

Downsampling (Zhang 2019, "Making Convolutional Networks Shift-Invariant Again"): a pooling or a
strided convolution evaluates its input on a grid of stride S and aliases whatever lies above
the grid's Nyquist frequency. With `blur=True` the models keep the dense evaluation (stride 1)
and subsample with `blur_downsample`, a low-pass filter followed by stride S.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnn_jax import ops
from cnn_jax.ops.conv import Padding

# Padding modes a model accepts in its `padding` field.
MODEL_PADDINGS = ("same", "circular", "torch")
# Variances a batch norm can put into its running statistics.
BATCH_NORM_VARIANCES = ("biased", "unbiased")


def torch_padding(kernel_size: int | Sequence[int], dilation: int | Sequence[int] = 1,
                  spatial_axes: int = 2) -> tuple[int, ...]:
  """PyTorch's explicit symmetric padding `P = D (K - 1) // 2` per spatial axis (torchvision's
  `padding=K // 2` for its odd kernels and pools), the amounts of `padding='torch'`.

  It equals 'same' at stride 1 and odd K; at stride 2 'same' pads `(P - 1, P)` or `(P, P)`
  depending on the input size (TensorFlow's rule), `'torch'` always `(P, P)`, so a strided layer
  samples the same pixels as PyTorch's.
  """
  kernels = (kernel_size,) * spatial_axes if isinstance(kernel_size, int) else tuple(kernel_size)
  dilations = (dilation,) * len(kernels) if isinstance(dilation, int) else tuple(dilation)
  return tuple(d * (k - 1) // 2 for k, d in zip(kernels, dilations))


def check_padding_mode(padding: str, allowed: Sequence[str] = MODEL_PADDINGS) -> None:
  """Raises a ValueError unless `padding` is one of `allowed`."""
  if padding not in allowed:
    raise ValueError(f"padding must be one of {tuple(allowed)}, got {padding!r}")


def check_image_batch(x: jax.Array, model_name: str) -> None:
  """Raises a ValueError unless `x` is a float batch of images `[N, H, W, C]`."""
  if jnp.ndim(x) != 4:
    raise ValueError(f"{model_name} expects x of shape [N, H, W, C], got shape {jnp.shape(x)}")
  if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
    raise ValueError(f"{model_name} expects a float x, got dtype {jnp.result_type(x)}")


def nan_where_input_is_not_finite(inputs: jax.Array, logits: jax.Array) -> jax.Array:
  """`logits` with the rows of the examples whose input holds a NaN or an infinity set to NaN.

  NaN in, NaN out, whatever the backend: under jit with cnn-jax's XLA:CPU flags, YNNPACK's fused
  reductions skip NaN (`cnn_jax.runtime.YNN_FUSION_TYPES`), so relu + max pooling could turn a NaN
  image into finite, confident logits. One pass over the input.

  Args:
    inputs: `[N, ...]`, the model's input.
    logits: `[N, K]`.

  Returns:
    `[N, K]`: `logits` where example n's input is finite, NaN elsewhere.
  """
  finite = jnp.all(jnp.isfinite(inputs), axis=tuple(range(1, jnp.ndim(inputs))))
  return jnp.where(finite[:, None], logits, jnp.nan)


def record_layer(module: nn.Module, name: str, x: jax.Array) -> jax.Array:
  """Records a layer's output `x` under `name`, as every model does after each layer.

  Sown into the 'intermediates' collection (what the metrics and visualizations read) and passed
  through `module.perturb(name, x)`: with a 'perturbations' collection given to `apply`, the layer
  becomes `x + perturbation`, so gradients and Jacobian-vector products with respect to any layer's
  output are one `jax.grad` / `jax.jvp` away (`cnn_jax.analysis.lie_attribution`); without it,
  `perturb` returns `x` unchanged. `init` creates no perturbation (the variables it returns hold
  only what the model learns or tracks).

  Returns:
    `x` (plus the perturbation, when one is given).
  """
  if not module.is_initializing():
    x = module.perturb(name, x)
  module.sow("intermediates", name, x)
  return x


class Conv(nn.Module):
  """A convolution layer on `ops.correlate` (cross-correlation, as in every DL library).

  `y[b, i, j, o] = bias[o] + sum_{k, l, c} x_pad[b, i S + k D, j S + l D, g(o) C_g + c]
  kernel[k, l, c, o]`, with `C_g = C_in / groups` (see `cnn_jax.ops.conv`).

  Attributes:
    features: C_out.
    kernel_size: an int or one per spatial axis.
    strides: S, an int or one per spatial axis.
    padding: any `ops` padding spec ('valid', 'same', 'full', 'circular', ints, (lo, hi) pairs),
      or 'torch': `D (K - 1) // 2` zeros on both sides of every axis (`torch_padding`).
    kernel_dilation: D, an int or one per spatial axis.
    groups: feature groups; `C_in` and `C_out` must be divisible by it.
    use_bias: whether to add a learned bias `[C_out]`.
    dtype: compute dtype (None: from the inputs); parameters are kept in `param_dtype`.
    param_dtype: dtype of 'kernel' `[*K, C_in // groups, C_out]` and 'bias' `[C_out]`.
    kernel_init, bias_init: initializers.
    lowering: how `ops.correlate` computes the layer: 'xla', 'tiled' or 'auto'.
  """
  features: int
  kernel_size: int | Sequence[int]
  strides: int | Sequence[int] = 1
  padding: Padding = "same"
  kernel_dilation: int | Sequence[int] = 1
  groups: int = 1
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros_init()
  lowering: str = ops.DEFAULT_LOWERING

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`x: [N, *spatial, C_in]` -> `[N, *spatial', features]`."""
    spatial_axes = jnp.ndim(x) - 2
    kernel_size = ((self.kernel_size,) * spatial_axes if isinstance(self.kernel_size, int)
                   else tuple(self.kernel_size))
    channels_in = jnp.shape(x)[-1]
    if channels_in % self.groups:
      raise ValueError(f"Conv {self.name}: groups={self.groups} must divide the input channels, "
                       f"got x of shape {jnp.shape(x)}")
    kernel = self.param("kernel", self.kernel_init,
                        kernel_size + (channels_in // self.groups, self.features),
                        self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    padding = self.padding
    if isinstance(padding, str) and padding == "torch":
      padding = torch_padding(kernel_size, self.kernel_dilation, spatial_axes)
    return ops.correlate(x, kernel, stride=self.strides, padding=padding,
                         kernel_dilation=self.kernel_dilation, groups=self.groups, bias=bias,
                         lowering=self.lowering)


class BatchNorm(nn.BatchNorm):
  """`nn.BatchNorm` (same fields, variables and values) whose running variance can follow
  PyTorch's rule.

  Training normalizes with the biased batch variance `v = mean((x - mu)^2)` in both cases; the
  running variance is updated as `var <- m var + (1 - m) v'` with `v' = v` ('biased', Flax's
  rule) or `v' = v n / (n - 1)` ('unbiased', PyTorch's `BatchNorm2d`), where `n` is the number of
  values each channel's statistics average (`N H W`, times the devices of `axis_name`).

  Attributes:
    variance: 'biased' or 'unbiased' (`BATCH_NORM_VARIANCES`).
  """
  variance: str = "biased"

  def __post_init__(self):
    if self.variance not in BATCH_NORM_VARIANCES:
      raise ValueError(f"variance must be one of {BATCH_NORM_VARIANCES}, got {self.variance!r}")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
    """`x: [..., C]` -> `[..., C]` (features on the last axis, as every model here uses it)."""
    if self.variance == "biased" or self.is_initializing():
      return super().__call__(x, use_running_average)
    if nn.merge_param("use_running_average", self.use_running_average, use_running_average):
      return super().__call__(x, use_running_average)
    previous = self.get_variable("batch_stats", "var")
    y = super().__call__(x, use_running_average)
    # The batch variance again in float32, two-pass, averaged over the devices of axis_name.
    axes = tuple(range(jnp.ndim(x) - 1))
    x32 = jnp.asarray(x, jnp.float32)
    mean = jnp.mean(x32, axes)
    count = np.prod(jnp.shape(x)[:-1])
    if self.axis_name is not None:
      mean = lax.pmean(mean, self.axis_name)
    variance = jnp.mean(jnp.square(x32 - mean), axes)
    if self.axis_name is not None:
      variance = lax.pmean(variance, self.axis_name)
      count = count * lax.psum(1, self.axis_name)
    self.put_variable("batch_stats", "var", self.momentum * previous + (1 - self.momentum)
                      * variance * (count / (count - 1)))
    return y


def _wrap_pad_for_window(x: jax.Array, window: int, stride: int) -> jax.Array:
  """Periodic extension by the amounts of 'same' padding, so a 'valid' window sees a torus."""
  spatial = jnp.shape(x)[1:-1]
  pads = ops.resolve_padding("same", spatial, (window,) * len(spatial),
                             (stride,) * len(spatial), (1,) * len(spatial))
  return jnp.pad(x, ((0, 0),) + pads + ((0, 0),), mode="wrap")


def _pool_padding(padding: Padding, window: int, spatial_axes: int) -> Padding:
  """'torch' as explicit symmetric pads `(F - 1) // 2`; any other padding unchanged."""
  if isinstance(padding, str) and padding == "torch":
    return torch_padding(window, 1, spatial_axes)
  return padding


def max_pool(x: jax.Array, window: int, stride: int, padding: Padding = "valid", *,
             lowering: str = ops.DEFAULT_LOWERING) -> jax.Array:
  """`ops.max_pool` that also accepts padding='circular' (periodic 'same'-sized padding) and
  'torch' (`(F - 1) // 2` on both sides, torch's `MaxPool2d(F, S, F // 2)` for odd F).

  `y[n] = max_{k < F} x[n S + k - P_lo]`: `[N, H, W, C] -> [N, H', W', C]`.
  """
  padding = _pool_padding(padding, window, jnp.ndim(x) - 2)
  if isinstance(padding, str) and padding == "circular":
    return ops.max_pool(_wrap_pad_for_window(x, window, stride), window, stride, "valid",
                        lowering=lowering)
  return ops.max_pool(x, window, stride, padding, lowering=lowering)


def avg_pool(x: jax.Array, window: int, stride: int, padding: Padding = "valid") -> jax.Array:
  """`ops.avg_pool` that also accepts padding='circular' (periodic 'same'-sized padding) and
  'torch' (`(F - 1) // 2` on both sides).

  `y[n] = mean_{k < F} x[n S + k - P_lo]`: `[N, H, W, C] -> [N, H', W', C]`. It has one
  lowering (`reduce_window`): its backward pass is already a cheap strided sum.
  """
  padding = _pool_padding(padding, window, jnp.ndim(x) - 2)
  if isinstance(padding, str) and padding == "circular":
    return ops.avg_pool(_wrap_pad_for_window(x, window, stride), window, stride, "valid")
  return ops.avg_pool(x, window, stride, padding)


def blur_downsample(x: jax.Array, stride: int, *, filter_size: int = 3,
                    padding: str = "same", lowering: str = ops.DEFAULT_LOWERING) -> jax.Array:
  """Low-pass filter then subsample by `stride` (`ops.blur_pool`): `[N, H, W, C] -> [N, H', W', C]`.

  The model padding mode picks the filter's border rule: 'circular' keeps exact equivariance to
  circular shifts; otherwise reflection, Zhang's default (zeros would darken the border).
  """
  border = "circular" if padding == "circular" else "reflect"
  return ops.blur_pool(x, stride=stride, filter_size=filter_size, padding=border,
                       lowering=lowering)


def pool(x: jax.Array, kind: str, window: int, stride: int, padding: Padding, *, blur: bool,
         blur_size: int, lowering: str = ops.DEFAULT_LOWERING) -> jax.Array:
  """Max or average pooling, or with `blur` the anti-aliased form: pool(stride 1) + blur(stride).

  Args:
    x: `[N, H, W, C]`.
    kind: 'max' or 'avg'.
    window, stride: the pooling window F and stride S.
    padding: the pooling padding; with blur the blur filter's border follows it.
    blur: replace the strided pooling by a dense pooling and `blur_downsample`.
    blur_size: the blur filter size.
    lowering: the lowering of max pooling and of the blur ('xla', 'tiled', 'auto'); average
      pooling has one.

  Returns:
    `[N, H', W', C]`.
  """
  pool_fn = functools.partial(max_pool, lowering=lowering) if kind == "max" else avg_pool
  if not blur or stride == 1:
    return pool_fn(x, window, stride, padding)
  dense = pool_fn(x, window, 1, padding)
  return blur_downsample(dense, stride, filter_size=blur_size,
                         padding=padding if isinstance(padding, str) else "same",
                         lowering=lowering)


def local_response_norm(x: jax.Array, size: int = 5, k: float = 2.0, alpha: float = 1e-4,
                        beta: float = 0.75, groups: int = 1) -> jax.Array:
  """Local response normalization across channels (Krizhevsky et al. 2012, Sec. 3.3).

  `b_c = a_c / (k + alpha * sum_{c' = max(0, c - n/2)}^{min(C - 1, c + n/2)} a_{c'}^2)^beta`,
  with the window clipped at the edges of each of `groups` channel groups, so that the two
  towers of AlexNet never normalize each other (alpha is not divided by n, as in the paper).

  Args:
    x: `[N, H, W, C]`, `C` divisible by `groups`.
    size: n, the number of adjacent channels in the window.
    k, alpha, beta: the paper's constants (2, 1e-4, 0.75).
    groups: independent channel groups.

  Returns:
    `[N, H, W, C]`.
  """
  channels = jnp.shape(x)[-1]
  squares = jnp.square(x).reshape(jnp.shape(x)[:-1] + (groups, channels // groups))
  window = (1,) * (squares.ndim - 1) + (size,)
  pads = ((0, 0),) * (squares.ndim - 1) + ((size // 2, (size - 1) // 2),)
  # A Python 0.0 init value keeps this the differentiable reduce_window_sum under jit.
  sums = lax.reduce_window(squares, 0.0, lax.add, window,
                           (1,) * squares.ndim, pads)
  return x / (k + alpha * sums.reshape(jnp.shape(x))) ** beta


def _adaptive_average_matrix(size_in: int, size_out: int) -> np.ndarray:
  """`[size_out, size_in]`: row i averages `[floor(i n / m), ceil((i + 1) n / m))`."""
  matrix = np.zeros((size_out, size_in), np.float32)
  for i in range(size_out):
    start, stop = (i * size_in) // size_out, -(-((i + 1) * size_in) // size_out)
    matrix[i, start:stop] = 1.0 / (stop - start)
  return matrix


def adaptive_avg_pool(x: jax.Array, output_size: tuple[int, int]) -> jax.Array:
  """Average pooling to a fixed output size (torchvision's `AdaptiveAvgPool2d`).

  Output pixel (i, j) averages rows `[floor(i H / H'), ceil((i + 1) H / H'))` and the same for
  columns: `[N, H, W, C] -> [N, H', W', C]`; the identity when `(H, W) == (H', W')`.
  """
  rows = _adaptive_average_matrix(jnp.shape(x)[1], output_size[0])
  cols = _adaptive_average_matrix(jnp.shape(x)[2], output_size[1])
  return jnp.einsum("nhwc,ih,jw->nijc", x, rows.astype(x.dtype), cols.astype(x.dtype))
