"""cnn-jax: convolutional neural networks as pure, tested JAX functions and Flax models."""
