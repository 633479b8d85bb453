"""The process setup every benchmark states: malloc tunables, threads, versions, matmul peak.

The benchmarks' entry points call `cnn_jax.runtime.setup` first (malloc tunables, XLA:CPU flags);
`describe` records which of them the process runs with.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable

def describe() -> dict:
  """The facts a reader needs to compare two benchmark files."""
  import jax

  from cnn_jax import runtime
  from cnn_jax.ops import onednn
  description = {
      "glibc_tunables": os.environ.get("GLIBC_TUNABLES") == runtime.MALLOC_TUNABLES,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "jax": jax.__version__,
      "devices": len(jax.devices()),
      "cpu_count": os.cpu_count(),
      "processor": runtime.cpu_model(),
      "load_average_1min": os.getloadavg()[0],
      # Whether lowering='onednn' could run (the compiled extension loaded), else why not.
      "onednn_available": onednn.available(),
      "onednn_unavailable_reason": onednn.unavailable_reason(),
  }
  try:
    import torch
    description.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
  except ImportError:
    description.update(torch=None)
  return description


def peak_rss_mb() -> float:
  """The process's peak resident memory so far (Linux reports `ru_maxrss` in KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median_seconds(run: Callable[[], object], repeats: int) -> float:
  """Median wall time of `repeats` calls of `run` (which must block until its result is ready)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_peak_gflops(size: int = 2048, repeats: int = 5, dtype: str = "float32",
                       torch_device: str = "cpu") -> dict:
  """Achieved GFLOP/s of a `size^3` matmul in JAX (and torch) in `dtype`: the practical ceiling."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (size, size), dtype)
  b = jax.random.normal(jax.random.key(1), (size, size), dtype)
  matmul = jax.jit(jnp.matmul)
  matmul(a, b).block_until_ready()
  flops = 2 * size ** 3
  result = {"jax_matmul_gflops": flops / median_seconds(
      lambda: matmul(a, b).block_until_ready(), repeats) / 1e9}
  try:
    import torch
  except ImportError:
    return result
  ta, tb = (torch.randn(size, size, dtype=getattr(torch, dtype), device=torch_device)
            for _ in range(2))
  synchronize = torch.cuda.synchronize if torch_device == "cuda" else lambda: None
  torch.matmul(ta, tb)
  result["torch_matmul_gflops"] = flops / median_seconds(
      lambda: (torch.matmul(ta, tb), synchronize()), repeats) / 1e9
  return result
