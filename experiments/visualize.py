"""Visualizes a trained ConvNet: `python experiments/visualize.py --workdir=<training workdir>`.

Restores the workdir's checkpoint, scans test images, and writes under `<workdir>/viz/` the
first-layer filters (by tower for AlexNet, with their colourfulness), the activation maps of one
test image, the top-k figure of Zeiler & Fergus (deconvnet projections and image patches cropped
to the receptive field) and the three projection methods side by side, with `index.md` showing
them all (see `cnn_jax.viz.report`).

Examples:
  python experiments/visualize.py --workdir=runs/default
  python experiments/visualize.py --workdir=runs/default --layer=conv2 --channel=3,17,40

An expected error (no checkpoint, a damaged one, a bad flag value) ends with one line on stderr
and exit code 2; --debug shows the traceback.
"""

import os

from absl import app, flags, logging

from cnn_jax import data, runtime, train
from cnn_jax.train import command_line
from cnn_jax.viz.report import write_visualizations

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A training workdir (config.json and checkpoints/).")
flags.DEFINE_string("layer", None, "An 'intermediates' name with spatial axes; default the last "
                    "conv layer.")
flags.DEFINE_list("channel", [], "Channels of --layer to show, comma-separated; default the "
                  "--num_channels strongest.")
flags.DEFINE_integer("num_channels", 8, "Channels shown when --channel is not given.")
flags.DEFINE_integer("top_k", 9, "Images per channel in the top-k figure.")
flags.DEFINE_integer("num_images", 1000, "Test images scanned for the top-k search.")
flags.DEFINE_integer("batch_size", 250, "Images per forward pass.")
flags.DEFINE_integer("scale", 0, "Enlargement of the top-k patches; 0 for about 64 pixels.")
flags.DEFINE_integer("image", 0, "The scanned test image whose activation maps are shown.")
flags.DEFINE_bool("best", False, "Use the best checkpoint instead of the latest.")
command_line.define_debug_flag()
flags.mark_flag_as_required("workdir")


def load_test_images(config, num_images: int, batch_size: int) -> list:
  """Up to `num_images` preprocessed test images as `[B, H, W, C]` batches, padding removed."""
  if num_images < 1 or batch_size < 1:
    raise ValueError(f"num_images and batch_size must be >= 1, got {num_images} and "
                     f"{batch_size}")
  dataset_info = data.get_dataset_info(config.dataset)
  stream = data.create_split(config.dataset, "test", batch_size, train=False,
                             data_dir=config.data_dir,
                             image_size=config.image_size)
  batches, count = [], 0
  for batch in stream:
    images = batch["image"][batch["mask"]][:num_images - count]
    batches.append(train.preprocess(images, dataset_info))
    count += len(images)
    if count >= num_images:
      break
  return batches


def main(argv):
  runtime.setup()
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  model, variables, config = train.restore_for_inference(FLAGS.workdir, best=FLAGS.best)
  batches = load_test_images(config, FLAGS.num_images, FLAGS.batch_size)
  index = write_visualizations(
      os.path.join(FLAGS.workdir, "viz"), model, variables, batches, layer=FLAGS.layer,
      channels=[int(channel) for channel in FLAGS.channel], num_channels=FLAGS.num_channels,
      top_k=FLAGS.top_k, scale=FLAGS.scale, image_index=FLAGS.image,
      title=f"{config.model.name} on {config.dataset}")
  logging.info("Wrote %s", index)


if __name__ == "__main__":
  app.run(command_line.exit_on_expected_errors(main, "visualize.py"))
