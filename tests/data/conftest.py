"""Fixtures of the data tests: one prepared copy of 'mnist_offline' per test session."""

import pytest


@pytest.fixture(scope="session")
def mnist_offline_dir(tmp_path_factory):
  """A TFDS data_dir holding 'mnist_offline', prepared by the input pipeline itself."""
  from cnn_jax.data.input_pipeline import create_split

  data_dir = str(tmp_path_factory.mktemp("tfds"))
  next(create_split("mnist_offline", "test", 8, train=False, data_dir=data_dir))
  return data_dir


@pytest.fixture(scope="session")
def mnist_offline_splits(mnist_offline_dir):
  """`{'train': (images, labels), 'test': (images, labels)}` as stored, read straight by TFDS."""
  import tensorflow_datasets as tfds

  builder = tfds.builder("mnist_offline", data_dir=mnist_offline_dir)
  splits = {}
  for split in ("train", "test"):
    arrays = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    splits[split] = (arrays["image"], arrays["label"])
  return splits
