"""Seeds for DSRG from aggregated localization maps, and the dense CAM labelling.

The seed rule follows SEC (Kolesnikov & Lampert, ECCV 2016, "Seed, Expand and
Constrain"; its localization cues), as FickleNet (Lee et al., CVPR 2019,
Sec. 3.3) and DSRG (Huang et al., CVPR 2018) use it — see ``docs/method.md``,
"Localization maps and seeds":

- a pixel claims class ``c`` when its score, normalised by the class's maximum,
  is at least ``fg_threshold`` (SEC: 0.2 × max);
- it claims background when the saliency map is below ``saliency_threshold``
  (when a saliency map is given — FickleNet and DSRG used DRFI), otherwise when
  every present class's normalised score is below ``bg_threshold``;
- a pixel with exactly one claim gets it; a pixel with none, or with two or
  more (two classes, or a class and background), is unlabelled (255).

Labels are palette indices: 0 background, 1..20 the VOC classes, 255 unlabelled.

Defaults and where they come from:

- ``fg_threshold = 0.2``: [code, SEC] 20 % of each class's maximum.
- ``bg_threshold = 0.05``: [recalled] the background confidence threshold of
  IRN's CAM-to-label step (Ahn et al., CVPR 2019); to be chosen by measurement
  on VOC ``train`` with the CAM mIoU sweep (:func:`cam_labels`).
- ``saliency_threshold = 0.1``: placeholder (saliency in [0, 1]); to be chosen
  by measurement on VOC ``train`` when saliency maps are used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ficklenet.data.classes import IGNORE_INDEX
from ficklenet.localization.aggregation import normalize_maps

FG_THRESHOLD = 0.2
BG_THRESHOLD = 0.05
SALIENCY_THRESHOLD = 0.1

__all__ = [
    "BG_THRESHOLD",
    "FG_THRESHOLD",
    "SALIENCY_THRESHOLD",
    "cam_labels",
    "make_seeds",
]


def _scores(
    maps: Tensor | np.ndarray, classes: Sequence[int], image_shape: tuple[int, int] | None
) -> Tensor:
    """Maps as float64 (K, H, W) at ``image_shape``, each divided by its maximum."""
    m = torch.as_tensor(np.asarray(maps) if not isinstance(maps, Tensor) else maps)
    m = m.detach().to("cpu", torch.float64)
    if m.dim() != 3:
        raise ValueError(f"maps must be (K, h, w), got {tuple(m.shape)}")
    if m.shape[0] != len(classes):
        raise ValueError(f"{m.shape[0]} maps but {len(classes)} classes")
    bad = [c for c in classes if not 1 <= int(c) < IGNORE_INDEX]
    if bad:
        raise ValueError(f"classes must be palette labels 1..254 (head output + 1), got {bad}")
    if image_shape is not None and tuple(image_shape) != tuple(m.shape[1:]):
        m = F.interpolate(m[None], size=tuple(image_shape), mode="bilinear", align_corners=False)
        m = m[0]
    return normalize_maps(m.clamp_min(0))


def make_seeds(
    maps: Tensor | np.ndarray,
    classes: Sequence[int],
    fg_threshold: float = FG_THRESHOLD,
    bg_threshold: float = BG_THRESHOLD,
    saliency: Tensor | np.ndarray | None = None,
    saliency_threshold: float = SALIENCY_THRESHOLD,
    image_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Seed labels (H, W) uint8 from aggregated maps (rule in the module docstring).

    Args:
        maps: (K, h, w) aggregated maps of the image's classes, non-negative.
            Each is divided by its own maximum here (no-op if already done).
        classes: palette label (1..20, i.e. head output + 1) of each map.
        fg_threshold: a class claims pixels scoring ≥ this fraction of its max.
        bg_threshold: without saliency, background claims pixels where every
            class scores below this (normalised).
        saliency: optional (H, W) saliency in [0, 1] (uint8 is divided by 255)
            at the output size; background then claims saliency < ``saliency_threshold``
            and ``bg_threshold`` is not used.
        saliency_threshold: see ``saliency``.
        image_shape: (H, W) to resize the maps to (bilinear) first; default
            the maps' own size.

    Returns:
        uint8 (H, W): 0 background, class labels, 255 unlabelled.
    """
    scores = _scores(maps, classes, image_shape)
    k, h, w = scores.shape
    fg = scores >= fg_threshold  # (K, H, W)
    if saliency is not None:
        sal = _as_saliency(saliency)
        if tuple(sal.shape) != (h, w):
            raise ValueError(f"saliency is {tuple(sal.shape)} but the seeds are {(h, w)}")
        bg = sal < saliency_threshold
    elif k:
        bg = (scores < bg_threshold).all(0)
    else:
        bg = torch.ones(h, w, dtype=torch.bool)
    claims = fg.sum(0) + bg
    labels = torch.as_tensor([int(c) for c in classes], dtype=torch.int64)
    single_fg = labels[fg.to(torch.int64).argmax(0)] if k else torch.zeros(h, w, dtype=torch.int64)
    seeds = torch.full((h, w), IGNORE_INDEX, dtype=torch.int64)
    one = claims == 1
    seeds[one] = torch.where(bg, 0, single_fg)[one]
    return seeds.numpy().astype(np.uint8)


def cam_labels(
    maps: Tensor | np.ndarray,
    classes: Sequence[int],
    bg_threshold: float = BG_THRESHOLD,
    image_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Dense CAM labelling (H, W) uint8: every pixel labelled, none 255.

    The class with the highest normalised score (ties: the first in
    ``classes``), or background (0) where every class scores below
    ``bg_threshold``. Sweeping ``bg_threshold`` gives the "CAM mIoU" curve.
    """
    scores = _scores(maps, classes, image_shape)
    k, h, w = scores.shape
    if not k:
        return np.zeros((h, w), np.uint8)
    labels = torch.as_tensor([int(c) for c in classes], dtype=torch.int64)
    best, arg = scores.max(0)
    out = torch.where(best < bg_threshold, 0, labels[arg])
    return out.numpy().astype(np.uint8)


def _as_saliency(saliency: Tensor | np.ndarray) -> Tensor:
    sal = torch.as_tensor(np.asarray(saliency) if not isinstance(saliency, Tensor) else saliency)
    if sal.dim() != 2:
        raise ValueError(f"saliency must be (H, W), got {tuple(sal.shape)}")
    if sal.dtype == torch.uint8:
        return sal.to(torch.float64) / 255.0
    return sal.detach().to("cpu", torch.float64)
