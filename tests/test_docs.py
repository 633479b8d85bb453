"""Every ```python block of README.md and docs/*.md runs, as an installed user would run it.

Each block runs alone in a fresh interpreter whose working directory is a temporary directory
outside the repository, with only the packages that `pyproject.toml` installs importable (no
repository root on the path). A block that cannot run in a test (it needs a trained workdir or
minutes of compute) starts with the line `# docs-test: skip <reason>`, and one that takes more
than a few seconds (a training) with `# docs-test: slow <reason>`, which runs it in the slow suite
only (`make test-slow`); use both sparingly. A block that fails only because TensorFlow or TFDS is
not installed (an accelerator image with JAX alone) is skipped there.
"""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP_MARKER = "# docs-test: skip"
SLOW_MARKER = "# docs-test: slow"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
MISSING_MODULE = re.compile(r"ModuleNotFoundError: No module named '([\w.]+)'\s*$")
OPTIONAL_MODULES = ("tensorflow", "tensorflow_datasets")  # the input pipeline's, not the models'


def python_blocks() -> list:
  """One pytest param per block: (source), with id 'file:line'."""
  blocks = []
  for document in DOCUMENTS:
    text = document.read_text()
    for match in BLOCK.finditer(text):
      line = text.count("\n", 0, match.start()) + 1
      source = match.group(1)
      marks = [pytest.mark.slow] if source.startswith(SLOW_MARKER) else []
      blocks.append(pytest.param(source, marks=marks, id=f"{document.relative_to(ROOT)}:{line}"))
  return blocks


def installed_packages_path(directory: pathlib.Path) -> pathlib.Path:
  """A directory holding links to the top-level packages pyproject installs, and nothing else."""
  with open(ROOT / "pyproject.toml", "rb") as file:
    patterns = tomllib.load(file)["tool"]["setuptools"]["packages"]["find"]["include"]
  directory.mkdir()
  for name in {pattern.rstrip("*").split(".")[0] for pattern in patterns}:
    (directory / name).symlink_to(ROOT / name, target_is_directory=True)
  return directory


def test_the_documents_have_python_blocks():
  assert len(python_blocks()) >= 8


@pytest.mark.parametrize("source", python_blocks())
def test_python_block_runs_outside_the_repository(source, tmp_path):
  first_line = source.splitlines()[0]
  for marker in (SKIP_MARKER, SLOW_MARKER):
    if first_line.startswith(marker):
      assert first_line[len(marker):].strip(), f"a marked block says why: {first_line!r}"
  if first_line.startswith(SKIP_MARKER):
    pytest.skip(first_line[len(SKIP_MARKER):].strip())
  packages = installed_packages_path(tmp_path / "site")
  workdir = tmp_path / "cwd"
  workdir.mkdir()
  # A user's environment: no virtual devices from the conftest, the repository not on the path.
  environment = {name: value for name, value in os.environ.items()
                 if name not in ("XLA_FLAGS", "PYTHONPATH")}
  environment["PYTHONPATH"] = str(packages)
  result = subprocess.run([sys.executable, "-c", source], cwd=workdir, env=environment,
                          capture_output=True, text=True, timeout=300)
  missing = MISSING_MODULE.search(result.stderr)
  if (result.returncode != 0 and missing and missing.group(1) in OPTIONAL_MODULES
      and importlib.util.find_spec(missing.group(1)) is None):
    pytest.skip(f"needs {missing.group(1)}, not installed here")
  assert result.returncode == 0, result.stderr[-3000:]
