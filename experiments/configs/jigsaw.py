"""The jigsaw experiment (`python -m experiments.jigsaw --out=experiments/results/jigsaw`).

`get_config(arg)`: arg '' (default: 12 photos, 5 seeds, about 3-5 minutes on 2 CPU cores) or
'smoke' (2 photos, 2 seeds, small grids: what a test runs). Override any field with
`--config.<field>=<value>`.
"""

import ml_collections

# (name, source): 8 colour photos and 4 grey ones shipped with scikit-image and scikit-learn.
PHOTOS = (("astronaut", "skimage"), ("coffee", "skimage"), ("chelsea", "skimage"),
          ("rocket", "skimage"), ("immunohistochemistry", "skimage"),
          ("hubble_deep_field", "skimage"), ("china", "sklearn"), ("flower", "sklearn"),
          ("camera", "skimage"), ("coins", "skimage"), ("moon", "skimage"),
          ("clock", "skimage"))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The default experiment, or with arg 'smoke' a seconds-long version of it."""
  if arg not in (None, "", "smoke"):
    raise ValueError(f"jigsaw config argument must be '' or 'smoke', got {arg!r}")
  config = ml_collections.ConfigDict()
  config.photos = tuple(name for name, _ in PHOTOS)  # names from PHOTOS
  config.seeds = (0, 1, 2, 3, 4)  # per seed: a random crop of the photo and a random shuffle
  config.measures = ("prediction", "lpq")  # edge dissimilarities (cnn_jax.priors.jigsaw)
  config.p = 0.3  # (L_p)^q exponents of both measures: Pomeranz et al.'s best (3/10, 1/16)
  config.q = 1 / 16
  # Accuracy against tile count: grids of 28-pixel tiles (18x24 = 432 is Cho et al.'s setting).
  config.count_tile_size = 28
  config.count_grids = ((4, 4), (8, 8), (12, 12), (18, 24))
  # Accuracy against tile size: an 8x8 grid of tiles of these sides (pixels).
  config.size_grid = (8, 8)
  config.tile_sizes = (7, 14, 28, 56)
  # No structure (white noise, the photos' pixels shuffled): these grids of count_tile_size.
  config.noise_grids = ((4, 4), (8, 8))
  config.example_photo = "chelsea"  # the figure of a shuffled photo and its reassembly
  config.example_grid = (18, 24)
  if arg == "smoke":
    config.photos = ("astronaut", "camera")
    config.seeds = (0, 1)
    config.count_grids = ((3, 3), (4, 4))
    config.count_tile_size = 8
    config.size_grid = (3, 3)
    config.tile_sizes = (4, 8)
    config.noise_grids = ((3, 3),)
    config.example_photo = "astronaut"
    config.example_grid = (4, 4)
  return config
