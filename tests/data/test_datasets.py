"""Tests of cnn_jax/data/datasets.py: the static dataset facts."""

import subprocess
import sys

import pytest

from cnn_jax.data.datasets import (DATASET_NAMES, IN_MEMORY_DATASET_NAMES, DatasetInfo,
                                   get_dataset_info)


@pytest.mark.parametrize("name", DATASET_NAMES + IN_MEMORY_DATASET_NAMES)
def test_dataset_info_is_self_consistent(name):
  info = get_dataset_info(name)
  assert isinstance(info, DatasetInfo) and info.name == name
  height, width, channels = info.image_shape
  assert height == width and channels in (1, 3)
  assert len(info.mean) == len(info.std) == channels
  assert all(0 < m < 1 for m in info.mean) and all(0 < s < 0.5 for s in info.std)
  assert info.num_train > info.num_test > 0 and info.num_classes >= 10


def test_published_sizes():
  assert get_dataset_info("cifar100").num_classes == 100
  assert get_dataset_info("imagenet2012").num_train == 1_281_167
  assert get_dataset_info("mnist").num_train + get_dataset_info("mnist").num_test == 70_000
  offline = get_dataset_info("mnist_offline")
  assert (offline.num_train, offline.num_test, offline.image_shape) == (4000, 1000, (28, 28, 1))


def test_dataset_info_is_frozen():
  with pytest.raises(AttributeError):
    get_dataset_info("mnist").num_classes = 3


def test_unknown_dataset_name_is_rejected():
  with pytest.raises(ValueError, match="cifar10.*svhn"):
    get_dataset_info("svhn")


def test_facts_and_augmentation_do_not_import_tensorflow():
  # Only create_split may pay TensorFlow's import time and memory; a fresh process shows it.
  check = ("import sys, cnn_jax.data, cnn_jax.data.augment; "
           "cnn_jax.data.get_dataset_info('mnist'); "
           "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'")
  subprocess.run([sys.executable, "-c", check], check=True)


def test_create_split_is_exported_lazily():
  import cnn_jax.data
  from cnn_jax.data.input_pipeline import create_split
  assert cnn_jax.data.create_split is create_split
  with pytest.raises(AttributeError, match="no_such_name"):
    cnn_jax.data.no_such_name  # noqa: B018
