"""Tests of cnn_jax/data/input_pipeline.py on 'mnist_offline' and on mocked TFDS datasets."""

import collections
import hashlib
import itertools

import numpy as np
import pytest
import tensorflow_datasets as tfds
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn_jax.data.input_pipeline import create_split


def _digest(image):
  return hashlib.sha1(image.tobytes()).hexdigest()


def _masked_examples(batches):
  """`[(digest, label), ...]` of the real (mask True) examples of `batches`, in order."""
  return [(_digest(image), int(label)) for batch in batches
          for image, label, real in zip(batch["image"], batch["label"], batch["mask"]) if real]


def _stored_examples(split_arrays):
  images, labels = split_arrays
  return [(_digest(image), int(label)) for image, label in zip(images, labels)]


def _take(iterator, count):
  return list(itertools.islice(iterator, count))


def _assert_same_batches(batches, other_batches):
  assert len(batches) == len(other_batches)
  for batch, other in zip(batches, other_batches):
    for key in ("image", "label", "mask"):
      np.testing.assert_array_equal(batch[key], other[key])


@pytest.mark.parametrize("batch_size", [7, 256, 1000, 1024])
def test_eval_batches_cover_every_test_example_once_in_order(
    mnist_offline_dir, mnist_offline_splits, batch_size):
  batches = list(create_split("mnist_offline", "test", batch_size, train=False,
                              data_dir=mnist_offline_dir))
  assert len(batches) == -(-1000 // batch_size)
  for batch in batches:
    assert batch["image"].shape == (batch_size, 28, 28, 1) and batch["image"].dtype == np.uint8
    assert batch["label"].dtype == np.int32 and batch["mask"].dtype == np.bool_
  masks = np.concatenate([batch["mask"] for batch in batches])
  # Only the tail of the last batch is padding, and padding is zeros.
  assert masks.sum() == 1000 and masks[:1000].all()
  assert not batches[-1]["image"][~batches[-1]["mask"]].any()
  assert _masked_examples(batches) == _stored_examples(mnist_offline_splits["test"])


def test_train_batches_are_full_shuffled_and_typed(mnist_offline_dir, mnist_offline_splits):
  batch = next(create_split("mnist_offline", "train", 64, train=True,
                            data_dir=mnist_offline_dir))
  assert batch["image"].shape == (64, 28, 28, 1) and batch["image"].dtype == np.uint8
  assert batch["label"].dtype == np.int32 and batch["mask"].all()
  # The stored train split is ordered by class; a shuffled batch of 64 is not.
  assert len(set(batch["label"].tolist())) >= 5


def test_each_train_epoch_is_a_new_permutation_of_the_train_split(
    mnist_offline_dir, mnist_offline_splits):
  batches = _take(create_split("mnist_offline", "train", 100, train=True,
                               data_dir=mnist_offline_dir), 80)
  stored = collections.Counter(_stored_examples(mnist_offline_splits["train"]))
  first_epoch, second_epoch = _masked_examples(batches[:40]), _masked_examples(batches[40:])
  assert collections.Counter(first_epoch) == stored == collections.Counter(second_epoch)
  assert first_epoch != second_epoch


def test_train_stream_is_a_function_of_the_seed(mnist_offline_dir):
  stream = lambda seed: _take(create_split("mnist_offline", "train", 32, train=True, seed=seed,
                                           data_dir=mnist_offline_dir), 3)
  first, again, other_seed = stream(0), stream(0), stream(1)
  _assert_same_batches(first, again)
  assert not np.array_equal(first[0]["image"], other_seed[0]["image"])


@settings(max_examples=5)
@given(start_step=st.integers(0, 40), batch_size=st.sampled_from([1, 96, 256]))
def test_resuming_at_start_step_yields_the_fresh_streams_batches_from_there(
    mnist_offline_dir, start_step, batch_size):
  fresh = _take(create_split("mnist_offline", "train", batch_size, train=True, seed=3,
                             data_dir=mnist_offline_dir), start_step + 2)
  resumed = _take(create_split("mnist_offline", "train", batch_size, train=True, seed=3,
                               data_dir=mnist_offline_dir, start_step=start_step), 2)
  _assert_same_batches(fresh[start_step:], resumed)


@pytest.mark.parametrize("process_count", [2, 3])
def test_host_splits_partition_the_test_split(mnist_offline_dir, mnist_offline_splits,
                                              process_count):
  parts = [_masked_examples(create_split("mnist_offline", "test", 128, train=False,
                                         data_dir=mnist_offline_dir, process_index=index,
                                         process_count=process_count))
           for index in range(process_count)]
  sizes = [len(part) for part in parts]
  assert max(sizes) - min(sizes) <= 1
  assert sum(parts, []) == _stored_examples(mnist_offline_splits["test"])


def test_host_train_streams_read_disjoint_halves(mnist_offline_dir, mnist_offline_splits):
  epochs = [set(_masked_examples(_take(create_split(
      "mnist_offline", "train", 100, train=True, data_dir=mnist_offline_dir,
      process_index=index, process_count=2), 20))) for index in range(2)]
  assert len(epochs[0]) == len(epochs[1]) == 2000
  assert epochs[0] | epochs[1] == set(_stored_examples(mnist_offline_splits["train"]))


def test_image_size_resizes_small_datasets(mnist_offline_dir):
  batch = next(create_split("mnist_offline", "test", 4, train=False, image_size=56,
                            data_dir=mnist_offline_dir))
  assert batch["image"].shape == (4, 56, 56, 1) and batch["image"].dtype == np.uint8
  assert batch["image"].max() > 200


@pytest.mark.parametrize("argument, value, message", [
    ("name", "svhn", "name must be one of"),
    ("split", "validation", "split must be one of"),
    ("batch_size", 0, "batch_size must be an int >= 1"),
    ("start_step", -1, "start_step must be an int >= 0"),
    ("image_size", 0, "image_size must be None or an int >= 1"),
    ("process_index", 2, "process_index must be in"),
])
def test_bad_arguments_are_rejected_with_their_value(argument, value, message):
  arguments = dict(name="mnist_offline", split="train", batch_size=8, train=True,
                   process_count=2)
  arguments[argument] = value
  with pytest.raises(ValueError, match=message) as error:
    create_split(**arguments)
  assert repr(value) in str(error.value) or str(value) in str(error.value)


def test_start_step_is_rejected_for_evaluation():
  with pytest.raises(ValueError, match="start_step"):
    create_split("mnist_offline", "test", 8, train=False, start_step=3)


@pytest.mark.parametrize("name, advice", [("cifar10", "tfds build cifar10"),
                                          ("imagenet2012", "downloads/manual")])
def test_missing_real_dataset_error_says_where_and_how(tmp_path, name, advice):
  with pytest.raises(FileNotFoundError) as error:
    create_split(name, "train", 8, train=True, data_dir=str(tmp_path))
  assert name in str(error.value) and str(tmp_path) in str(error.value)
  assert advice in str(error.value)


def test_real_dataset_path_on_mocked_cifar10():
  with tfds.testing.mock_data(num_examples=10):
    train = _take(create_split("cifar10", "train", 4, train=True), 6)  # crosses 2 epochs
    test = list(create_split("cifar10", "test", 4, train=False))
  assert train[0]["image"].shape == (4, 32, 32, 3) and train[0]["image"].dtype == np.uint8
  assert all(batch["mask"].all() for batch in train)
  assert all(0 <= label < 10 for batch in train for label in batch["label"])
  assert [batch["mask"].sum() for batch in test] == [4, 4, 2]


def test_imagenet_path_on_mocked_data_crops_and_resumes_exactly():
  with tfds.testing.mock_data(num_examples=6):
    fresh = _take(create_split("imagenet2012", "train", 2, train=True, image_size=48, seed=5),
                  5)
    resumed = _take(create_split("imagenet2012", "train", 2, train=True, image_size=48, seed=5,
                                 start_step=3), 2)
    test = list(create_split("imagenet2012", "test", 4, train=False, image_size=48))
  assert fresh[0]["image"].shape == (2, 48, 48, 3) and fresh[0]["image"].dtype == np.uint8
  # Random crops are a function of (seed, example number), so a resumed stream repeats them.
  _assert_same_batches(fresh[3:], resumed)
  assert [batch["image"].shape for batch in test] == [(4, 48, 48, 3)] * 2
  assert [batch["mask"].sum() for batch in test] == [4, 2]


def _lose_the_preparation_race(self, *args, **kwargs):
  raise FileExistsError("Cannot rename incomplete.XYZ_1.0.0: destination already exists.")


def test_preparation_race_lost_to_another_process_reuses_its_copy(mnist_offline_dir,
                                                                  monkeypatch, tmp_path):
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                      _lose_the_preparation_race)
  batch = next(create_split("mnist_offline", "test", 1000, train=False,
                            data_dir=mnist_offline_dir))
  assert batch["mask"].all()
  with pytest.raises(FileExistsError):  # Nothing prepared there: the error is real.
    create_split("mnist_offline", "test", 8, train=False, data_dir=str(tmp_path))
