"""Test setup: 4 virtual CPU devices, so that data-parallel code is exercised on one CPU, the
runtime set-up of the entry points (XLA:CPU flags, TensorFlow off accelerators), and LLVM at -O0.

The suite's programs are small and compile-bound: XLA's backend at optimization level 0
compiles them faster than at its default (tests/models/test_p4cnn.py in 61-63 s instead of
137-152 s, the same loaded 2-core machine). The tests compare values within float32
tolerances or bitwise along one compilation path, never speed, and the documentation blocks
(tests/test_docs.py) still run at the default level. A level set in `XLA_FLAGS` wins.

XLA reads its flags once, when JAX creates its first backend, so this runs before any test.
pytest is not re-executed for the allocator tunables: `make test` exports them.
"""
import os

import chex
import jax
import pytest
from hypothesis import settings

from cnn_jax import runtime

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = " ".join(
      [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]).strip()
chex.set_n_cpu_devices(4)
runtime.setup(malloc_tunables=False)

# Each new shape compiles once under jit; examples are few but meaningful.
settings.register_profile("cnn_jax", max_examples=25, deadline=None, print_blob=True)
settings.load_profile("cnn_jax")


@pytest.fixture
def devices():
  """`devices(count)`: `count` devices of one platform, the default backend's when it has that
  many, else the CPU's (4 virtual ones, above), so multi-device tests also run beside one GPU."""

  def take(count: int) -> list:
    for candidates in (jax.local_devices(), jax.local_devices(backend="cpu")):
      if len(candidates) >= count:
        return candidates[:count]
    pytest.skip(f"needs {count} devices of one platform")

  return take
