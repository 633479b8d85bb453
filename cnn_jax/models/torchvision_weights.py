"""Weights in torchvision's format: `from_torchvision` and `to_torchvision`.

A torchvision `state_dict` maps dotted names (`layer1.0.conv1.weight`) to arrays in PyTorch's
layouts; this module maps them to and from the variables of the twin cnn-jax model, configured
for exact parity: `padding='torch'` (torchvision's symmetric pads in every conv and pool) and, for
the ResNets, `batch_norm_variance='unbiased'` (PyTorch's running-variance update).

Layouts, torch -> cnn-jax (each an exact permutation of the values):

* conv weight `[C_out, C_in, KH, KW]` -> kernel `[KH, KW, C_in, C_out]`;
* linear weight `[F_out, F_in]` -> kernel `[F_in, F_out]`; AlexNet's fc6 also reorders its
  inputs from torch's `(C, H, W)` flattening to the NHWC model's `(H, W, C)`;
* batch norm `weight`, `bias`, `running_mean`, `running_var` -> params `scale`, `bias`,
  batch_stats `mean`, `var`. `num_batches_tracked` (unused with torchvision's momentum 0.1 =
  Flax's 0.9) is accepted and dropped on import, and written as 0 on export.

Names: ResNet `conv1`/`bn1` = `StemConv`/`StemNorm`, `layer{s}.{i}.conv{j}`/`bn{j}` =
`Block{s}_{i+1}/Conv{j}`/`Norm{j}`, `downsample.0`/`.1` = `ShortcutConv`/`ShortcutNorm`, `fc` =
`Head`; AlexNet `features.{0,3,6,8,10}` = `Conv1..5`, `classifier.{1,4,6}` = `Fc6..8`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from cnn_jax.models.registry import get_model

TORCHVISION_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                     "alexnet_torchvision")
_ALEXNET_MODULES = {"Conv1": "features.0", "Conv2": "features.3", "Conv3": "features.6",
                    "Conv4": "features.8", "Conv5": "features.10", "Fc6": "classifier.1",
                    "Fc7": "classifier.4", "Fc8": "classifier.6"}
_RESNET_MODULES = {"StemConv": "conv1", "StemNorm": "bn1", "Head": "fc",
                   "ShortcutConv": "downsample.0", "ShortcutNorm": "downsample.1"}
_LEAVES = {("params", "kernel"): "weight", ("params", "scale"): "weight",
           ("params", "bias"): "bias", ("batch_stats", "mean"): "running_mean",
           ("batch_stats", "var"): "running_var"}
# AlexNet's adaptive average pooling output, which fc6 flattens.
_ALEXNET_POOL = (6, 6)
# The input of the shape-only init (no compute: `jax.eval_shape`); no parameter depends on it.
_INIT_SIZE = 224


def _check_name(name: str) -> None:
  if name not in TORCHVISION_NAMES:
    raise ValueError(f"name must be one of {TORCHVISION_NAMES}, got {name!r}")


def _torch_module(name: str, path: tuple[str, ...]) -> str:
  """The torchvision module name of the cnn-jax module at `path` (e.g. ('Block2_1', 'Norm1'))."""
  if name == "alexnet_torchvision":
    return _ALEXNET_MODULES[path[0]]
  parts = []
  for part in path:
    block = re.fullmatch(r"Block(\d+)_(\d+)", part)
    layer = re.fullmatch(r"(Conv|Norm)(\d+)", part)
    if block:
      parts.append(f"layer{block[1]}.{int(block[2]) - 1}")
    elif layer:
      parts.append(("conv" if layer[1] == "Conv" else "bn") + layer[2])
    else:
      parts.append(_RESNET_MODULES[part])
  return ".".join(parts)


def _torchvision_order(key: str) -> tuple[int, ...]:
  """A sort key that lists a state_dict in torchvision's (forward) order."""
  leaves = {"weight": 0, "bias": 1, "running_mean": 2, "running_var": 3,
            "num_batches_tracked": 4}
  ranks = []
  for part in key.split("."):
    match = re.fullmatch(r"(conv|bn|layer)(\d+)", part)
    if part.isdigit():
      ranks.append(int(part))
    elif part in leaves:
      ranks.append(leaves[part])
    elif match:
      ranks.append({"conv": 0, "bn": 1, "layer": 100}[match[1]] + (2 * int(match[2])
                                                                   if match[1] != "layer"
                                                                   else int(match[2])))
    else:
      ranks.append({"features": 0, "classifier": 1, "downsample": 1000, "fc": 10000}[part])
  return tuple(ranks)


def parity_model(name: str, num_classes: int = 1000) -> nn.Module:
  """The cnn-jax model `name` configured to compute what torchvision's does (eval and train)."""
  _check_name(name)
  fields = dict(num_classes=num_classes, padding="torch")
  if name.startswith("resnet"):
    fields["batch_norm_variance"] = "unbiased"
  return get_model(name, **fields)


def _flat_shapes(model: nn.Module) -> dict[tuple[str, ...], tuple[int, ...]]:
  x = jax.ShapeDtypeStruct((1, _INIT_SIZE, _INIT_SIZE, 3), jnp.float32)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  return {path: leaf.shape for path, leaf in traverse_util.flatten_dict(shapes).items()}


