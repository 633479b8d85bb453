"""cnn-jax: convolutional neural networks as pure, tested JAX functions and Flax models."""

from cnn_jax import xla_cpu

# Before the first JAX computation: XLA reads its flags when it creates its first backend.
xla_cpu.configure()
