"""A TFDS data_dir holding a tiny prepared 'cifar10' (random images), for the CIFAR-10 runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
  import tensorflow_datasets as tfds

SPLIT_SIZES = {"train": 40, "test": 20}


def _fake_cifar10_builder(data_dir: str) -> tfds.core.DatasetBuilder:
  """A builder that writes random images as 'cifar10', with the real features and version.

  Reading it back goes through TFDS's own `Cifar10` builder (`tfds.builder('cifar10',
  data_dir=...)`), exactly as a real prepared copy would.
  """
  import tensorflow_datasets as tfds  # only the CIFAR-10 tests need TFDS
  real_info = tfds.builder("cifar10").info

  with tfds.core.registered.skip_registration():  # 'cifar10' is TFDS's own name

    class FakeCifar10(tfds.core.GeneratorBasedBuilder):
      name = "cifar10"
      VERSION = real_info.version

      def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=real_info.features,
                                     supervised_keys=real_info.supervised_keys)

      def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        return {split: self._generate_examples(count, seed)
                for seed, (split, count) in enumerate(SPLIT_SIZES.items())}

      def _generate_examples(self, count, seed):
        rng = np.random.default_rng(seed)
        for index in range(count):
          yield index, {"id": f"fake_{seed}_{index}", "label": index % 10,
                        "image": rng.integers(0, 256, (32, 32, 3), np.uint8)}

  return FakeCifar10(data_dir=data_dir)


@pytest.fixture(scope="session")
def cifar10_data_dir(tmp_path_factory):
  pytest.importorskip("tensorflow_datasets", reason="the CIFAR-10 runs need TFDS")
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  _fake_cifar10_builder(data_dir).download_and_prepare()
  return data_dir
