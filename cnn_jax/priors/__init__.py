"""The seed notes' image priors made concrete: structure (the jigsaw solver) and self-similarity
(PatchMatch nearest-neighbour fields and hole filling by patch voting)."""

from cnn_jax.priors.inpaint import border_mean_fill, complete_hole, harmonic_fill
from cnn_jax.priors.patchmatch import (NearestNeighbourField, exact_nearest_neighbours,
                                       image_patches, nearest_neighbour_field)
