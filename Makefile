# The two README commands: `make run` (install + the default experiment, offline) and
# `make test` (install + the default test suite). Both need only Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
WORKDIR ?= runs/default

# XLA:CPU maps and unmaps large scratch buffers every step; keeping glibc from returning them
# to the OS removes ~200k page faults per step (see shared PERF_NOTES). Must be set before start.
export GLIBC_TUNABLES := glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install run test test-slow test-all sweep sweep-smoke report viz bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: install
	$(BIN)/python launch.py --config=experiments/configs/default.py --workdir=$(WORKDIR)

test: install
	$(BIN)/python -m pytest -n 2 -q

test-slow: install
	$(BIN)/python -m pytest -n 2 -q -m slow

test-all: install
	$(BIN)/python -m pytest -n 2 -q -m 'slow or not slow'

# The full sweep: runs in runs/sweep (resumable); the report, its figures and the per-run
# results it was made from (small JSON, committed) in experiments/results.
sweep: install
	$(BIN)/python -m experiments.sweep --workdir=runs/sweep --report_dir=experiments/results

# Rewrites experiments/results/README.md and its figures from the committed per-run results.
report: install
	$(BIN)/python -m experiments.sweep --report_only --report_dir=experiments/results

sweep-smoke: install
	$(BIN)/python -m experiments.sweep --workdir=runs/sweep-smoke --config=experiments/configs/exp_sweep.py:smoke

viz: install
	$(BIN)/python experiments/visualize.py --workdir=$(WORKDIR)

bench: install
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.input_pipeline
