"""The named model variants the experiments compare, as `(cnn_jax.models name, overrides)`.

Small on purpose: the default sweep trains about a hundred of them on 2 CPU cores. Parameter
counts for 28x28 digits and 10 classes:

  mlp                one hidden layer of 128 units (101,770 parameters).
  cnn                the seed notes' conv -> ReLU -> max-pool stacks at 16 and 32 channels, 5x5,
                     'same' (zero) padding, flatten, dropout 0.25, a dense layer of 128, dropout
                     0.5 (215,370). The smallest of the recipes tried that passes 97.5% test
                     accuracy on the digits without augmentation (0.978 and 0.982 for 2 seeds,
                     where the 3x3 variant reached 0.974-0.975 and 8-16 channels with a dense
                     layer of 32 0.96).
  cnn_blur           the same with Zhang's blur pooling (max-pool densely, blur, subsample).
  cnn_avg            the same with 2x2 average pooling (215,370).
  cnn_stride         the same without pooling: each pooled conv at stride 2 (Springenberg et
                     al. 2015's Strided-CNN; 215,370).
  cnn_allconv        the same with each pooling layer replaced by a 3x3 conv of the same width
                     at stride 2 and a ReLU (their All-CNN; 226,938).
  resnet20           the CIFAR ResNet-20 (depth 20, batch norm, option-A shortcuts, global
                     average pooling) at half width, 8-16-32 channels (67,906).
  resnet20_circular  the same with circular padding in every conv: equivariant to circular
                     shifts that are multiples of the cumulative stride (4 after the last
                     stage), then invariant to them by the global average pooling.
  cnn_matched        the P4CNN's layers as plain convolutions (`p4cnn.MATCHED_CNN`: three 3x3
                     convs of 16-32-64 channels, 'same' padding, 2x2 max pooling after the first
                     two, global average pooling, no normalization; 23,946), the rotation
                     experiment's 'cnn'.
  cnn_matched_bn     the same with batch norm after every conv and no conv bias, the P4CNN's
                     normalization (24,058); the rotation experiment's 'cnn_bn'.

The invariant-by-construction variant is a ResNet because a plain CNN with global average
pooling and no normalization barely trains in the sweep's 80 steps of SGD: the SMALL_CNN layers
with circular padding and global average pooling (the former 'cnn_circular') reached 0.24-0.29
test accuracy, and wider, deeper or 5x5 variants of it (up to four conv layers and 65k
parameters; peak rates 0.05-0.2) 0.1-0.68, most likely because the averaged ReLU features of
all digits share a large positive mean (an ill-conditioned input to the dense layer) that the
ResNet's batch normalization removes; the 'cnn' keeps the positions instead, in its flattened
map. resnet20_circular reaches
the accuracy of resnet20 (0.90 vs 0.91 without augmentation, 2 seeds).
"""

from __future__ import annotations

from cnn_jax.models.p4cnn import MATCHED_CNN

SMALL_CNN = {
    "features": (16, 32), "kernel_sizes": (5, 5), "pool_after": (True, True), "hidden": (128,),
    "dropout_rates": (0.25, 0.5), "padding": "same",
}

MODELS = {
    "mlp": ("mlp", {"widths": (128,)}),
    "cnn": ("cnn", SMALL_CNN),
    # Zhang 2019: max-pool densely, then blur and subsample.
    "cnn_blur": ("cnn", {**SMALL_CNN, "blur": True}),
    # Pooling vs stride (Springenberg et al. 2015): the same layers with average pooling, with
    # each pooled conv at stride 2 and no pooling (the same parameters), and with each pooling
    # layer replaced by a stride-2 conv.
    "cnn_avg": ("cnn", {**SMALL_CNN, "pool": "avg"}),
    "cnn_stride": ("cnn", {**SMALL_CNN, "downsample": "stride"}),
    "cnn_allconv": ("cnn", {**SMALL_CNN, "downsample": "conv"}),
    "resnet20": ("resnet20", {"widths": (8, 16, 32)}),
    "resnet20_circular": ("resnet20", {"widths": (8, 16, 32), "padding": "circular"}),
    # The rotation experiment's plain CNNs: the P4CNN's layers as ordinary convolutions
    # (`cnn_jax.models.p4cnn.MATCHED_CNN`), without and with the P4CNN's batch norm.
    "cnn_matched": ("cnn", MATCHED_CNN),
    "cnn_matched_bn": ("cnn", {**MATCHED_CNN, "norm": True}),
}


def check_names(field: str, names, allowed) -> None:
  """Raises a ValueError unless `names` is a non-empty sequence of names in `allowed`."""
  names = tuple(names)
  unknown = [name for name in names if name not in allowed]
  if not names or unknown:
    raise ValueError(f"{field} must be a non-empty list of names from {tuple(allowed)}, got "
                     f"{names!r}" + (f" (unknown: {unknown})" if unknown else ""))


def check_positive_number(field: str, value) -> None:
  """Raises a ValueError unless `value` is an int or float (not a bool) > 0."""
  if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
    raise ValueError(f"{field} must be a number > 0, got {value!r}")


def check_seeds(field: str, seeds) -> None:
  """Raises a ValueError unless `seeds` is a non-empty sequence of distinct ints >= 0."""
  seeds = tuple(seeds)
  if (not seeds or len(set(seeds)) != len(seeds)
      or not all(isinstance(seed, int) and seed >= 0 for seed in seeds)):
    raise ValueError(f"{field} must be a non-empty list of distinct ints >= 0, got {seeds!r}")
