"""cnn_jax.xla_cpu: which XLA:CPU flags cnn-jax sets, when, and that XLA obeys them."""

import os
import subprocess
import sys

import pytest

from cnn_jax import xla_cpu

FLAG = f"{xla_cpu.YNN_FUSION_FLAG}=dot,reduce"


@pytest.mark.parametrize("before, after", [
    ("", FLAG),
    ("--xla_force_host_platform_device_count=4",
     f"--xla_force_host_platform_device_count=4 {FLAG}"),
    (f"{xla_cpu.YNN_FUSION_FLAG}=dot,eltwise", f"{xla_cpu.YNN_FUSION_FLAG}=dot,eltwise"),
])
def test_the_flag_is_appended_unless_the_user_set_it(before, after):
  assert xla_cpu.with_cnn_jax_flags(before, (0, 10, 2)) == after


@pytest.mark.parametrize("version", [(0, 10, 1), (0, 11, 0), (1, 0), (0, 9, 9)])
def test_untested_jaxlib_versions_are_left_alone(version):
  assert xla_cpu.with_cnn_jax_flags("--xla_cpu_enable_fast_math=false", version) == (
      "--xla_cpu_enable_fast_math=false")


def test_a_later_tested_patch_release_gets_the_flag():
  assert xla_cpu.with_cnn_jax_flags("", (0, 10, 3)) == FLAG


def test_configure_changes_the_environment_once():
  environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  assert xla_cpu.configure(environ) is True
  assert environ["XLA_FLAGS"].endswith(FLAG)
  assert xla_cpu.configure(environ) is False
  assert environ["XLA_FLAGS"].count(xla_cpu.YNN_FUSION_FLAG) == 1


def test_importing_cnn_jax_gives_convolutions_to_xla_and_reductions_to_ynnpack():
  # In a fresh process: importing the package must be enough, and XLA must read the flag.
  program = """
import cnn_jax, jax, jax.numpy as jnp
from cnn_jax import ops
x, kernel = jnp.ones((8, 16, 16, 64)), jnp.ones((3, 3, 64, 64))
conv = jax.jit(lambda x, k: ops.correlate(x, k, lowering='xla')).lower(x, kernel).compile()
mean = jax.jit(lambda x: x.mean((0, 1, 2))).lower(x).compile()
print('ynn_fusion' in conv.as_text(), 'ynn_fusion' in mean.as_text())
"""
  environment = {name: value for name, value in os.environ.items() if name != "XLA_FLAGS"}
  result = subprocess.run([sys.executable, "-c", program], env=environment, capture_output=True,
                          text=True, check=True)
  assert result.stdout.split() == ["False", "True"]
