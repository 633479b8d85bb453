"""Developer tools that probe the installed JAX/XLA: `python -m tools.conv_gradient_map`."""
