"""The per-device steps under pmap and shard_map on 4 devices of one platform (conftest's
`devices`: the 4 virtual CPU devices beside a single GPU)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from jax import lax
from hypothesis import strategies as st

from cnn_jax.train import parallel, step
from cnn_jax.train.state import create_train_state

MEAN, STD = (0.5,), (0.25,)


class TinyBatchNormNet(nn.Module):
  """Conv -> batch norm (synced over `axis_name`) -> ReLU -> mean over space -> dense."""
  axis_name: str | None = step.AXIS_NAME

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Conv(8, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train, axis_name=self.axis_name)(x)
    return nn.Dense(10)(jnp.mean(nn.relu(x), axis=(1, 2)))


def identity_augmentation(key, images):
  del key
  return images


def make_batches(count, batch_size, seed=0):
  rng = np.random.default_rng(seed)
  return [{"image": rng.integers(0, 256, (batch_size, 8, 8, 1), dtype=np.uint8),
           "label": rng.integers(0, 10, batch_size).astype(np.int32),
           "mask": np.ones(batch_size, bool)} for _ in range(count)]


def make_steps(model, optimizer):
  schedule = optax.constant_schedule(0.1)
  return (step.make_train_step(model, optimizer, schedule, identity_augmentation, MEAN, STD,
                               label_smoothing=0.1),
          step.make_eval_step(model, MEAN, STD))


@pytest.fixture(scope="module")
def setup():
  model = TinyBatchNormNet()
  optimizer = optax.sgd(0.1, momentum=0.9)
  state = jax.device_get(create_train_state(model, optimizer, jax.random.key(0), (8, 8, 1)))
  return model, optimizer, state


def test_four_device_pmap_step_equals_one_device_step_on_the_same_global_batch(setup, devices):
  model, optimizer, state = setup
  train_step, _ = make_steps(model, optimizer)
  batches = make_batches(3, 16)
  key = jax.random.key(1)
  results = {}
  for num_devices in (1, 4):
    mapped = jax.pmap(train_step, axis_name=step.AXIS_NAME, in_axes=(0, 0, None),
                      devices=devices(4)[:num_devices])
    device_state = jax.tree.map(lambda x: np.stack([x] * num_devices), state)
    for batch in batches:
      shards = jax.tree.map(lambda x: x.reshape(num_devices, -1, *x.shape[1:]), batch)
      device_state, metrics = mapped(device_state, shards, key)
    results[num_devices] = jax.tree.map(lambda x: np.asarray(x[0]), (device_state, metrics))
  # Only the order of float32 sums differs (per-device means, then pmean): tolerance 1e-5.
  for one_device, four_devices in zip(jax.tree.leaves(results[1]), jax.tree.leaves(results[4])):
    np.testing.assert_allclose(one_device, four_devices, rtol=1e-5, atol=1e-6)
  assert int(results[4][0].step) == 3


def test_pmap_and_shard_map_give_the_same_parameters_after_several_steps(setup, devices):
  model, optimizer, state = setup
  train_step, eval_step = make_steps(model, optimizer)
  batches = make_batches(4, 16, seed=1)
  finals = {}
  for parallelism in parallel.PARALLELISM_NAMES:
    data_parallel = parallel.build_data_parallel(parallelism, train_step, eval_step, devices(4))
    device_state = data_parallel.put_state(state)
    for batch in batches:
      device_state, metrics = data_parallel.train_step(device_state,
                                                       data_parallel.put_batch(batch),
                                                       jax.random.key(3))
    sums = data_parallel.eval_step(device_state, data_parallel.put_batch(batches[0]))
    finals[parallelism] = data_parallel.to_host((device_state, metrics, sums))
  for from_pmap, from_shard_map in zip(jax.tree.leaves(finals["pmap"]),
                                       jax.tree.leaves(finals["shard_map"])):
    # Two compilations of one step: XLA may order float32 sums differently (CPU-dependent), and
    # the differences pass through several SGD steps, so the same 1e-5 as the one-device test.
    np.testing.assert_allclose(from_pmap, from_shard_map, rtol=1e-5, atol=1e-6)
  assert not np.allclose(finals["pmap"][0].params["Dense_0"]["kernel"],
                         state.params["Dense_0"]["kernel"])


@pytest.mark.parametrize("parallelism", parallel.PARALLELISM_NAMES)
def test_each_device_steps_on_its_own_consecutive_share_of_the_global_batch(parallelism,
                                                                            devices):
  def share_step(state, batch, key):
    del key
    labels = batch["label"]  # [b]: this device's share
    return state, {"examples": lax.psum(jnp.float32(labels.shape[0]), step.AXIS_NAME),
                   "shares": lax.all_gather(labels, step.AXIS_NAME)}

  data_parallel = parallel.build_data_parallel(parallelism, share_step,
                                               lambda state, batch: batch, devices(4))
  batch = {"label": np.arange(16, dtype=np.int32)}
  _, metrics = data_parallel.train_step(data_parallel.put_state({"step": np.int32(0)}),
                                        data_parallel.put_batch(batch), jax.random.key(0))
  metrics = data_parallel.to_host(metrics)
  assert float(metrics["examples"]) == 16  # the global batch once, not once per device
  np.testing.assert_array_equal(metrics["shares"], np.arange(16).reshape(4, 4))


def test_device_step_keys_differ_across_devices_and_steps_and_repeat_exactly(devices):
  def key_data(key, step_numbers):
    return jax.random.key_data(step.device_step_key(key, step_numbers))

  keys_of = jax.pmap(key_data, axis_name=step.AXIS_NAME, in_axes=(None, 0), devices=devices(4))
  base = jax.random.key(0)
  at_step_5 = np.asarray(keys_of(base, np.full(4, 5)))
  assert len({row.tobytes() for row in at_step_5}) == 4
  np.testing.assert_array_equal(at_step_5, np.asarray(keys_of(base, np.full(4, 5))))
  assert not np.any(np.all(at_step_5 == np.asarray(keys_of(base, np.full(4, 6))), axis=-1))


def test_uneven_global_batch_is_refused_with_the_nearest_valid_sizes():
  with pytest.raises(ValueError, match=r"batch_size=30 .* 4 devices.*28 or 32"):
    parallel.check_batch_size("batch_size", 30, 4)
  with pytest.raises(ValueError, match=r"batch_size=2 .* 4 devices.*nearest valid sizes: 4$"):
    parallel.check_batch_size("batch_size", 2, 4)
  parallel.check_batch_size("batch_size", 32, 4, num_processes=2)


def test_unknown_parallelism_is_refused():
  with pytest.raises(ValueError, match="'pmap', 'shard_map'.*'vmap'"):
    parallel.build_data_parallel("vmap", None, None)


@pytest.mark.parametrize("parallelism", parallel.PARALLELISM_NAMES)
def test_steps_on_put_state_and_batch_copy_nothing_from_the_host(setup, devices, parallelism):
  # A numpy argument would be copied to the devices on every call: for a benchmark's eval step
  # on one batch, the whole state each time (AlexNet: 466 MB, slower than the step on a GPU).
  model, optimizer, state = setup
  data_parallel = parallel.build_data_parallel(parallelism, *make_steps(model, optimizer),
                                               devices(4))
  device_state = data_parallel.put_state(state)
  device_batch = data_parallel.put_batch(make_batches(1, 16)[0])
  with jax.transfer_guard_host_to_device("disallow"):
    data_parallel.eval_step(device_state, device_batch)
  key = jax.device_put(jax.random.key(0), devices(4)[0])
  with jax.transfer_guard_host_to_device("disallow"):
    device_state, _ = data_parallel.train_step(device_state, device_batch, key)
  assert int(data_parallel.to_host(device_state).step) == 1


def test_padded_examples_do_not_change_the_eval_sums(setup):
  model, optimizer, state = setup
  data_parallel = parallel.build_data_parallel("pmap", *make_steps(model, optimizer))
  device_state = data_parallel.put_state(state)
  (real,) = make_batches(1, 8, seed=2)
  (garbage,) = make_batches(1, 8, seed=3)
  padded = {name: np.concatenate([real[name], garbage[name]]) for name in real}
  padded["mask"][8:] = False
  doubled = {name: np.concatenate([real[name], real[name]]) for name in real}
  sums_padded = data_parallel.to_host(data_parallel.eval_step(device_state,
                                                              data_parallel.put_batch(padded)))
  sums_doubled = data_parallel.to_host(data_parallel.eval_step(device_state,
                                                               data_parallel.put_batch(doubled)))
  assert sums_padded["count"] == 8
  np.testing.assert_allclose(2 * sums_padded["loss_sum"], sums_doubled["loss_sum"], rtol=1e-5)
  assert 2 * sums_padded["correct"] == sums_doubled["correct"]


# Few class counts: every new shape compiles the loss once.
@given(st.sampled_from((2, 3, 10)), st.integers(0, 11), st.floats(-5, 5))
def test_cross_entropy_without_smoothing_is_minus_log_softmax_of_the_label(classes, label, shift):
  label = label % classes
  logits = jnp.linspace(-2.0, 3.0, classes)[None] + shift
  loss = step.cross_entropy(logits, jnp.array([label]))
  np.testing.assert_allclose(loss[0], -jax.nn.log_softmax(logits[0])[label], rtol=1e-5,
                             atol=1e-6)


@given(st.sampled_from((2, 3, 10)), st.floats(0.01, 0.9))
def test_smoothed_cross_entropy_is_smallest_at_the_smoothed_target(classes, smoothing):
  # CE(z, t) over z is minimized by softmax(z) = t (eps > 0 keeps log t finite).
  target = np.full(classes, smoothing / classes)
  target[0] += 1.0 - smoothing
  best_logits = jnp.log(jnp.asarray(target))[None]
  other_logits = best_logits + jax.random.normal(jax.random.key(round(smoothing * 1e6)),
                                                 best_logits.shape)
  label = jnp.array([0])
  assert (step.cross_entropy(best_logits, label, smoothing)[0]
          <= step.cross_entropy(other_logits, label, smoothing)[0] + 1e-6)


@pytest.mark.parametrize("count", [1, 2])
def test_the_mean_over_devices_is_an_all_reduce_only_where_there_are_several(devices, count):
  mapped = jax.pmap(step.mean_over_devices, axis_name=step.AXIS_NAME, devices=devices(count))
  values = jnp.arange(count * 3, dtype=jnp.float32).reshape(count, 3)
  np.testing.assert_array_equal(mapped(values), jnp.broadcast_to(values.mean(0), values.shape))
  assert ("all-reduce" in mapped.lower(values).compile().as_text()) == (count > 1)
