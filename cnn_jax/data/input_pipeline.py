"""TFDS input pipelines: deterministic, resumable training streams and padded evaluation passes.

This is the only module of cnn-jax that knows tf.data. It yields numpy batches
`{'image': uint8 [B, H, W, C], 'label': int32 [B], 'mask': bool [B]}`; conversion to float and
augmentation happen on the accelerator (`cnn_jax.data.augment`).

Training stream, per host: the host's examples (`tfds.even_splits`) are shuffled with `seed`
(file order, then a shuffle buffer reshuffled every epoch), repeated forever and batched with
`drop_remainder`. Example number `i` of the stream is fully determined by `(seed, i)`, including
the random crop of ImageNet, whose randomness is a stateless function of `(seed, i)`. So
resuming at step `k` skips the first `k B` raw examples before any decoding and yields exactly the
batches `k, k + 1, ...` of a fresh stream. The skip still reads those records (shuffle included):
about 1-2 s per 1,000 skipped steps of 256 for the cached datasets on the 2-core CPU machine;
for ImageNet it re-reads `k B` encoded JPEGs from disk.

Evaluation pass: every example of the host's split once, in the stored order; the last batch is
padded to `B` with `mask = False`, so that metrics are `sum(mask * value) / sum(mask)`.

tf.data runs on the CPU; entry points keep TensorFlow off the accelerators
(`cnn_jax.runtime.setup`), so that it reserves no GPU memory that JAX needs.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from cnn_jax.data import mnist_offline  # noqa: F401  (registers the 'mnist_offline' builder)
from cnn_jax.data.datasets import DATASET_NAMES, IMAGENET_DEFAULT_IMAGE_SIZE, get_dataset_info

SPLIT_NAMES = ("train", "test")

# The TFDS split behind our 'test': ImageNet publishes no test labels.
_TFDS_TEST_SPLIT = {"imagenet2012": "validation"}
# Datasets whose decoded images fit in host memory are decoded once and cached.
_CACHED_DATASETS = ("cifar10", "cifar100", "mnist", "mnist_offline")
# ImageNet examples are shuffled as encoded JPEGs in a buffer of this many batches (as the Flax
# ImageNet example); the cached datasets are shuffled over the whole host split.
_IMAGENET_SHUFFLE_BATCHES = 16
# Fraction of the shorter side kept by the evaluation centre crop: 224 / (224 + 32).
_IMAGENET_CROP_PADDING = 32


def _not_prepared_error(name: str, builder: tfds.core.DatasetBuilder) -> FileNotFoundError:
  """The error for a real dataset missing from its data_dir, saying how to prepare it."""
  root = builder.data_dir_root
  if name == "imagenet2012":
    how = (f"download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from "
           f"https://image-net.org into {root}/downloads/manual (the manual_dir TFDS expects), "
           f"then run: tfds build imagenet2012 --data_dir={root}")
  else:
    how = f"with network access, run: tfds build {name} --data_dir={root}"
  return FileNotFoundError(
      f"dataset {name!r} is not prepared in data_dir {str(root)!r} (looked for "
      f"{builder.data_dir}). To prepare it, {how}. The offline dataset 'mnist_offline' needs "
      f"no preparation.")


def _prepare_mnist_offline(data_dir: str | None) -> tfds.core.DatasetBuilder:
  """The 'mnist_offline' builder, prepared in `data_dir` first if needed (offline, ~1 s)."""
  builder = tfds.builder("mnist_offline", data_dir=data_dir)
  try:
    builder.download_and_prepare()  # A no-op once prepared.
  except FileExistsError:
    # Another process (a parallel test worker, another host) finished preparing the same
    # directory first; the split is deterministic, so its copy is the one we would have written.
    builder = tfds.builder("mnist_offline", data_dir=data_dir)
    if not builder.is_prepared():
      raise
  return builder


def host_split(split: str, process_index: int, process_count: int) -> tfds.typing.SplitArg:
  """The part of TFDS split `split` read by host `process_index` of `process_count`.

  `tfds.even_splits`: the hosts' parts are disjoint, cover the split, and differ in size by at
  most one example.
  """
  return tfds.even_splits(split, n=process_count)[process_index]


def _resize_uint8(image: tf.Tensor, size: int) -> tf.Tensor:
  """Antialiased bilinear resize of a uint8 `[H, W, C]` image to `[size, size, C]` uint8."""
  resized = tf.image.resize(image, (size, size), method="bilinear", antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def _imagenet_random_crop(encoded: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
  """Inception-style random-resized crop of a JPEG, stateless in `seed`.

  The crop covers 8% to 100% of the image area with aspect ratio in [3/4, 4/3] (the Flax
  ImageNet example's `_decode_and_random_crop`); after 10 failed draws, the centre crop is used.
  The horizontal flip is an on-device augmentation (`config.augmentation = 'flip'`), not done
  here, so that an image is flipped with probability 1/2 and never twice.

  Args:
    encoded: scalar string, the JPEG bytes.
    size: output side.
    seed: int64 `[2]`, the stateless seed of this example.

  Returns:
    uint8 `[size, size, 3]`.
  """
  shape = tf.io.extract_jpeg_shape(encoded)
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=(1, 1, 4)),
      seed=seed, min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3),
      area_range=(0.08, 1.0), max_attempts=10, use_image_if_no_bounding_boxes=True)
  offset_y, offset_x, _ = tf.unstack(begin)
  height, width, _ = tf.unstack(crop_size)
  window = tf.stack([offset_y, offset_x, height, width])
  is_full_image = tf.reduce_all(tf.equal(crop_size[:2], shape[:2]))
  return tf.cond(is_full_image,
                 lambda: _imagenet_center_crop(encoded, size),
                 lambda: _resize_uint8(
                     tf.io.decode_and_crop_jpeg(encoded, window, channels=3), size))


def _imagenet_center_crop(encoded: tf.Tensor, size: int) -> tf.Tensor:
  """Centre crop of `size / (size + 32)` of the shorter side, resized to `[size, size, 3]`."""
  shape = tf.io.extract_jpeg_shape(encoded)
  height, width = shape[0], shape[1]
  side = tf.cast(size / (size + _IMAGENET_CROP_PADDING)
                 * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
  window = tf.stack([(height - side + 1) // 2, (width - side + 1) // 2, side, side])
  return _resize_uint8(tf.io.decode_and_crop_jpeg(encoded, window, channels=3), size)


def _pad_batch(batch: dict[str, tf.Tensor], batch_size: int) -> dict[str, tf.Tensor]:
  """Pads every array of a (last, short) batch with zeros / False to `batch_size` rows."""
  missing = batch_size - tf.shape(batch["label"])[0]
  return {key: tf.pad(value, [[0, missing]] + [[0, 0]] * (value.shape.rank - 1))
          for key, value in batch.items()}


def create_split(name: str, split: str, batch_size: int, *, train: bool, seed: int = 0,
                 data_dir: str | None = None, start_step: int = 0, image_size: int | None = None,
                 prefetch: int = 2, process_index: int | None = None,
                 process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Batches of one host's part of a TFDS split, as numpy arrays.

  Args:
    name: one of `DATASET_NAMES`.
    split: 'train' or 'test' (ImageNet's 'test' is its validation split).
    batch_size: examples per batch on this host (the global batch divided by the hosts).
    train: True for the infinite, shuffled, resumable training stream; False for one ordered
      pass with the last batch padded (see the module docstring).
    seed: seed of the shuffle and of ImageNet's random crops (training only).
    data_dir: TFDS data directory (default: TFDS's, `~/tensorflow_datasets`); ImageNet's
      manual downloads go in `<data_dir>/downloads/manual`.
    start_step: training only: first batch to yield, for an exact resume.
    image_size: side of the square images yielded; default the dataset's own size (ImageNet:
      224). Images of the other datasets are resized (antialiased bilinear) when it differs.
    prefetch: batches prepared ahead by tf.data.
    process_index, process_count: this host's index and the number of hosts; default
      `jax.process_index()` and `jax.process_count()`.

  Returns:
    An iterator of `{'image': uint8 [B, S, S, C], 'label': int32 [B], 'mask': bool [B]}`.
  """
  if name not in DATASET_NAMES:
    raise ValueError(f"name must be one of {DATASET_NAMES}, got {name!r}")
  if split not in SPLIT_NAMES:
    raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}")
  for argument, value, minimum in (("batch_size", batch_size, 1), ("start_step", start_step, 0),
                                   ("prefetch", prefetch, 0), ("seed", seed, 0)):
    if not isinstance(value, (int, np.integer)) or value < minimum:
      raise ValueError(f"{argument} must be an int >= {minimum}, got {value!r}")
  if image_size is not None and (not isinstance(image_size, (int, np.integer)) or image_size < 1):
    raise ValueError(f"image_size must be None or an int >= 1, got {image_size!r}")
  if start_step and not train:
    raise ValueError(f"start_step applies to training streams only (train=True), got "
                     f"start_step={start_step} with train=False")
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index must be in [0, process_count={process_count}), got "
                     f"{process_index}")

  info = get_dataset_info(name)
  is_imagenet = name == "imagenet2012"
  native_size = IMAGENET_DEFAULT_IMAGE_SIZE if is_imagenet else info.image_shape[0]
  size = native_size if image_size is None else int(image_size)
  tfds_split = _TFDS_TEST_SPLIT.get(name, "test") if split == "test" else "train"
  builder = (_prepare_mnist_offline(data_dir) if name == "mnist_offline"
             else tfds.builder(name, data_dir=data_dir))

  options = tf.data.Options()
  options.deterministic = True
  try:
    dataset = builder.as_dataset(
        split=host_split(tfds_split, process_index, process_count), shuffle_files=train,
        # ImageNet stays encoded until after the shuffle and the resume skip: decoding is the
        # expensive part, and the crop decodes only the window it keeps.
        decoders={"image": tfds.decode.SkipDecoding()} if is_imagenet else None,
        read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False, options=options))
  except AssertionError as error:  # How TFDS 4.9 reports a dataset missing from data_dir.
    if "could not find data" not in str(error):
      raise
    raise _not_prepared_error(name, builder) from error
  dataset = dataset.map(lambda example: {"image": example["image"],
                                         "label": tf.cast(example["label"], tf.int32)})
  if name in _CACHED_DATASETS:
    if size != native_size:
      dataset = dataset.map(lambda example: {**example,
                                             "image": _resize_uint8(example["image"], size)})
    dataset = dataset.cache()

  def prepare_train(index: tf.Tensor, example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    image = example["image"]
    if is_imagenet:
      image = _imagenet_random_crop(image, size, tf.stack([tf.constant(seed, tf.int64), index]))
    return {"image": image, "label": example["label"], "mask": tf.constant(True)}

  def prepare_eval(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    image = _imagenet_center_crop(example["image"], size) if is_imagenet else example["image"]
    return {"image": image, "label": example["label"], "mask": tf.constant(True)}

  if train:
    buffer_size = (_IMAGENET_SHUFFLE_BATCHES * batch_size if is_imagenet
                   else int(dataset.cardinality()))
    dataset = dataset.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=True).repeat()
    # Numbering the stream before the skip makes example i's randomness depend on i only.
    dataset = dataset.enumerate().skip(start_step * batch_size)
    dataset = dataset.map(prepare_train, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=True)
  else:
    dataset = dataset.map(prepare_eval, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size).map(lambda batch: _pad_batch(batch, batch_size))
  return iter(tfds.as_numpy(dataset.prefetch(prefetch)))
