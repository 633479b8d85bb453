"""The experiment sweep of issues 5 and 13 (`python -m experiments.sweep --workdir=<dir>`).

`get_config(arg)`: arg '' (the full CPU sweep, `make sweep`), 'smoke' (every experiment on the
offline digits, a few steps, about 2 minutes: what the tests run) or 'gpu' (the full sweep with
the budget cuts undone, for one GPU). Fields can be overridden with
`--config.<field>=<value>`, e.g. `--config.augmentation.seeds=(0,1,2,3)`.

Budget of the full sweep (target: 2 hours on 2 idle CPU cores, CIFAR-10 not prepared). Estimated
from single-run timings on a loaded machine (2 cores shared by several processes, so likely
pessimistic): a run costs its compilation and metrics (about 20-30 s) plus steps x seconds per
step, the slope measured from two training lengths of the same model (ResNet-20 at half width,
batch 64: 2 epochs 42 s, 4 epochs 61 s, so 0.17 s/step; the small CNN: 16 epochs in 18 s).
Experiment 1 then takes about 90 minutes: 60 runs of mlp / cnn / cnn_blur (about 35 s each),
10 ResNet runs (about 200 s each) and 40 dose-response CNN runs (about 35 s each); the others
add about 20 minutes. Cut to fit: the ResNets ('reduced_models') train without augmentation
only (the circular vs zero padding contrast needs no more); 'gpu' restores their augmentations.
Experiment 1 on the 40 x 40 canvas ('mnist_canvas', budget about 500 s): a 40 x 40 image costs
about 2x a 28 x 28 one, so at 15 epochs a ResNet-20 run takes about 150 s and a CNN run 60 s on
2 idle cores (scaled from the digits' 75 s and 29 s, not measured on the canvas). Cut: 6 epochs,
the ResNets without augmentation only: 10 ResNet runs (about 70 s each) and 10 CNN runs (none,
translate; about 27 s each), about 1,000 s, twice the budget (estimated); 'gpu' trains 15
epochs with every canvas model under both augmentations.
"""

import ml_collections
from ml_collections import config_dict

