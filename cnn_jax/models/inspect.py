"""Looking inside a model: parameter counts per layer, FLOPs of a forward pass, receptive field.

All three work without allocating the model's parameters where they can: shapes come from
`jax.eval_shape` on `init`, FLOPs from XLA's cost analysis of the compiled (never run) forward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_jax.ops.arithmetic import ReceptiveField, receptive_field


def param_shapes(model: nn.Module, input_shape: Sequence[int]):
  """The 'params' pytree of `model.init` as `jax.ShapeDtypeStruct`s (nothing allocated).

  Args:
    model: a model taking `(x, train)`.
    input_shape: `[N, H, W, C]` of the example input.
  """
  variables = jax.eval_shape(
      lambda key: model.init(key, jnp.zeros(tuple(input_shape), jnp.float32), train=False),
      jax.random.key(0))
  return variables["params"]


def count_params(params) -> int:
  """Total number of scalars in a pytree of arrays or shape structs."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def param_table(params) -> str:
  """A Markdown table of parameters per layer (the module owning each leaf), in tree order.

  Rows `| layer | shapes | params |`, e.g. `| Block1_1/Conv1 | kernel [3, 3, 64, 64] | 36,864 |`,
  then a total row.
  """
  rows: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    keys = [str(getattr(entry, "key", entry)) for entry in path]
    rows.setdefault("/".join(keys[:-1]) or "(top)", []).append((keys[-1], tuple(leaf.shape)))
  lines = ["| layer | shapes | params |", "|---|---|---|"]
  for layer, leaves in rows.items():
    shapes = ", ".join(f"{name} {list(shape)}" for name, shape in leaves)
    lines.append(f"| {layer} | {shapes} | {sum(math.prod(s) for _, s in leaves):,} |")
  lines.append(f"| **total** | | **{count_params(params):,}** |")
  return "\n".join(lines)


def forward_flops(model: nn.Module, input_shape: Sequence[int], *, train: bool = False) -> float:
  """FLOPs of one forward pass as counted by XLA's cost analysis of the compiled function.

  XLA counts a multiply-add as 2 FLOPs, so multiply-adds (the unit of He et al.'s Table 1)
  are about half of this. Parameters are abstract: the forward is compiled, never run.

  Args:
    model: a model taking `(x, train)`.
    input_shape: `[N, H, W, C]`.
    train: count the training-mode forward (batch statistics, dropout) instead of inference.

  Returns:
    The FLOP count for the whole batch.
  """
  input_shape = tuple(input_shape)
  variables = jax.eval_shape(
      lambda key: model.init(key, jnp.zeros(input_shape, jnp.float32), train=False),
      jax.random.key(0))

  def forward(variables, x):
    return model.apply(variables, x, train=train, rngs={"dropout": jax.random.key(0)},
                       mutable=["batch_stats"] if train else False)

  compiled = jax.jit(forward).lower(variables, jax.ShapeDtypeStruct(input_shape,
                                                                    jnp.float32)).compile()
  analysis = compiled.cost_analysis()
  # Older jaxlibs return one dict per device program.
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return float(analysis["flops"])


def model_receptive_field(model: nn.Module) -> ReceptiveField:
  """The receptive field (per spatial axis) of the last spatial layer of `model`.

  Computed with `ops.arithmetic.receptive_field` from `model.geometry()`, the conv and pooling
  layers along the model's longest path (CNN, AlexNet, AlexNetTorchvision, ResNet).
  """
  if not hasattr(model, "geometry"):
    raise ValueError(f"{type(model).__name__} has no spatial layers (no geometry() method)")
  return receptive_field(model.geometry())
