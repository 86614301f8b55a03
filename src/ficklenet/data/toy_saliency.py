"""Saliency maps for the toy dataset that fail the way a classical detector does.

FickleNet (Lee et al., CVPR 2019, Sec. 4.1) and DSRG (Huang et al., CVPR 2018,
Sec. 4.1) take their background seeds from DRFI saliency maps (Jiang et al., CVPR
2013), a pre-deep detector. On natural images such a detector misses some objects,
covers others only in part, gives objects uneven levels, fires on salient clutter,
blurs edges and is noisy; on PASCAL-S it reaches a max F-β of about 0.7 with an MAE
of about 0.2 (figures recalled from the salient-object benchmarks of the time, not
verified). A map equal to the object mask would give every object's extent away
and leave the classifier's maps only the class to decide, so the toy writes maps
with those failures, at a chosen :class:`SaliencyLevel`:

- ``perfect``: the object pixels, 1 on every object, 0 elsewhere (the answer key,
  kept as the upper end of the axis);
- ``good``, ``realistic`` (the default), ``poor``: the same failures at growing
  rates and strengths;
- ``none``: no saliency maps at all.

Every level draws the same random numbers for an image (its own generator), and a
failure happens when a draw falls below the level's rate, so a harsher level keeps
the failures of a milder one and adds others. ``docs/method.md`` ("Saliency on the
proving ground") gives each level's measured max F-β and MAE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from ficklenet.choices import SaliencyQuality

__all__ = ["SALIENCY_LEVELS", "SaliencyLevel", "SaliencyQuality", "render_saliency"]


# Candidate clutter blobs drawn per image; a level keeps the first ones its rate allows.
_MAX_CLUTTER = 6


@dataclass(frozen=True)
class SaliencyLevel:
    """How often and how badly the synthetic detector fails (module docstring).

    Attributes:
        miss: probability that an object is missed: it gets a level of at most
            ``missed_level`` (weakly salient) instead of ``[low, 1]``.
        missed_level: the highest level a missed object can get.
        partial: probability that an object is salient only in part: its level
            fades to zero across it from a random side.
        low: an object's level is drawn from ``[low, 1]`` (uneven between objects).
        clutter: expected number of salient blobs that are no object, per image.
        blur: Gaussian blur radius as a fraction of the image side (bleeding edges).
        haze: amplitude of a smooth field added everywhere (background that is
            somewhat salient, objects that are not quite 1).
        noise: standard deviation of per-pixel noise, in [0, 1] units.
    """

    name: SaliencyQuality
    miss: float = 0.0
    missed_level: float = 0.0
    partial: float = 0.0
    low: float = 1.0
    clutter: float = 0.0
    blur: float = 0.0
    haze: float = 0.0
    noise: float = 0.0

    @property
    def writes_maps(self) -> bool:
        return self.name is not SaliencyQuality.none


#: The named levels, mildest first. The default, ``realistic``, was set so that its
#: max F-β and MAE on the toy match a classical detector's on natural images (module
#: docstring); the others bracket it.
SALIENCY_LEVELS: dict[SaliencyQuality, SaliencyLevel] = {
    level.name: level
    for level in (
        SaliencyLevel(SaliencyQuality.perfect),
        SaliencyLevel(
            SaliencyQuality.good,
            miss=0.08,
            missed_level=0.35,
            partial=0.2,
            low=0.7,
            clutter=0.6,
            blur=1 / 40,
            haze=0.12,
            noise=0.04,
        ),
        SaliencyLevel(
            SaliencyQuality.realistic,
            miss=0.2,
            missed_level=0.35,
            partial=0.5,
            low=0.5,
            clutter=1.5,
            blur=1 / 24,
            haze=0.1,
            noise=0.05,
        ),
        SaliencyLevel(
            SaliencyQuality.poor,
            miss=0.35,
            missed_level=0.35,
            partial=0.6,
            low=0.35,
            clutter=3.0,
            blur=1 / 16,
            haze=0.4,
            noise=0.08,
        ),
        SaliencyLevel(SaliencyQuality.none),
    )
}


def render_saliency(
    level: SaliencyLevel, rng: np.random.Generator, objects: Sequence[np.ndarray]
) -> np.ndarray:
    """The saliency map (H, W) uint8 of an image whose objects cover ``objects``
    (bool masks, painted in order: a later object covers an earlier one).

    ``rng`` is the image's own generator; every level draws the same numbers from
    it, in the same order, so levels differ only in which draws count as failures.
    """
    if not objects:
        raise ValueError("render_saliency needs the object masks of the image")
    size = objects[0].shape[0]
    yy, xx = np.mgrid[0 : objects[0].shape[0], 0 : objects[0].shape[1]].astype(np.float32)
    sal = np.zeros(objects[0].shape, dtype=np.float32)
    for body in objects:
        u_miss, u_level, u_partial = rng.random(3)
        missed_draw = rng.random()
        side, cut = rng.uniform(0, 2 * np.pi), rng.uniform(0.25, 0.65)
        if u_miss < level.miss:
            value = level.missed_level * missed_draw
        else:
            value = level.low + (1.0 - level.low) * u_level
        if u_partial < level.partial:
            value = value * _fade(body, yy, xx, side, cut)
        sal[body] = value if np.isscalar(value) else value[body]

    blobs = rng.random(_MAX_CLUTTER)
    shapes = rng.uniform(0, 1, (_MAX_CLUTTER, 5))
    for k in range(_MAX_CLUTTER):
        if blobs[k] >= level.clutter / _MAX_CLUTTER:
            continue
        cy, cx = shapes[k, 0] * size, shapes[k, 1] * size
        ry, rx = (0.04 + 0.1 * shapes[k, 2:4]) * size
        blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        sal[blob] = np.maximum(sal[blob], 0.4 + 0.5 * shapes[k, 4])

    haze_grid = rng.random((4, 4))
    noise = rng.normal(0.0, 1.0, sal.shape).astype(np.float32)
    if level.blur > 0:
        img = Image.fromarray(_to_uint8(sal)).filter(ImageFilter.GaussianBlur(level.blur * size))
        sal = np.asarray(img, dtype=np.float32) / 255.0
    if level.haze > 0:
        field = Image.fromarray(haze_grid.astype(np.float32))
        smooth = field.resize(sal.shape[::-1], Image.Resampling.BILINEAR)
        sal = sal + level.haze * np.asarray(smooth)
    sal = sal + level.noise * noise
    return _to_uint8(sal)


def _to_uint8(sal: np.ndarray) -> np.ndarray:
    return (np.clip(sal, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def _fade(body: np.ndarray, yy: np.ndarray, xx: np.ndarray, side: float, cut: float) -> np.ndarray:
    """A factor in [0, 1] over the image: 0 on the ``cut`` fraction of the body
    seen from direction ``side``, rising to 1 over the next 30 % of it."""
    proj = xx * np.cos(side) + yy * np.sin(side)
    inside = proj[body]
    lo, hi = float(inside.min()), float(inside.max())
    t = (proj - lo) / max(hi - lo, 1e-6)
    return np.clip((t - cut) / 0.3, 0.0, 1.0)