def _torch_key(name: str, path: tuple[str, ...]) -> str:
  return f"{_torch_module(name, path[1:-1])}.{_LEAVES[(path[0], path[-1])]}"


def _to_jax_layout(value: np.ndarray, path: tuple[str, ...]) -> np.ndarray:
  if path[-1] != "kernel":
    return value
  if value.ndim == 4:
    return value.transpose(2, 3, 1, 0)
  if path[-2] == "Fc6":  # [F, C * 6 * 6] in (C, H, W) order -> [(H, W, C), F]
    features = value.shape[0]
    value = value.reshape(features, -1, *_ALEXNET_POOL).transpose(2, 3, 1, 0)
    return value.reshape(-1, features)
  return value.T


def _to_torch_layout(value: np.ndarray, path: tuple[str, ...]) -> np.ndarray:
  if path[-1] != "kernel":
    return value
  if value.ndim == 4:
    return value.transpose(3, 2, 0, 1)
  if path[-2] == "Fc6":  # [(H, W, C), F] -> [F, C * 6 * 6] in (C, H, W) order
    features = value.shape[-1]
    value = value.reshape(*_ALEXNET_POOL, -1, features).transpose(3, 2, 0, 1)
    return value.reshape(features, -1)
  return value.T


def _as_numpy(value: Any) -> np.ndarray:
  """A copy of a torch tensor (detached, on CPU) or of any array as numpy, without importing
  torch: a copy, since a state_dict's tensors share memory with the module that keeps training."""
  if hasattr(value, "detach"):
    value = value.detach().cpu().numpy()
  return np.array(value, copy=True)


def _head_key(name: str) -> str:
  return "classifier.6.weight" if name == "alexnet_torchvision" else "fc.weight"


def from_torchvision(name: str, state_dict: Mapping[str, Any]) -> tuple[nn.Module, dict]:
  """A torchvision `state_dict` as a cnn-jax model and its variables, computing the same logits.

  Args:
    name: one of `TORCHVISION_NAMES` ('resnet18' ... 'resnet152', 'alexnet_torchvision').
    state_dict: torchvision's key names to torch tensors or numpy arrays (`model.state_dict()`);
      the class count is read from the last layer's weight.

  Returns:
    `(model, variables)`: `parity_model(name, num_classes)` and `{'params': ..., 'batch_stats':
    ...}` (no 'batch_stats' for AlexNet), float32 jax arrays, for `model.apply(variables, x,
    train=False)` with `x: [N, H, W, 3]` (torch's `[N, 3, H, W]` transposed by (0, 2, 3, 1)).

  Raises:
    ValueError: a name outside `TORCHVISION_NAMES`, or a state_dict with missing, unexpected or
      misshaped keys (all of them named, with the expected and given shapes).
  """
  _check_name(name)
  head = _head_key(name)
  if head not in state_dict:
    raise ValueError(f"state_dict for {name!r} has no key {head!r} (the output layer's weight); "
                     f"given keys start with {sorted(state_dict)[:5]}")
  model = parity_model(name, num_classes=int(_as_numpy(state_dict[head]).shape[0]))
  shapes = _flat_shapes(model)
  keys = {_torch_key(name, path): path for path in shapes}
  given = {key for key in state_dict if not key.endswith(".num_batches_tracked")}
  missing, unexpected = sorted(set(keys) - given), sorted(given - set(keys))
  flat, misshaped = {}, []
  for key in sorted(set(keys) & given):
    path = keys[key]
    value = _to_jax_layout(_as_numpy(state_dict[key]), path)
    if value.shape != shapes[path]:
      misshaped.append(f"{key}: expected {_to_torch_layout(np.empty(shapes[path]), path).shape}"
                       f", got {_as_numpy(state_dict[key]).shape}")
    flat[path] = jnp.asarray(value, jnp.float32)
  problems = ([f"missing keys {missing}"] if missing else []) + (
      [f"unexpected keys {unexpected}"] if unexpected else []) + (
      [f"misshaped keys [{'; '.join(misshaped)}]"] if misshaped else [])
  if problems:
    raise ValueError(f"state_dict does not fit torchvision's {name!r}: " + "; ".join(problems))
  return model, traverse_util.unflatten_dict(flat)


def to_torchvision(name: str, variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Variables of `name` (from `from_torchvision` or `get_model(name).init`) as a torchvision
  `state_dict` of numpy arrays, in torchvision's order; `torch.from_numpy` each value for
  `load_state_dict(strict=True)`. Batch norms get `num_batches_tracked = 0`.

  `from_torchvision(name, to_torchvision(name, variables))[1]` equals `variables` exactly.
  """
  _check_name(name)
  state_dict = {}
  for path, value in traverse_util.flatten_dict(dict(variables)).items():
    if path[0] not in ("params", "batch_stats"):
      raise ValueError(f"variables hold collection {path[0]!r}; expected 'params' and "
                       f"'batch_stats' only")
    # Writable C-order copies, as torch.from_numpy wants them.
    state_dict[_torch_key(name, path)] = np.array(_to_torch_layout(np.asarray(value), path),
                                                  order="C", copy=True)
    if path[0] == "batch_stats" and path[-1] == "mean":
      module = _torch_module(name, path[1:-1])
      state_dict[f"{module}.num_batches_tracked"] = np.array(0, np.int64)
  return {key: state_dict[key] for key in sorted(state_dict, key=_torchvision_order)}
