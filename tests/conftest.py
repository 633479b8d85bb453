"""Test setup: 4 virtual CPU devices, so that data-parallel code is exercised on one CPU.

XLA reads the flag once, when jax is first imported, so it must be set here, before any test
module imports jax.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hypothesis import settings  # noqa: E402

# Each new shape compiles once under jit; examples are few but meaningful.
settings.register_profile("cnn_jax", max_examples=25, deadline=None, print_blob=True)
settings.load_profile("cnn_jax")