EXPERIMENT_NAMES = ("equivariance", "augmentation", "learned_invariance", "priors", "depth")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The default sweep, or with arg 'smoke' the smallest one that runs every experiment."""
  if arg not in (None, "", "smoke", "gpu"):
    raise ValueError(f"exp_sweep config argument must be '', 'smoke' or 'gpu', got {arg!r}")
  config = ml_collections.ConfigDict()
  config.experiments = EXPERIMENT_NAMES  # which experiments to run, in this order
  config.batch_size = 64  # examples per training step, every experiment
  config.learning_rate = 0.2  # peak SGD rate per 256 examples (0.05 at batch 64), every run
  config.eval_images = 300  # test images the invariance metrics use (accuracy: all of them)
  config.layer_images = 32  # test images for the per-layer equivariance and Lie derivatives
  # Of every training set, this class-stratified fraction is held out as the validation split
  # the stopping rule is checked on (never the test set).
  config.validation_fraction = 0.1
  config.data_dir = config_dict.placeholder(str)  # TFDS directory of 'cifar10'; None: TFDS's

  # 1. Augmentation x model grid (train, then every metric of cnn_jax.analysis).
  config.augmentation = ml_collections.ConfigDict()
  config.augmentation.seeds = (0, 1, 2, 3, 4)  # one run per seed of every (model, augmentation)
  # 'cifar10' runs only where TFDS's cifar10 is prepared in data_dir (else not planned).
  config.augmentation.datasets = ("mnist_offline", "mnist_canvas", "cifar10")
  config.augmentation.models = ("mlp", "cnn", "cnn_blur", "resnet20", "resnet20_circular")
  config.augmentation.augmentations = ("none", "translate", "rotate", "both")
  # Budget cut (see the module docstring): these models get only the first augmentation.
  config.augmentation.reduced_models = ("resnet20", "resnet20_circular")
  config.augmentation.max_shift = 3  # 'translate': random crop of the 3-pixel zero-padded image
  config.augmentation.max_degrees = 30.0  # 'rotate': angle uniform in [-30, 30] degrees
  # Epochs over the 3,600 digits left after validation; the validation curve (one record per
  # epoch) and its 'plateau gain' show whether that is enough.
  config.augmentation.num_epochs = 15.0
  config.augmentation.cifar10_num_steps = 2000  # on CIFAR-10 (2.6 epochs of 50,000 images)
  # Dose-response (on the digits): these models trained at each translation range (pixels of
  # the random crop) and rotation range (degrees); 0 is the grid's 'none', the grid's own
  # ranges are its 'translate' / 'rotate' runs.
  config.augmentation.dose_models = ("cnn",)
  config.augmentation.translation_ranges = (0, 1, 2, 3, 4, 6)
  config.augmentation.rotation_ranges = (0.0, 15.0, 30.0, 45.0, 90.0, 180.0)
  # The digits on a 40 x 40 canvas (boundary handling): its own grid, the models whose padding
  # differs and the augmentations whose shifts meet the border (see the budget above).
  config.augmentation.canvas = ml_collections.ConfigDict()
  config.augmentation.canvas.models = ("cnn", "resnet20", "resnet20_circular")
  config.augmentation.canvas.augmentations = ("none", "translate")
  # Budget cut: these get only the first augmentation (the padding contrast needs no more).
  config.augmentation.canvas.reduced_models = ("resnet20", "resnet20_circular")
  # Epochs over the canvas's 3,600 training digits (budget cut from 15; see plateau gain).
  config.augmentation.canvas.num_epochs = 6.0
  config.augmentation.consistency_shift = 3  # shifts uniform in [-3, 3] per axis
  config.augmentation.consistency_passes = 2  # passes with fresh shifts
  config.augmentation.translations = (-8, -6, -4, -2, 0, 2, 4, 6, 8)  # pixels, accuracy curve
  config.augmentation.angles = (-180, -135, -90, -60, -30, 0, 30, 60, 90, 135, 180)  # degrees
  config.augmentation.layer_shifts = ((1, 0), (0, 1), (2, 2), (4, 4))  # circular, per layer

  # 2. Learned translation invariance on a canvas (Biscione & Bowers 2021).
  config.learned_invariance = ml_collections.ConfigDict()
  config.learned_invariance.seeds = (0, 1, 2, 3, 4)
  config.learned_invariance.canvas = 40  # side of the black canvas the 28x28 digits sit on
  config.learned_invariance.location_step = 4  # test locations: offsets 0, 4, ..., canvas - 28
  config.learned_invariance.hidden_width = 128  # the dense layer below the classifier head
  config.learned_invariance.pretrain_steps = 600  # digits 0-4 at random canvas locations
  config.learned_invariance.train_steps = 60  # digits 5-9 at the top-left location only

  # 3. Equivariance by construction, at random initialization (no training).
  config.equivariance = ml_collections.ConfigDict()
  config.equivariance.seeds = (0, 1, 2, 3, 4)  # random initializations
  config.equivariance.shifts = ((1, 0), (0, 1), (1, 1), (2, 0), (2, 2), (4, 4), (3, 5))

  # 4. Priors: CNN vs MLP at matched parameter counts, natural vs permuted pixels, data size.
  config.priors = ml_collections.ConfigDict()
  config.priors.seeds = (0, 1, 2, 3, 4)
  config.priors.train_sizes = (500, 4000)  # training digits (class-balanced subsets)
  config.priors.num_steps = 80  # for every training-set size
  config.priors.patch_size = 8  # self-similarity patches, on photos resized to 128 x 128
  config.priors.patch_stride = 4

  # 5. Depth: plain vs residual CIFAR-style networks (widths 8-16-32) of growing depth.
  config.depth = ml_collections.ConfigDict()
  config.depth.seeds = (0, 1, 2, 3, 4)
  config.depth.depths = (8, 20)  # 6n + 2 layers
  config.depth.num_steps = 60
  config.depth.record_every = 4  # steps between loss / gradient-norm records

  if arg == "gpu":
    config.augmentation.reduced_models = ()
    config.augmentation.canvas.reduced_models = ()
    config.augmentation.canvas.num_epochs = 15.0
    config.augmentation.seeds = tuple(range(10))
    config.eval_images = 1000
  if arg == "smoke":
    config.eval_images = 40
    config.layer_images = 8
    config.augmentation.seeds = (0,)
    # The same runs on every machine; the canvas's run is a slow test (its compilation).
    config.augmentation.datasets = ("mnist_offline",)
    config.augmentation.models = ("cnn",)
    config.augmentation.augmentations = ("both",)
    config.augmentation.num_epochs = 0.08  # 5 steps
    config.augmentation.cifar10_num_steps = 4
    config.augmentation.translations = (-4, 0, 4)
    config.augmentation.angles = (-90, 0, 90)
    config.augmentation.consistency_passes = 1
    config.augmentation.dose_models = ()  # the dose-response's report is tested on fixtures
    config.augmentation.layer_shifts = ((1, 0), (2, 2))
    config.learned_invariance.seeds = (0,)
    config.learned_invariance.canvas = 32
    config.learned_invariance.hidden_width = 16
    config.learned_invariance.pretrain_steps = 4
    config.learned_invariance.train_steps = 4
    config.equivariance.seeds = (0,)
    config.equivariance.shifts = ((1, 0), (2, 2))
    config.priors.seeds = (0,)
    config.priors.train_sizes = (200,)
    config.priors.num_steps = 4
    config.depth.seeds = (0,)
    config.depth.depths = (8,)
    config.depth.num_steps = 4
    config.depth.record_every = 2
  return config
