"""Two JAX processes on 127.0.0.1 (2 virtual CPU devices each, gloo collectives) train together."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORKER = textwrap.dedent("""
    import hashlib, json, sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    port, process_id, workdir, parallelism = sys.argv[1:5]
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=int(process_id),
                               initialization_timeout=120)
    import numpy as np
    from cnn_jax import data
    from cnn_jax.data import augment
    from cnn_jax.train import loop, optim, parallel, step, train_and_evaluate
    from cnn_jax.train.state import create_train_state
    from experiments.configs import default
    config = default.get_config("smoke")
    config.parallelism = parallelism

    # A few steps by hand: each process hashes the parameters it holds itself.
    info = data.get_dataset_info(config.dataset)
    schedule = optim.build_learning_rate_schedule(config, 100, 6)
    optimizer = optim.build_optimizer(config, schedule)
    model = loop.build_model(config, info.num_classes)
    data_parallel = parallel.build_data_parallel(parallelism, step.make_train_step(
        model, optimizer, schedule, augment.build_augmentation(config.augmentation), info.mean,
        info.std, config.label_smoothing), step.make_eval_step(model, info.mean, info.std))
    state = data_parallel.put_state(jax.device_get(
        create_train_state(model, optimizer, jax.random.key(0), info.image_shape)))
    batches = data.create_split(config.dataset, "train", config.batch_size // 2, train=True)
    for _ in range(3):
      state, _ = data_parallel.train_step(state, data_parallel.put_batch(next(batches)),
                                          jax.random.key(1))
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(data_parallel.to_host(state)):
      digest.update(np.ascontiguousarray(leaf).tobytes())

    # The whole loop, with one shared workdir.
    summary = train_and_evaluate(config, workdir)
    print("RESULT", json.dumps({"digest": digest.hexdigest(), **summary}), flush=True)
""")


def free_port():
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("parallelism", ["pmap", "shard_map"])
def test_two_processes_train_to_identical_parameters(tmp_path, parallelism):
  port = free_port()
  environment = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
                 "PYTHONPATH": ROOT}
  workers = [subprocess.Popen(
      [sys.executable, "-c", WORKER, str(port), str(index), str(tmp_path / "run"), parallelism],
      cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for index in range(2)]
  try:
    outputs = [worker.communicate(timeout=400) for worker in workers]
  finally:
    for worker in workers:
      if worker.poll() is None:
        worker.kill()
        worker.wait()
  for worker, (_, stderr) in zip(workers, outputs):
    assert worker.returncode == 0, stderr[-3000:]
  results = [json.loads(stdout.split("RESULT", 1)[1]) for stdout, _ in outputs]
  assert results[0]["digest"] == results[1]["digest"]
  assert results[0]["num_processes"] == 2 and results[0]["num_devices"] == 4
  assert results[0]["test_accuracy"] == results[1]["test_accuracy"]
  with open(tmp_path / "run" / "metrics.jsonl") as file:
    assert [json.loads(line)["step"] for line in file] == [2, 3, 4, 6]
