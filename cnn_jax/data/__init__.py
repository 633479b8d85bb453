"""Data: TFDS input pipelines (`create_split`), dataset facts, on-device augmentation.

`create_split` lives in `input_pipeline`, the one module that imports TensorFlow; it is loaded on
first use, so that `cnn_jax.data.augment` and `get_dataset_info` stay free of TensorFlow's
import time and memory.
"""

import importlib

from cnn_jax.data.datasets import DATASET_NAMES, DatasetInfo, get_dataset_info


def __getattr__(name: str):
  if name == "create_split":
    return importlib.import_module("cnn_jax.data.input_pipeline").create_split
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DATASET_NAMES", "DatasetInfo", "create_split", "get_dataset_info"]
