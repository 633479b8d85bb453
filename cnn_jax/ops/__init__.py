"""Pure math on arrays: convolution, pooling and their arithmetic. Imports nothing above it."""

from cnn_jax.ops.conv import (PADDING_NAMES, conv_transpose, convolve, convolve1d, convolve2d,
                              correlate, correlate1d, correlate2d, periodic_convolve,
                              resolve_padding)
from cnn_jax.ops.pooling import avg_pool, global_avg_pool, max_pool
