"""Pure math on arrays: convolution, pooling and their arithmetic. Imports nothing above it."""

from cnn_jax.ops.arithmetic import (LayerGeometry, ReceptiveField, conv_params,
                                    fully_connected_params, locally_connected_params,
                                    output_size, receptive_field)
from cnn_jax.ops.conv import (PADDING_NAMES, conv_transpose, convolve, convolve1d, convolve2d,
                              correlate, correlate1d, correlate2d, periodic_convolve,
                              resolve_padding)
from cnn_jax.ops.lowering import DEFAULT_LOWERING, LOWERINGS
from cnn_jax.ops.pooling import (BLUR_PADDING_NAMES, avg_pool, binomial_filter, blur_pool,
                                 global_avg_pool, max_pool, max_pool_with_switches, max_unpool)

__all__ = [
    "LayerGeometry", "ReceptiveField", "conv_params", "fully_connected_params",
    "locally_connected_params", "output_size", "receptive_field",
    "PADDING_NAMES", "conv_transpose", "convolve", "convolve1d", "convolve2d", "correlate",
    "correlate1d", "correlate2d", "periodic_convolve", "resolve_padding",
    "DEFAULT_LOWERING", "LOWERINGS",
    "BLUR_PADDING_NAMES", "avg_pool", "binomial_filter", "blur_pool", "global_avg_pool",
    "max_pool", "max_pool_with_switches", "max_unpool",
]
