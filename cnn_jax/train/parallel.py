"""Data parallelism over the devices: one per-device step, mapped by `jax.pmap` or `jax.shard_map`.

Both forms split the global batch `[B, ...]` into D shares of `b = B / D` examples along the
axis `AXIS_NAME` and keep one copy of the train state per device:

  'pmap'       `jax.pmap(step, axis_name='batch')`; arrays carry a leading device axis `[D, ...]`
               (state replicated, batch reshaped to `[D, b, ...]`).
  'shard_map'  `jax.jit(jax.shard_map(step, mesh, ...))` over the 1-D mesh `('batch',)`, the form
               JAX now recommends; arrays are global (`[B, ...]` sharded, state replicated).

`DataParallel` hides the difference from the loop: `put_state` moves a host `TrainState` (numpy
arrays, no device axis) to the devices, `to_host` brings one copy of any replicated result (state
or metrics) back, `put_batch` moves this host's numpy batch. Both put functions return device
arrays (with pmap too, which would otherwise copy a numpy argument to the devices on every call),
so a step called again on the same state or batch moves nothing from the host. The state argument
of the train step is donated (its buffers are reused for the new state). With several processes,
each one passes its own `B / num_processes` examples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cnn_jax.train.step import AXIS_NAME

PARALLELISM_NAMES = ("pmap", "shard_map")


class DataParallel(NamedTuple):
  """The mapped steps and the host <-> device transfers that go with them."""
  num_devices: int
  put_state: Callable  # host TrainState -> device state
  to_host: Callable  # replicated device pytree -> one numpy copy, without a device axis
  put_batch: Callable  # this host's numpy batch dict -> device batch
  train_step: Callable  # (device state, device batch, key) -> (device state, device metrics)
  eval_step: Callable  # (device state, device batch) -> device metrics summed over devices


def check_batch_size(name: str, batch_size: int, num_devices: int, num_processes: int = 1) -> None:
  """Raises ValueError unless `batch_size` splits evenly over the devices (and the hosts)."""
  if batch_size < num_devices or batch_size % num_devices or batch_size % num_processes:
    lower = (batch_size // num_devices) * num_devices
    upper = lower + num_devices
    nearest = [size for size in (lower, upper) if size > 0]
    raise ValueError(
        f"{name}={batch_size} does not divide evenly across {num_devices} devices "
        f"({num_processes} processes): it must be a positive multiple of {num_devices}; "
        f"nearest valid sizes: {' or '.join(map(str, nearest))}")


def _pmap_parallel(train_step, eval_step, devices) -> DataParallel:
  local_devices = [device for device in devices if device.process_index == jax.process_index()]
  # This host's share of pmap's `[D, ...]` arrays: the leading axis over its own devices.
  split = NamedSharding(Mesh(np.array(local_devices), (AXIS_NAME,)), P(AXIS_NAME))

  def put_state(state):
    return jax.device_put(
        jax.tree.map(lambda x: np.broadcast_to(x, (len(local_devices), *np.shape(x))), state),
        split)

  def to_host(tree):
    # This host's first device holds a copy; its shard keeps the device axis, of length 1.
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0))[0], tree)

  def put_batch(batch):
    return jax.device_put(
        jax.tree.map(lambda x: x.reshape(len(local_devices), x.shape[0] // len(local_devices),
                                         *x.shape[1:]), batch), split)

  mapped_train_step = jax.pmap(train_step, axis_name=AXIS_NAME, in_axes=(0, 0, None),
                               donate_argnums=(0,), devices=devices)
  mapped_eval_step = jax.pmap(eval_step, axis_name=AXIS_NAME, devices=devices)
  return DataParallel(len(devices), put_state, to_host, put_batch, mapped_train_step,
                      mapped_eval_step)


def _shard_map_parallel(train_step, eval_step, devices) -> DataParallel:
  mesh = Mesh(np.array(devices), (AXIS_NAME,))
  replicated = NamedSharding(mesh, P())
  split = NamedSharding(mesh, P(AXIS_NAME))

  def put_state(state):
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(replicated, np.asarray(x)),
                        state)

  def to_host(tree):
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)

  def put_batch(batch):
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(split, x), batch)

  # check_vma=False: with it on, differentiating replicated parameters inside shard_map already
  # sums the gradient over devices, and the step's own pmean would then be applied on top. Off,
  # the step sees per-device values exactly as under pmap, so one step function serves both.
  mapped_train_step = jax.jit(
      jax.shard_map(train_step, mesh=mesh, in_specs=(P(), P(AXIS_NAME), P()),
                    out_specs=(P(), P()), check_vma=False),
      donate_argnums=(0,))
  mapped_eval_step = jax.jit(
      jax.shard_map(eval_step, mesh=mesh, in_specs=(P(), P(AXIS_NAME)), out_specs=P(),
                    check_vma=False))
  return DataParallel(len(devices), put_state, to_host, put_batch,
                      mapped_train_step, mapped_eval_step)


def build_data_parallel(parallelism: str, train_step: Callable, eval_step: Callable,
                        devices: Sequence[jax.Device] | None = None) -> DataParallel:
  """Maps the per-device steps with `parallelism` ('pmap' or 'shard_map').

  Args:
    devices: the devices to map over, all of one platform (every process's, in the same order in
      each); default `jax.devices()`, the default backend's.
  """
  devices = list(jax.devices() if devices is None else devices)
  if parallelism == "pmap":
    return _pmap_parallel(train_step, eval_step, devices)
  if parallelism == "shard_map":
    return _shard_map_parallel(train_step, eval_step, devices)
  raise ValueError(f"config.parallelism must be one of {PARALLELISM_NAMES}, got {parallelism!r}")
