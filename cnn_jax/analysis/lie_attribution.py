"""Which layer breaks the invariance: Gruver et al.'s (2022) layerwise split of the Lie derivative.

Cut a network into its recorded layers, `h_k = f_k(h_{k-1})`, `h_0 = x`, `k = 1..m`, and give
every feature space its own action `T^k_t`: the input warp on the image, the same warp by
`t / s_k` pixels on a feature map of cumulative stride `s_k` (rotation unchanged), the identity on
vectors (invariance). With `A_k = d/dt T^k_t |_{t=0}` the generator on space k, each layer's own
Lie derivative is

  L(f_k)(h_{k-1}) = d/dt (T^k_t)^{-1} f_k(T^{k-1}_t h_{k-1}) |_{t=0} = J_k A_{k-1} h_{k-1} - A_k h_k

(zero for an equivariant layer), and the chain rule splits the output's Lie derivative into what
each layer introduced, carried to the output by the layers above it:

  L f(x) = sum_k J_{>k} L(f_k)(h_{k-1})     (the output action being the identity).

Gruver et al. estimate the norms of these terms with random output probes through backward hooks.
Here every term is exact: with `D_k = J_{>k} A_k h_k` (the output's derivative when only feature
space k is warped; `D_0 = L f`),

  J_{>k} L(f_k) = D_{k-1} - D_k,

and `D_k` is one Jacobian-vector product of the network with respect to an additive perturbation of
`h_k` (Flax's `perturb`) in the direction `A_k h_k`. The network is linearized once; each layer
costs one evaluation of the linear map. Requirements: the model records each layer with
`self.perturb(name, h)` and `self.sow('intermediates', name, h)` (`cnn_jax.models` does, through
`layers.record_layer`), the recorded layers cut the network (everything reaching the output
passes through each one: true of sequential nets and of ResNets recorded at block outputs), and
the model's output is the logits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_jax.analysis.intermediates import intermediates_in_order
from cnn_jax.analysis.lie_derivative import Transformation, feature_generator, warp_images


class LayerContribution(NamedTuple):
  """The part `J_{>k} L(f_k)` of the logits' Lie derivative that layer k introduced."""
  name: str
  norm: float  # mean over images of ||J_{>k} L(f_k)(x)|| on the logits
  share: float  # norm / sum of all layers' norms (the shares add up to 1)


class LieAttribution(NamedTuple):
  """The logits' Lie derivative and its split over the layers (`sum_k terms_k = total`)."""
  total: jax.Array  # [N, K]: L f(x)
  terms: list[tuple[str, jax.Array]]  # per layer, forward order: J_{>k} L(f_k)(x), [N, K]

  def contributions(self) -> list[LayerContribution]:
    """Per layer: the mean norm of its term and its share of the sum of the norms."""
    norms = [float(jnp.mean(jnp.linalg.norm(term, axis=-1))) for _, term in self.terms]
    total = sum(norms)
    return [LayerContribution(name, norm, norm / total if total > 0 else 0.0)
            for (name, _), norm in zip(self.terms, norms)]


def _layer_paths(perturbations: Mapping) -> dict[str, tuple[str, ...]]:
  return {"/".join(path): path for path in flax.traverse_util.flatten_dict(perturbations)}


def lie_attribution(model: nn.Module, variables: Mapping, images: jax.Array,
                    transformation: Transformation, *, preprocess=lambda images: images,
                    **apply_kwargs) -> LieAttribution:
  """Splits the Lie derivative of `model`'s logits over its recorded layers (module docstring).

  Args:
    model: a Flax model recording its layers with `perturb` and `sow('intermediates', ...)`;
      `model.apply(variables, preprocess(images), **apply_kwargs)` returns the logits `[N, K]`.
    variables: the model's variables (no 'perturbations' collection).
    images: `[N, H, W, C]` on the [0, 1] scale (zeros enter where the warp moves the image).
    transformation: `lie_derivative.translation(axis)` or `lie_derivative.rotation()`.
    preprocess: the map from [0, 1] images to the model input (e.g. normalization).
    **apply_kwargs: passed to `model.apply`, e.g. `train=False`.

  Returns:
    The total `L f(x)` `[N, K]` (one jvp through the input warp) and one term per recorded layer,
    in forward order, whose sum is the total (up to float rounding); a last term 'head' when the
    last recorded layer is a feature map (the unrecorded layers after it).

  Raises:
    ValueError: if the model records no layer through `perturb`, or records one name twice.
  """
  images = jnp.asarray(images)
  names = []  # the term names, recorded while tracing: jit returns arrays only

  @jax.jit
  def total_and_terms(variables, images):
    model_input = preprocess(images)
    _, state = model.apply(dict(variables), model_input,
                           mutable=["intermediates", "perturbations"], **apply_kwargs)
    layers = intermediates_in_order(state.get("intermediates", {}))
    paths = _layer_paths(state.get("perturbations", {}))
    recorded = [name for name, _ in layers if name in paths]
    repeated = [name for name, _ in layers if "#" in name]
    if not recorded or repeated:
      raise ValueError("model must record each layer once with self.perturb(name, h) and "
                       "self.sow('intermediates', name, h); got perturbed layers "
                       f"{sorted(paths)} and layers recorded more than once {repeated}")
    zero_perturbations = jax.tree.map(jnp.zeros_like, state["perturbations"])

    def logits_of(perturbations):
      return model.apply({**variables, "perturbations": perturbations}, model_input,
                         **apply_kwargs)

    _, output_jvp = jax.linearize(logits_of, zero_perturbations)
    zero = jnp.zeros((), images.dtype)
    _, total = jax.jvp(lambda t: model.apply(
        dict(variables), preprocess(warp_images(images, transformation, t)), **apply_kwargs),
                       (zero,), (jnp.ones_like(zero),))
    activations = dict(layers)
    warped_outputs = [total]  # D_0 = L f, then D_k for every recorded layer
    for name in recorded:
      direction = feature_generator(activations[name], transformation, images.shape[1])
      tangent = flax.traverse_util.flatten_dict(zero_perturbations)
      tangent[paths[name]] = direction
      warped_outputs.append(output_jvp(flax.traverse_util.unflatten_dict(tangent)))
    terms = [before - after for before, after in zip(warped_outputs, warped_outputs[1:])]
    names[:] = recorded
    if activations[recorded[-1]].ndim == 4:
      # Unrecorded layers after the last recorded map: their own term is D_m (output action: id).
      terms.append(warped_outputs[-1])
      names.append("head")
    return total, terms

  total, terms = total_and_terms(dict(variables), images)
  return LieAttribution(total, list(zip(names, terms)))
