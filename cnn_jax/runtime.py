"""Process set-up for cnn-jax's entry points: `setup()`, called first in their `main`.

Importing cnn-jax changes nothing global; an entry point (`launch.py`, the experiment sweep,
`experiments/visualize.py`, the benchmarks, the tests' conftest) calls `setup()` once, before its
first JAX computation. It does three things:

1. **Allocator tunables.** XLA:CPU maps and unmaps large scratch buffers on every step; with
   `GLIBC_TUNABLES=MALLOC_TUNABLES` glibc keeps them instead (no page faults per step: about 2x
   on small CNNs on CPU, `docs/speed.md`). glibc reads the variable only when a process starts,
   so `setup()` re-executes the interpreter with the same arguments when `GLIBC_TUNABLES` is
   unset (a value the user set is kept).
2. **XLA:CPU flags.** jaxlib 0.10 hands CPU convolutions, matrix products, reductions and
   elementwise fusions to YNNPACK (`--xla_cpu_experimental_ynn_fusion_type`). Its convolutions
   are several times slower than XLA's own (Eigen) ones on the CPUs this project runs on, while
   its matrix products and reductions are the faster ones (batch-norm statistics go through
   XLA's reduce-window rewrite otherwise). So `setup()` appends
   `--xla_cpu_experimental_ynn_fusion_type=dot,reduce` to `XLA_FLAGS`. A value the user gave the
   flag wins, and jaxlib versions outside `TESTED_JAXLIB` are left alone: XLA aborts the process
   on a flag it does not know. GPU and TPU compilers ignore the flag. `benchmarks/results/`
   holds the measurements.
3. **TensorFlow off the accelerators.** TensorFlow only feeds the input pipeline; it must not
   reserve GPU memory that JAX needs.

XLA reads `XLA_FLAGS` once, when JAX creates its first backend; after that the flag would do
nothing, so `setup()` then leaves `XLA_FLAGS` alone and warns (in a notebook: call it in the first
cell). Child processes inherit the environment `setup()` leaves, as they inherit the Makefile's
`GLIBC_TUNABLES`: a child running cnn-jax on the same interpreter thus trains at the same speed.
Start a child on another jaxlib, which may not know the flag, without `XLA_FLAGS`.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
import warnings

# glibc: one malloc arena, no mmap for large blocks, never trim the heap back to the OS.
MALLOC_TUNABLES = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
                   "glibc.malloc.trim_threshold=17179869184")
YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
# NaN caveat of 'reduce': YNNPACK's fused max/sum reductions (and reduce_window max) of large
# arrays skip NaN (an all-NaN [4, 28, 28, 32] max gives -inf, sum(relu(NaN)) gives 0); with 'dot'
# only, or for small arrays it does not take, NaN propagates. The models therefore mark the logits
# of non-finite inputs NaN themselves (`layers.nan_where_input_is_not_finite`).
YNN_FUSION_TYPES = ("dot", "reduce")
# [lowest, first untested) jaxlib versions known to have the flag and these fusion types.
TESTED_JAXLIB = ((0, 10, 2), (0, 11))
# Set in the re-executed process only, so that it never re-executes again; removed on arrival.
_REEXECUTED = "CNN_JAX_REEXECUTED"


def setup(*, malloc_tunables: bool = True) -> None:
  """Prepares this process for cnn-jax: allocator tunables, XLA:CPU flags, TensorFlow off GPUs.

  Call it first in an entry point's `main`, before the first JAX computation. It may replace the
  process (see `reexecute_with_malloc_tunables`), so nothing before it should have side effects.

  Args:
    malloc_tunables: re-execute with `GLIBC_TUNABLES` when it is unset. False in the tests'
      conftest (pytest and its workers are not re-executed) and for A/B benchmarks.
  """
  if malloc_tunables:
    reexecute_with_malloc_tunables()
  configure_xla_cpu()
  keep_tensorflow_off_accelerators()


def reexecute_with_malloc_tunables() -> None:
  """Replaces this process by the same command with `GLIBC_TUNABLES=MALLOC_TUNABLES`, if unset.

  Returns (and does nothing) when `GLIBC_TUNABLES` is set, whatever its value.
  """
  if os.environ.pop(_REEXECUTED, None) or "GLIBC_TUNABLES" in os.environ:
    return
  environment = dict(os.environ, GLIBC_TUNABLES=MALLOC_TUNABLES, **{_REEXECUTED: "1"})
  environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO lines
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment)


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


def configure_xla_cpu() -> bool:
  """Sets `XLA_FLAGS` as `with_cnn_jax_flags` says; returns whether it changed.

  Warns and changes nothing when a JAX backend already exists: XLA has read its flags.
  """
  import jaxlib.version
  from jax._src import xla_bridge
  before = os.environ.get("XLA_FLAGS", "")
  after = with_cnn_jax_flags(before, jaxlib.version.__version_info__)
  if after == before:
    return False
  if xla_bridge.backends_are_initialized():
    warnings.warn(
        f"cnn_jax.runtime.setup() ran after JAX created its backend, so XLA ignores "
        f"{YNN_FUSION_FLAG} and CPU convolutions run slower: call it before the first JAX "
        f"computation (in a notebook, in the first cell)", RuntimeWarning, stacklevel=3)
    return False
  os.environ["XLA_FLAGS"] = after
  return True


def keep_tensorflow_off_accelerators() -> None:
  """Hides every GPU from TensorFlow (tf.data runs on the CPU); warns if TF already uses one.

  Without TensorFlow installed (an accelerator image that has JAX but not TF: the models, ops and
  in-memory training need no tf.data) there is nothing to hide.
  """
  if importlib.util.find_spec("tensorflow") is None:
    return
  import tensorflow as tf
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError as error:  # TensorFlow's devices were initialized before.
    if tf.config.get_visible_devices("GPU"):
      warnings.warn(f"TensorFlow already uses a GPU and may hold memory JAX needs: {error}",
                    RuntimeWarning, stacklevel=3)


def cpu_model() -> str:
  """The CPU's model name and its matrix extensions (AVX-512, AMX: what bfloat16 can use)."""
  try:
    with open("/proc/cpuinfo") as file:
      first_cpu = file.read().split("\n\n")[0].splitlines()
  except OSError:
    return platform.processor() or platform.machine()
  info = {key.strip(): value.strip()
          for key, value in (line.split(":", 1) for line in first_cpu if ":" in line)}
  extensions = [flag for flag in ("avx512f", "avx512_bf16", "amx_bf16")
                if flag in info.get("flags", "").split()]
  return " ".join([info.get("model name", platform.machine())] + extensions)
