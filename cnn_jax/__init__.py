"""cnn-jax: convolutional neural networks as pure, tested JAX functions and Flax models.

Importing it changes no global state; entry points call `cnn_jax.runtime.setup()` first.
"""
