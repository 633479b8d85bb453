import subprocess
import sys

import jax
import numpy as np
import pytest

from cnn_jax.data import get_dataset_info
from experiments import in_memory_training
from experiments.in_memory_training import (Classifier, TrainingRecord, evaluation_subset,
                                            load_digits, plateau_gain, shuffled_batches,
                                            train_classifier, training_config, validation_split)


@pytest.fixture(scope="module")
def digits():
  return load_digits()


def test_digits_are_the_offline_split(digits):
  assert digits.train_images.shape == (4000, 28, 28, 1)
  assert digits.test_images.shape == (1000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(digits.test_labels), [100] * 10)
  _, labels = evaluation_subset(digits, 300)
  assert len(set(labels.tolist())) == 10  # not the first 300 of a class-sorted split


def test_the_sweep_imports_neither_tensorflow_nor_tfds():
  # An accelerator image with JAX alone (no TensorFlow, no TFDS) runs the digit experiments.
  source = ("import sys, experiments.sweep; "
            "print(sorted({'tensorflow', 'tensorflow_datasets'} & set(sys.modules)))")
  result = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True,
                          timeout=120, check=True)
  assert result.stdout.strip().splitlines()[-1] == "[]"


def test_without_tfds_cifar10_is_not_prepared_and_says_why(monkeypatch):
  monkeypatch.setattr(in_memory_training, "_tfds_installed", lambda: False)
  assert in_memory_training.is_prepared("mnist_canvas", None)
  assert not in_memory_training.is_prepared("cifar10", None)
  with pytest.raises(FileNotFoundError, match="TensorFlow Datasets, which is not installed"):
    in_memory_training.load_dataset("cifar10", None)


def test_training_lowers_the_loss_and_is_reproducible(digits):
  def train():
    config = training_config("mlp", seed=3, num_steps=24, batch_size=32, learning_rate=0.2,
                             record_every=8, widths=(32,))
    return train_classifier(config, digits.train_images, digits.train_labels)

  (first, records), (second, _) = train(), train()
  assert [record.step for record in records] == [8, 16, 24]
  assert records[-1].train_loss < 0.8 * records[0].train_loss
  jax.tree.map(np.testing.assert_array_equal, first.variables, second.variables)
  assert first.accuracy(digits.test_images, digits.test_labels) > 0.3


def test_frozen_modules_keep_their_parameters(digits):
  def train(variables=None, frozen_modules=()):
    config = training_config("mlp", seed=0, num_steps=3, batch_size=32, learning_rate=0.2,
                             widths=(16,))
    config.frozen_modules = frozen_modules
    return train_classifier(config, digits.train_images[:256], digits.train_labels[:256],
                            variables=variables)[0].variables

  start = train()
  tuned = train(start, frozen_modules=("Fc1",))
  jax.tree.map(np.testing.assert_array_equal, tuned["params"]["Fc1"], start["params"]["Fc1"])
  assert not np.allclose(tuned["params"]["Head"]["kernel"], start["params"]["Head"]["kernel"])
  with pytest.raises(ValueError, match=r"frozen_modules must name .* \['Conv1'\]"):
    train(start, frozen_modules=("Conv1",))


def test_the_input_transform_reaches_the_model_in_training_and_in_the_classifier(digits):
  # Placed on a 32 x 32 canvas, the digits make the MLP's first layer 32 * 32 wide.
  canvas = lambda images: jax.numpy.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
  config = training_config("mlp", seed=0, num_steps=2, batch_size=32, learning_rate=0.2,
                           widths=(8,))
  classifier, _ = train_classifier(config, digits.train_images[:64], digits.train_labels[:64],
                                   input_transform=canvas)
  assert classifier.variables["params"]["Fc1"]["kernel"].shape == (32 * 32, 8)
  assert 0.0 <= classifier.accuracy(digits.test_images[:50], digits.test_labels[:50]) <= 1.0


def test_shuffled_batches_visit_every_example_once_per_epoch():
  images, labels = np.arange(10)[:, None], np.arange(10)
  batches = shuffled_batches(images, labels, 4, seed=1)
  first_epochs = np.concatenate([next(batches)["label"] for _ in range(5)])
  assert sorted(first_epochs[:10]) == list(range(10)) and sorted(first_epochs[10:]) == list(
      range(10))
  assert not np.array_equal(first_epochs[:10], first_epochs[10:])


@pytest.mark.parametrize("dataset", ["mnist_offline", "cifar10"])
def test_classifier_normalizes_with_its_datasets_statistics(dataset):
  info = get_dataset_info(dataset)
  classifier = Classifier(model=None, variables={}, input_transform=lambda images: images,
                          dataset=dataset)
  images = np.full((2, 4, 4, len(info.mean)), 0.5, np.float32)
  expected = (0.5 - np.array(info.mean)) / np.array(info.std)
  np.testing.assert_allclose(classifier.model_input(images)[1, 2, 3], expected, rtol=1e-5)


def test_validation_split_is_stratified_disjoint_and_complete():
  labels = np.repeat(np.arange(10), 40)
  images = np.arange(400).reshape(400, 1, 1, 1)
  (train_images, train_labels), (val_images, val_labels) = validation_split(images, labels, 0.1)
  np.testing.assert_array_equal(np.bincount(val_labels), [4] * 10)
  assert sorted(train_images.ravel().tolist() + val_images.ravel().tolist()) == list(range(400))
  np.testing.assert_array_equal(labels[train_images.ravel()], train_labels)
  _, (_, held_labels) = validation_split(images[:12], np.arange(12) % 6, 0.1)
  assert sorted(held_labels.tolist()) == list(range(6))  # one of each class of two
  with pytest.raises(ValueError, match="fraction must be in"):
    validation_split(images, labels, 1.0)


def test_training_records_the_validation_split(digits):
  (images, labels), validation = validation_split(digits.train_images, digits.train_labels, 0.1)
  config = training_config("mlp", seed=0, num_steps=16, batch_size=32, learning_rate=0.2,
                           record_every=8, widths=(32,))
  _, records = train_classifier(config, images, labels, validation=validation)
  assert len(records) == 2 and all(0.0 <= r.validation_accuracy <= 1.0 for r in records)
  assert records[-1].validation_loss < records[0].validation_loss


@pytest.mark.parametrize("accuracies, expected", [
    ([0.5, 0.7, 0.9, 0.95], 0.05), ([0.5, 0.6, 0.7, 0.8, 0.97, 0.98, 0.98, 0.98], 0.005),
    ([0.9, 0.9, 0.9], float("nan"))])
def test_plateau_gain_compares_the_last_two_quarters(accuracies, expected):
  records = [TrainingRecord(i, 1.0, 0.5, {}, 1.0, a) for i, a in enumerate(accuracies)]
  np.testing.assert_allclose(plateau_gain(records), expected, atol=1e-12)  # float sums
