# The two README commands: `make run` (install + the default experiment, offline) and
# `make test` (install + the default test suite). Both need only Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
WORKDIR ?= runs/default

# launch.py, the sweep, visualize.py and the benchmarks re-execute themselves with glibc's malloc
# tunables (cnn_jax.runtime, docs/speed.md); pytest cannot, so the test targets set them.
TUNED := GLIBC_TUNABLES=$$($(BIN)/python -c 'from cnn_jax.runtime import MALLOC_TUNABLES as m; print(m)')
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install run test test-slow test-all sweep sweep-2h sweep-smoke report viz bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: install
	$(BIN)/python launch.py --config=experiments/configs/default.py --workdir=$(WORKDIR)

test: install
	$(TUNED) $(BIN)/python -m pytest -n 2 -q

test-slow: install
	$(TUNED) $(BIN)/python -m pytest -n 2 -q -m slow

test-all: install
	$(TUNED) $(BIN)/python -m pytest -n 2 -q -m 'slow or not slow'

# The full sweep: runs in runs/sweep (resumable); the report, its figures and the per-run
# results it was made from (small JSON, committed) in experiments/results.
sweep: install
	$(BIN)/python -m experiments.sweep --workdir=runs/sweep --report_dir=experiments/results --processes=2

# The full sweep's headline contrasts in at most 2 hours on 2 cores (config 'two_hours'): each
# cell trained once, at the length the committed report reached its plateau at; the report in
# runs/sweep-2h/report.
sweep-2h: install
	$(BIN)/python -m experiments.sweep --workdir=runs/sweep-2h --config=experiments/configs/exp_sweep.py:two_hours --processes=2

# Rewrites experiments/results/README.md and its figures from the committed per-run results.
report: install
	$(BIN)/python -m experiments.sweep --report_only --report_dir=experiments/results

sweep-smoke: install
	$(BIN)/python -m experiments.sweep --workdir=runs/sweep-smoke --config=experiments/configs/exp_sweep.py:smoke --processes=2

viz: install
	$(BIN)/python experiments/visualize.py --workdir=$(WORKDIR)

bench: install
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.input_pipeline
