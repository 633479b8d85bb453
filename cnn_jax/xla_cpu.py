"""The XLA:CPU settings cnn-jax runs with, set through `XLA_FLAGS` when `cnn_jax` is imported.

jaxlib 0.10 hands CPU convolutions, matrix products, reductions and elementwise fusions to
YNNPACK (`--xla_cpu_experimental_ynn_fusion_type`). On the project's 2-core machine its
convolutions are 2-4x slower than XLA's own (Eigen) ones: a 3x3 64->64 correlation on 32x32,
batch 128, took 68 / 68 / 255 ms (forward / input gradient / kernel gradient) against 36 / 38 /
67 ms, and it pulls a convolution into any elementwise fusion that consumes it. Its matrix
products (285 against 195 GFLOP/s for `[131072, 576] @ [576, 64]`) and reductions (batch-norm
statistics of `[128, 32, 32, 64]`: 1 ms against 28 ms through XLA's reduce-window rewrite) are the
faster ones. So cnn-jax keeps YNNPACK for 'dot' and 'reduce' only (`YNN_FUSION_TYPES`).

XLA reads `XLA_FLAGS` once, when JAX creates its first backend: importing `cnn_jax` before the
first JAX computation is enough (after it, the flag has no effect). A value the user gave the
flag wins (e.g. `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce` to compare),
and jaxlib versions outside `TESTED_JAXLIB` are left alone: XLA aborts the process on a flag it
does not know. GPU and TPU compilers ignore the flag.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
# NaN caveat of 'reduce': YNNPACK's fused max/sum reductions (and reduce_window max) of large
# arrays skip NaN (an all-NaN [4, 28, 28, 32] max gives -inf, sum(relu(NaN)) gives 0); with 'dot'
# only, or for small arrays it does not take, NaN propagates. So relu + max-pool can turn NaN
# inputs into finite logits under jit: do not rely on NaN reaching the output.
YNN_FUSION_TYPES = ("dot", "reduce")
# [lowest, first untested) jaxlib versions known to have the flag and these fusion types.
TESTED_JAXLIB = ((0, 10, 2), (0, 11))


def with_cnn_jax_flags(xla_flags: str, jaxlib_version: tuple[int, ...]) -> str:
  """`xla_flags` plus `YNN_FUSION_FLAG=<YNN_FUSION_TYPES>`, unless already there or untested.

  Args:
    xla_flags: the current value of `XLA_FLAGS` ('' when unset).
    jaxlib_version: `jaxlib.version.__version_info__`, e.g. `(0, 10, 2)`.

  Returns:
    The value `XLA_FLAGS` should have.
  """
  lowest, untested = TESTED_JAXLIB
  if YNN_FUSION_FLAG in xla_flags or not lowest <= jaxlib_version < untested:
    return xla_flags
  return f"{xla_flags} {YNN_FUSION_FLAG}={','.join(YNN_FUSION_TYPES)}".strip()


def configure(environ: MutableMapping[str, str] = os.environ) -> bool:
  """Sets `environ['XLA_FLAGS']` as `with_cnn_jax_flags` says; returns whether it changed."""
  import jaxlib.version
  before = environ.get("XLA_FLAGS", "")
  after = with_cnn_jax_flags(before, jaxlib.version.__version_info__)
  if after != before:
    environ["XLA_FLAGS"] = after
  return after != before
