"""Builds the optional oneDNN convolution extension, `cnn_jax.ops._onednn_conv` (csrc/).

Everything else is in pyproject.toml. The extension is built on Linux x86_64 only, against the
XLA FFI headers of jaxlib and the headers and library of the onednn-*-cpu-gomp wheels (all build
requirements from PyPI). If anything about it fails (no compiler, missing headers, a link error)
the build goes on without it and `cnn_jax.ops.onednn` reports oneDNN unavailable.
`CNN_JAX_BUILD_ONEDNN=0` skips it.
"""

import importlib.metadata
import importlib.util
import os
import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCE = "csrc/onednn_conv.cc"


def _installed_file(distribution: str, name: str) -> str:
  """The absolute path of file `name` (a path suffix) that `distribution` installed."""
  dist = importlib.metadata.distribution(distribution)
  for file in dist.files or ():
    if str(file).replace("\\", "/").endswith(name):
      return str(dist.locate_file(file).resolve())
  raise FileNotFoundError(f"{distribution} installed no {name}")


class OptionalBuildExt(build_ext):
  """Compiles every time (a stale build/ must not hide a failing compile) and never fails."""

  def finalize_options(self):
    super().finalize_options()
    self.force = True

  def build_extension(self, ext):
    try:
      jaxlib = importlib.util.find_spec("jaxlib")
      ext.include_dirs += [os.path.join(jaxlib.submodule_search_locations[0], "include"),
                           os.path.dirname(os.path.dirname(os.path.dirname(_installed_file(
                               "onednn-devel-cpu-gomp", "include/oneapi/dnnl/dnnl.hpp"))))]
      ext.library_dirs += [os.path.dirname(_installed_file("onednn-cpu-gomp", "libdnnl.so"))]
      super().build_extension(ext)
    except Exception as error:  # any failure: install without the extension
      print(f"cnn-jax: not building the oneDNN extension ({type(error).__name__}: {error}); "
            "lowering='onednn' will be unavailable", file=sys.stderr)


def _extensions():
  if os.environ.get("CNN_JAX_BUILD_ONEDNN", "1") == "0":
    return []
  if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
    return []
  return [Extension(
      "cnn_jax.ops._onednn_conv", [SOURCE], language="c++", libraries=["dnnl"],
      extra_compile_args=["-std=c++17", "-O2", "-g0", "-fvisibility=hidden"],
      # <prefix>/lib/python3.X/site-packages/cnn_jax/ops -> <prefix>/lib, where the onednn wheel
      # puts libdnnl.so.3 (cnn_jax.ops.onednn also preloads it from there).
      runtime_library_dirs=["$ORIGIN/../../../.."], optional=True)]


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
