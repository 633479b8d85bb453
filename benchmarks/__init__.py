"""Speed benchmarks of cnn-jax against PyTorch and the machine peak: `python -m benchmarks.run`."""
