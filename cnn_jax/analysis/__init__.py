"""Measurements of what a trained (or random) network does under translation and rotation.

Every metric takes a classifier `apply_fn(images) -> logits` or, per layer, a
`features_fn(images) -> [(name, activation), ...]` (`model_features_fn` builds one from a Flax
model's 'intermediates'), with images `[N, H, W, C]` on the [0, 1] scale (black = 0) so that the
pixels a shift or warp brings in are background; normalize inside `apply_fn`. One file per metric:

  shift_consistency            Zhang 2019: top-1 agreement under two random shifts.
  shift_stability              Azulay & Weiss 2019: P(top-1 change), MAC under 1-pixel shifts.
  transformation_accuracy      accuracy vs translation / rotation angle.
  equivariance_error           per-layer ||f_l(Tx) - T' f_l(x)|| / ||f_l(x)||, circular shifts.
  lie_derivative               Gruver et al. 2022: d/dt f(T_t x) by jvp, per layer.
  lie_attribution              Gruver et al.'s split of L f over the layers that introduce it.
  self_similarity              nearest non-overlapping patch distance within one image.
"""

from cnn_jax.analysis.equivariance_error import LayerEquivariance, layer_equivariance_errors
from cnn_jax.analysis.integer_shifts import SHIFT_MODES, shift_images
from cnn_jax.analysis.intermediates import intermediates_in_order, model_features_fn
from cnn_jax.analysis.lie_attribution import LayerContribution, LieAttribution, lie_attribution
from cnn_jax.analysis.lie_derivative import (LayerLieDerivative, layer_lie_derivatives,
                                             lie_derivative, rotation, translation, warp_images)
from cnn_jax.analysis.predictions import logits_in_batches, top1
from cnn_jax.analysis.self_similarity import self_similarity_ratio
from cnn_jax.analysis.shift_consistency import shift_consistency
from cnn_jax.analysis.shift_stability import prediction_change_under_shift
from cnn_jax.analysis.transformation_accuracy import (accuracy_vs_transformation,
                                                      accuracy_vs_translation)

__all__ = [
    "LayerContribution", "LayerEquivariance", "LayerLieDerivative", "LieAttribution",
    "SHIFT_MODES", "accuracy_vs_transformation", "accuracy_vs_translation",
    "intermediates_in_order", "layer_equivariance_errors", "layer_lie_derivatives",
    "lie_attribution", "lie_derivative", "logits_in_batches", "model_features_fn",
    "prediction_change_under_shift", "rotation", "self_similarity_ratio", "shift_consistency",
    "shift_images", "top1", "translation", "warp_images",
]
