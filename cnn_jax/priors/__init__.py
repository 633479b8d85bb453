"""The seed notes' image priors made concrete: a jigsaw solver and PatchMatch.

The notes argue that images have structure ("rearrange the pieces so that they are close to the
ones with the lower jump in colour"; "images that are completely random don't have a structure")
and are self-similar (PatchMatch fills a hole with patches of the image itself). Each module here
turns one of those claims into pure array functions that an experiment can measure.

* `jigsaw`: cut an image into square tiles, shuffle them, score every ordered pair of tiles in the
  four directions from the colour jump across their shared edge, and reassemble them greedily
  (Pomeranz et al. 2011); the literature's direct and neighbour comparisons.
"""

from cnn_jax.priors.jigsaw import (DIRECTIONS, MEASURES, assemble_tiles, best_buddies,
                                   buddy_estimate, chance_levels, compatibility, cut_tiles,
                                   direct_comparison, edge_dissimilarity, neighbour_comparison,
                                   place_greedily, shuffle_tiles, solve_jigsaw)

__all__ = [
    "DIRECTIONS", "MEASURES", "assemble_tiles", "best_buddies", "buddy_estimate",
    "chance_levels", "compatibility", "cut_tiles", "direct_comparison", "edge_dissimilarity",
    "neighbour_comparison", "place_greedily", "shuffle_tiles", "solve_jigsaw",
]
