import jax
import numpy as np
import pytest

from cnn_jax.data import get_dataset_info
from cnn_jax.data.augment import build_augmentation
from experiments.in_memory_training import (Classifier, evaluation_subset, load_digits,
                                            train_classifier, training_config)


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


def test_frozen_modules_keep_their_parameters(digits):
  def train(variables=None, frozen_modules=()):
    return train_classifier("mlp", {"widths": (16,)}, digits.train_images[:256],
                            digits.train_labels[:256], seed=0, num_steps=3, batch_size=32,
                            config=training_config(), augment=build_augmentation(""),
                            variables=variables, frozen_modules=frozen_modules)[0].variables

  start = train()
  tuned = train(start, frozen_modules=("Fc1",))
  jax.tree.map(np.testing.assert_array_equal, tuned["params"]["Fc1"], start["params"]["Fc1"])
  assert not np.allclose(tuned["params"]["Head"]["kernel"], start["params"]["Head"]["kernel"])
  with pytest.raises(ValueError, match=r"frozen_modules must name .* \['Conv1'\]"):
    train(start, frozen_modules=("Conv1",))


@pytest.mark.parametrize("dataset", ["mnist_offline", "cifar10"])
def test_classifier_normalizes_with_its_datasets_statistics(dataset):
  info = get_dataset_info(dataset)
  classifier = Classifier(model=None, variables={}, input_transform=lambda images: images,
                          dataset=dataset)
  images = np.full((2, 4, 4, len(info.mean)), 0.5, np.float32)
  expected = (0.5 - np.array(info.mean)) / np.array(info.std)
  np.testing.assert_allclose(classifier.model_input(images)[1, 2, 3], expected, rtol=1e-5)
