"""Stage 2: localization maps from FickleNet's stochastic inference, and seeds.

- :mod:`~ficklenet.localization.maps`: the N stochastic maps in closed form
  (:func:`stochastic_maps` for given masks, :func:`sample_maps` to draw them,
  :func:`sample_maps_many` for several images).
- :mod:`~ficklenet.localization.aggregation`: max-normalisation, union/mean,
  multi-scale and flip.
- :mod:`~ficklenet.localization.seeds`: seeds (SEC's rule) and the dense CAM
  labelling.
"""

from ficklenet.choices import Aggregate, Formula
from ficklenet.localization.aggregation import (
    AGGREGATES,
    combine_maps,
    combine_scales,
    normalize_maps,
)
from ficklenet.localization.maps import FORMULAS, sample_maps, sample_maps_many, stochastic_maps
from ficklenet.localization.seeds import cam_labels, make_seeds

__all__ = [
    "AGGREGATES",
    "FORMULAS",
    "Aggregate",
    "Formula",
    "cam_labels",
    "combine_maps",
    "combine_scales",
    "make_seeds",
    "normalize_maps",
    "sample_maps",
    "sample_maps_many",
    "stochastic_maps",
]
