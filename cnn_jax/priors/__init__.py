"""The seed notes' image priors made concrete: a jigsaw solver and PatchMatch.

The notes argue that images have structure ("rearrange the pieces so that they are close to the
ones with the lower jump in colour"; "images that are completely random don't have a structure")
and are self-similar (PatchMatch fills a hole with patches of the image itself). Each module here
turns one of those claims into pure array functions that an experiment can measure.

* `jigsaw`: cut an image into square tiles, shuffle them, score every ordered pair of tiles in the
  four directions from the colour jump across their shared edge, and reassemble them greedily
  (Pomeranz et al. 2011); the literature's direct and neighbour comparisons.
* `patchmatch`: the randomized nearest-neighbour field of Barnes et al. 2009 (random start,
  jump-flooding propagation, random search) and the exact field through correlation.
* `inpaint`: hole filling by patch voting, coarse to fine (Wexler et al. 2007), and the
  border-mean and harmonic baselines.
"""

from cnn_jax.priors.inpaint import border_mean_fill, complete_hole, harmonic_fill
from cnn_jax.priors.jigsaw import (DIRECTIONS, MEASURES, assemble_tiles, best_buddies,
                                   buddy_estimate, chance_levels, compatibility, cut_tiles,
                                   direct_comparison, edge_dissimilarity, neighbour_comparison,
                                   place_greedily, shuffle_tiles, solve_jigsaw)
from cnn_jax.priors.patchmatch import (NearestNeighbourField, exact_nearest_neighbours,
                                       image_patches, nearest_neighbour_field)

__all__ = [
    "DIRECTIONS", "MEASURES", "assemble_tiles", "best_buddies", "buddy_estimate",
    "chance_levels", "compatibility", "cut_tiles", "direct_comparison", "edge_dissimilarity",
    "neighbour_comparison", "place_greedily", "shuffle_tiles", "solve_jigsaw",
    "NearestNeighbourField", "border_mean_fill", "complete_hole", "exact_nearest_neighbours",
    "harmonic_fill", "image_patches", "nearest_neighbour_field",
]
