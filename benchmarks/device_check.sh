#!/usr/bin/env bash
# The checks to run on a lent GPU machine (an image with JAX, flax, optax, orbax, torch and
# pytest, but no TensorFlow, TFDS or network): the test suite on the GPU, then the
# models benchmark against torch on CUDA in bfloat16 and float32 (BENCH_SECONDS each, 0: none),
# then a sample of the 'gpu' sweep config (SWEEP_SECONDS, 0: none): its first runs, in the order
# SWEEP_EXPERIMENTS gives, with each run's wall time. Results go to $OUT (or
# benchmarks/results). Wheels of missing pure-Python packages (ml-collections, mlxtend) in .whl/.
#   OUT=/tmp/out bash benchmarks/device_check.sh
set -uo pipefail
OUT=${OUT:-benchmarks/results}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_PREALLOCATE=false
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
nvidia-smi -L
python3 -c "import jax, flax, optax, torch; print('jax', jax.__version__, 'flax', flax.__version__,
'optax', optax.__version__, 'torch', torch.__version__, jax.devices())"
# float32 tests compare lowerings to 1e-4: full float32 products, not TF32.
# The whole default suite except tests/data (the TFDS builders); tests that need TensorFlow or
# TFDS skip, naming it, and a module that imports them anyway is reported as a collection error
# while the rest still run.
JAX_DEFAULT_MATMUL_PRECISION=highest timeout "${TEST_TIMEOUT:-240}" python3 -m pytest -q -n 12 \
  -p no:cacheprovider --continue-on-collection-errors --ignore=tests/data \
  ${TEST_PATHS:-tests} 2>&1 | tee "$OUT/device_tests.log" | tail -40
if [ "${BENCH_SECONDS:-150}" -gt 0 ]; then
  for dtype in bfloat16 float32; do
    timeout "${BENCH_SECONDS:-150}" python3 -m benchmarks.run --mode full --sections models \
      --models "${BENCH_MODELS:-cnn,resnet20,resnet18}" --lowerings xla --dtype "$dtype" \
      --no-malloc-tunables --output "$OUT" 2>&1 | grep -v "^I0000\|^WARNING: All log" | tail -12
  done
fi
if [ "${SWEEP_SECONDS:-0}" -gt 0 ]; then
  # The command a GPU user runs (CIFAR-10 is left out where TFDS is not installed), cut off.
  timeout "$SWEEP_SECONDS" python3 -m experiments.sweep \
    --config=experiments/configs/exp_sweep.py:gpu --workdir=/tmp/sweep_gpu \
    --config.experiments="${SWEEP_EXPERIMENTS:-('rotation', 'depth', 'augmentation')}" \
    --processes="${SWEEP_PROCESSES:-4}" > "$OUT/sweep_gpu.log" 2>&1
  grep -E "done in|Error|error" "$OUT/sweep_gpu.log" | tail -40
  tar czf "$OUT/sweep_gpu_runs.tgz" -C /tmp/sweep_gpu runs
fi
