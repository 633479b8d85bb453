"""cnn_jax.runtime: what the entry points' set-up changes, and that importing cnn-jax does not."""

import importlib.util
import json
import os
import subprocess
import sys

import jaxlib.version
import pytest

from cnn_jax import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAG = f"{runtime.YNN_FUSION_FLAG}=dot,reduce"
# Variables a library import could be tempted to set.
WATCHED = ("XLA_FLAGS", "MPLBACKEND", "GLIBC_TUNABLES", "CUDA_VISIBLE_DEVICES",
           "TF_CPP_MIN_LOG_LEVEL", "JAX_PLATFORMS")
# setup() adds its XLA:CPU flag only on the jaxlib versions it was measured on; on another jaxlib
# (a GPU image's, say) there is nothing to add nor to warn about, as the version tests below say.
flag_is_added = pytest.mark.skipif(
    runtime.with_cnn_jax_flags("", jaxlib.version.__version_info__) != FLAG,
    reason=f"jaxlib {jaxlib.version.__version__} is outside runtime.TESTED_JAXLIB "
           f"{runtime.TESTED_JAXLIB}: setup() leaves XLA_FLAGS alone")


def run_python(program: str, environment: dict[str, str]) -> subprocess.CompletedProcess:
  """Runs `program` in a fresh interpreter from the repository root."""
  return subprocess.run([sys.executable, "-c", program], env=environment, cwd=ROOT,
                        capture_output=True, text=True, check=True, timeout=300)


def clean_environment(**overrides: str) -> dict[str, str]:
  """This process's environment without the watched variables, plus `overrides`."""
  environment = {name: value for name, value in os.environ.items() if name not in WATCHED}
  return environment | overrides


@pytest.mark.parametrize("before, after", [
    ("", FLAG),
    ("--xla_force_host_platform_device_count=4",
     f"--xla_force_host_platform_device_count=4 {FLAG}"),
    (f"{runtime.YNN_FUSION_FLAG}=dot,eltwise", f"{runtime.YNN_FUSION_FLAG}=dot,eltwise"),
])
def test_the_flag_is_appended_unless_the_user_set_it(before, after):
  assert runtime.with_cnn_jax_flags(before, (0, 10, 2)) == after


@pytest.mark.parametrize("version", [(0, 10, 1), (0, 11, 0), (1, 0), (0, 9, 9)])
def test_untested_jaxlib_versions_are_left_alone(version):
  assert runtime.with_cnn_jax_flags("--xla_cpu_enable_fast_math=false", version) == (
      "--xla_cpu_enable_fast_math=false")


def test_a_later_tested_patch_release_gets_the_flag():
  assert runtime.with_cnn_jax_flags("", (0, 10, 3)) == FLAG


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="needs TensorFlow: checks that importing cnn_jax leaves it alone")
def test_importing_cnn_jax_changes_no_environment_variable_nor_matplotlib_nor_tensorflow():
  program = """
import json, os
import matplotlib, tensorflow as tf
calls = []  # On a machine without GPUs hiding them changes nothing visible: record the calls.
tf.config.set_visible_devices = lambda *args, **kwargs: calls.append(args)
before = (dict(os.environ), matplotlib.get_backend(), tf.config.get_visible_devices())
import cnn_jax, cnn_jax.train, cnn_jax.data, cnn_jax.viz, cnn_jax.analysis, cnn_jax.models
import cnn_jax.ops
after = (dict(os.environ), matplotlib.get_backend(), tf.config.get_visible_devices())
changed = sorted(name for name in set(before[0]) | set(after[0])
                 if before[0].get(name) != after[0].get(name))
print(json.dumps({"changed": changed, "backend": [before[1], after[1]],
                  "tf_devices_unchanged": before[2] == after[2], "tf_calls": len(calls)}))
"""
  # A user's backend that a library switching to 'Agg' would override.
  result = run_python(program, clean_environment(MPLBACKEND="svg"))
  report = json.loads(result.stdout.splitlines()[-1])
  assert report == {"changed": [], "backend": ["svg", "svg"], "tf_devices_unchanged": True,
                    "tf_calls": 0}


@flag_is_added
def test_setup_gives_convolutions_to_xla_and_reductions_to_ynnpack():
  program = """
import os
from cnn_jax import runtime
runtime.setup(malloc_tunables=False)
import jax, jax.numpy as jnp
from cnn_jax import ops
x, kernel = jnp.ones((8, 16, 16, 64)), jnp.ones((3, 3, 64, 64))
conv = jax.jit(lambda x, k: ops.correlate(x, k, lowering='xla')).lower(x, kernel).compile()
mean = jax.jit(lambda x: x.mean((0, 1, 2))).lower(x).compile()
print(os.environ['XLA_FLAGS'], 'ynn_fusion' in conv.as_text(), 'ynn_fusion' in mean.as_text())
"""
  # The flag is XLA:CPU's: compile for the CPU also where the default backend is a GPU.
  output = run_python(program, clean_environment(JAX_PLATFORMS="cpu")).stdout.split()
  assert output == [FLAG, "False", "True"]


@flag_is_added
def test_setup_after_jax_started_warns_and_leaves_xla_flags_alone():
  program = """
import os, warnings
import jax
jax.devices()
from cnn_jax import runtime
with warnings.catch_warnings(record=True) as caught:
  warnings.simplefilter("always")
  runtime.setup(malloc_tunables=False)
print(repr(os.environ.get('XLA_FLAGS')), any('first JAX computation' in str(w.message)
                                              for w in caught))
"""
  assert run_python(program, clean_environment()).stdout.split() == ["None", "True"]


def test_setup_reexecutes_once_with_the_malloc_tunables_and_keeps_the_users():
  program = """
import os, sys
print('start', os.environ.get('GLIBC_TUNABLES'), flush=True)
from cnn_jax import runtime
runtime.reexecute_with_malloc_tunables()
print('after', os.environ.get('GLIBC_TUNABLES'), 'CNN_JAX_REEXECUTED' in os.environ)
"""
  lines = run_python(program, clean_environment()).stdout.splitlines()
  assert lines == ["start None", f"start {runtime.MALLOC_TUNABLES}",
                   f"after {runtime.MALLOC_TUNABLES} False"]
  users = "glibc.malloc.arena_max=2"
  lines = run_python(program, clean_environment(GLIBC_TUNABLES=users)).stdout.splitlines()
  assert lines == [f"start {users}", f"after {users} False"]


def test_keeping_tensorflow_off_accelerators_needs_no_tensorflow(monkeypatch):
  # An accelerator image with JAX but without TensorFlow: nothing to hide, no ImportError.
  monkeypatch.setattr(runtime.importlib.util, "find_spec",
                      lambda name, *args: None if name == "tensorflow" else object())
  monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` would raise
  runtime.keep_tensorflow_off_accelerators()
