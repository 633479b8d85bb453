"""Per-layer activations of a Flax model, in forward order, from its 'intermediates' collection.

Every model of `cnn_jax.models` sows its layer outputs with `self.sow('intermediates', name, y)`.
`jax.tree_util` flattening would sort the dict keys (so 'layer10' before 'layer2'); the metrics
need the order in which the layers ran, which is the dicts' insertion order, kept here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import flax.linen as nn
import jax

FeaturesFn = Callable[[jax.Array], list[tuple[str, jax.Array]]]


def intermediates_in_order(tree: Mapping) -> list[tuple[str, jax.Array]]:
  """`[(path, activation), ...]` in sow (forward) order from an 'intermediates' collection.

  A sown value is a tuple of the values sown under one name (one per call); a name sown more than
  once gets `#i` suffixes.
  """
  layers = []

  def visit(prefix: str, node):
    if isinstance(node, Mapping):
      for name, child in node.items():
        visit(f"{prefix}/{name}" if prefix else str(name), child)
    elif isinstance(node, (tuple, list)):
      for index, value in enumerate(node):
        layers.append((prefix if len(node) == 1 else f"{prefix}#{index}", value))
    else:
      layers.append((prefix, node))

  visit("", tree)
  return layers


def model_features_fn(model: nn.Module, variables: Mapping) -> FeaturesFn:
  """`images -> [(layer, activation), ...]` for a model that sows into 'intermediates'.

  Runs `model.apply(variables, images, train=False, mutable=['intermediates'])` (batch
  statistics from `variables`, no dropout), jitted. The logits end the list, as 'logits',
  whether or not the model sows them itself.
  """

  names = []  # the layer names, recorded while tracing: jit returns arrays only

  @jax.jit
  def apply_with_intermediates(images):
    logits, state = model.apply(variables, images, train=False, mutable=["intermediates"])
    # Ordered inside the trace: jit's outputs would come back with their dict keys sorted.
    layers = intermediates_in_order(state.get("intermediates", {}))
    names[:] = [name for name, _ in layers]
    return logits, [activation for _, activation in layers]

  def features_fn(images: jax.Array) -> list[tuple[str, jax.Array]]:
    logits, activations = apply_with_intermediates(images)
    layers = list(zip(names, activations))
    if not names or names[-1] != "logits":
      layers.append(("logits", logits))
    return layers

  return features_fn
