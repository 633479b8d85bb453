"""Visualizing ConvNets: deconvnet / guided backprop / saliency projections, top-k patches in the
receptive field, filter grids and activation maps, and the colourfulness of AlexNet's towers.

`projection` (one VJP, three ReLU backward rules) and the traced receptive field
(`cnn_jax.models.inspect.traced_receptive_field`) are the mechanisms; `top_activations`, `filters`
and `feature_maps` build the figures as pixel arrays; `grids` tiles them and writes PNGs;
`report.write_visualizations` writes them all with an index page, which `experiments/visualize.py`
runs on a training workdir.
"""

from cnn_jax.viz.feature_maps import activation_grid
from cnn_jax.viz.filters import (colourfulness, filter_grid, filter_tiles, tower_colourfulness,
                                 tower_filter_grid)
from cnn_jax.viz.grids import image_grid, rescale_to_unit, save_png, signed_to_unit
from cnn_jax.viz.projection import (METHODS, RELU_BACKWARD_RULES, intermediates, project,
                                    relu_with_backward_rule, strongest_positions)
from cnn_jax.models.inspect import field_bounds, traced_receptive_field
from cnn_jax.viz.top_activations import (DeconvnetFigure, TopActivations, deconvnet_figure,
                                         top_activations)

__all__ = ["METHODS", "RELU_BACKWARD_RULES", "DeconvnetFigure", "TopActivations",
           "activation_grid", "colourfulness", "deconvnet_figure", "field_bounds", "filter_grid",
           "filter_tiles", "image_grid", "intermediates", "project", "relu_with_backward_rule",
           "rescale_to_unit", "save_png", "signed_to_unit", "strongest_positions",
           "top_activations", "tower_colourfulness", "tower_filter_grid",
           "traced_receptive_field"]
