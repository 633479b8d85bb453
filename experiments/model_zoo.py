"""The named model variants the experiments compare, as `(cnn_jax.models name, overrides)`.

Small on purpose: the default sweep trains about a hundred of them on 2 CPU cores. The CNNs are
the seed notes' conv -> ReLU -> pool stacks at 8 and 16 channels; 'resnet20' is the CIFAR
ResNet-20 (depth 20, option-A shortcuts) at half width (8-16-32 channels instead of 16-32-64).
"""

from __future__ import annotations

SMALL_CNN = {
    "features": (8, 16), "kernel_sizes": (3, 3), "pool_after": (True, True), "hidden": (32,),
    "dropout_rates": (0.0, 0.0), "padding": "same",
}

MODELS = {
    "mlp": ("mlp", {"widths": (128,)}),
    "cnn": ("cnn", SMALL_CNN),
    # Zhang 2019: max-pool densely, then blur and subsample.
    "cnn_blur": ("cnn", {**SMALL_CNN, "blur": True}),
    # Circular padding everywhere and global average pooling before the dense layers.
    "cnn_circular": ("cnn", {**SMALL_CNN, "padding": "circular", "head": "global_avg"}),
    "resnet20": ("resnet20", {"widths": (8, 16, 32)}),
}


def check_names(field: str, names, allowed) -> None:
  """Raises a ValueError unless `names` is a non-empty sequence of names in `allowed`."""
  names = tuple(names)
  unknown = [name for name in names if name not in allowed]
  if not names or unknown:
    raise ValueError(f"{field} must be a non-empty list of names from {tuple(allowed)}, got "
                     f"{names!r}" + (f" (unknown: {unknown})" if unknown else ""))


def check_seeds(field: str, seeds) -> None:
  """Raises a ValueError unless `seeds` is a non-empty sequence of distinct ints >= 0."""
  seeds = tuple(seeds)
  if (not seeds or len(set(seeds)) != len(seeds)
      or not all(isinstance(seed, int) and seed >= 0 for seed in seeds)):
    raise ValueError(f"{field} must be a non-empty list of distinct ints >= 0, got {seeds!r}")
