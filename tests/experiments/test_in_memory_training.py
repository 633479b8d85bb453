import jax
import numpy as np
import pytest

from cnn_jax.data.augment import build_augmentation
from experiments.in_memory_training import (evaluation_subset, load_digits, train_classifier,
                                            training_config)


@pytest.fixture(scope="module")
def digits():
  return load_digits()


def test_digits_are_the_offline_split(digits):
  assert digits.train_images.shape == (4000, 28, 28, 1)
  assert digits.test_images.shape == (1000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(digits.test_labels), [100] * 10)
  _, labels = evaluation_subset(digits, 300)
  assert len(set(labels.tolist())) == 10  # not the first 300 of a class-sorted split


def test_training_lowers_the_loss_and_is_reproducible(digits):
  def train():
    return train_classifier("mlp", {"widths": (32,)}, digits.train_images, digits.train_labels,
                            seed=3, num_steps=24, batch_size=32, config=training_config(),
                            augment=build_augmentation(""), record_every=8)

  (first, records), (second, _) = train(), train()
  assert records[-1].train_loss < 0.8 * records[0].train_loss
  jax.tree.map(np.testing.assert_array_equal, first.variables, second.variables)
  assert first.accuracy(digits.test_images, digits.test_labels) > 0.3
