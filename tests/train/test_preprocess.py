"""The input normalization shared by training and inference."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cnn_jax.data import get_dataset_info
from cnn_jax.train import preprocess

CIFAR = get_dataset_info("cifar10")


@given(hnp.arrays(np.uint8, (2, 4, 4, 3)))
def test_uint8_and_unit_float_images_normalize_the_same(images):
  np.testing.assert_allclose(preprocess(images, CIFAR), preprocess(images / 255.0, CIFAR),
                             rtol=1e-5, atol=1e-5)


@given(st.integers(0, 2))
def test_a_channel_at_its_dataset_mean_maps_to_zero_and_mean_plus_std_to_one(channel):
  images = np.tile(np.asarray(CIFAR.mean, np.float32), (1, 2, 2, 1))
  images[..., channel] += CIFAR.std[channel]
  normalized = np.asarray(preprocess(images, CIFAR))
  expected = np.zeros(3)
  expected[channel] = 1.0
  np.testing.assert_allclose(normalized[0, 0, 0], expected, atol=1e-6)


def test_images_with_the_wrong_channel_count_are_refused():
  with pytest.raises(ValueError, match=r"\[N, H, W, 3\] for dataset 'cifar10', got shape"):
    preprocess(np.zeros((2, 8, 8, 1), np.uint8), CIFAR)
