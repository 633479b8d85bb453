"""The model registry: every model of the package by name."""

import dataclasses
import functools
import types

import flax.linen as nn

from cnn_jax.models.alexnet import AlexNet, AlexNetTorchvision
from cnn_jax.models.baselines import CNN, MLP
from cnn_jax.models.p4cnn import P4CNN
from cnn_jax.models.resnet import (Plain18, Plain20, Plain32, Plain34, Plain44, Plain56,
                                   Plain110, ResNet18, ResNet20, ResNet32, ResNet34, ResNet44,
                                   ResNet50, ResNet56, ResNet101, ResNet110, ResNet152)

_CONSTRUCTORS = types.MappingProxyType({
    "mlp": MLP,
    "cnn": CNN,
    "p4cnn": P4CNN,
    "alexnet": AlexNet,
    "alexnet_torchvision": AlexNetTorchvision,
    "resnet18": ResNet18,
    "resnet34": ResNet34,
    "resnet50": ResNet50,
    "resnet101": ResNet101,
    "resnet152": ResNet152,
    "resnet20": ResNet20,
    "resnet32": ResNet32,
    "resnet44": ResNet44,
    "resnet56": ResNet56,
    "resnet110": ResNet110,
    "plain18": Plain18,
    "plain34": Plain34,
    "plain20": Plain20,
    "plain32": Plain32,
    "plain44": Plain44,
    "plain56": Plain56,
    "plain110": Plain110,
})

MODEL_NAMES = tuple(sorted(_CONSTRUCTORS))


def get_model(name: str, **overrides) -> nn.Module:
  """The model called `name`, with fields replaced by `overrides`.

  Example: `get_model('resnet18', stem='cifar', num_classes=10, blur=True)`.

  Args:
    name: one of `MODEL_NAMES`.
    **overrides: module fields, e.g. num_classes, dtype, padding, blur, axis_name, act.

  Returns:
    An unbound Linen module.
  """
  fields = set(model_fields(name))
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f"model {name!r} has no field(s) {unknown}; its fields: {sorted(fields)}")
  return _CONSTRUCTORS[name](**overrides)


def _module_class(name: str) -> tuple[type, dict]:
  """The Linen class behind `name` and the fields its registry entry fixes (partial keywords)."""
  if name not in _CONSTRUCTORS:
    raise ValueError(f"unknown model name {name!r}; valid names: {', '.join(MODEL_NAMES)}")
  constructor = _CONSTRUCTORS[name]
  if isinstance(constructor, functools.partial):
    return constructor.func, dict(constructor.keywords)
  return constructor, {}


def model_fields(name: str) -> dict:
  """Every field of model `name` (Linen's `parent` and `name` aside) with the value it gets by
  default: the class default, or the one its registry entry fixes (`resnet20`'s `stage_sizes`).

  Fields without a default anywhere map to `dataclasses.MISSING`.
  """
  module_class, fixed = _module_class(name)
  return {field.name: fixed.get(field.name, field.default)
          for field in dataclasses.fields(module_class) if field.name not in ("parent", "name")}
