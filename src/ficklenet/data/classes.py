"""PASCAL VOC 2012 class names, the VOC colour palette, and index-mask PNG writers.

Conventions (docs/method.md; VOC's development kit): label index 0 is
background, 1..20 are the VOC object classes in the order of the VOC devkit, and 255
is "void" (object borders, difficult objects), ignored by every loss and metric.
Image-level label vectors have 20 entries: position ``c - 1`` holds class ``c``.

VOC's ``SegmentationClass`` PNGs are palette images whose *indices* are the labels;
the colours come from the devkit's bit-interleaving palette reproduced by
:func:`voc_palette`, so predictions saved with :func:`save_palette_png` open in any
viewer with the same colours as the ground truth.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

#: The 20 VOC object classes, in devkit order; class ``c`` (1..20) is ``VOC_CLASSES[c - 1]``.
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

#: Names indexed by label value: ``CLASS_NAMES[0] == "background"``, 1..20 the objects.
CLASS_NAMES: tuple[str, ...] = ("background", *VOC_CLASSES)

#: Number of foreground classes (length of an image-level label vector).
NUM_CLASSES: int = 20

#: Label value of void / unlabelled pixels in masks and seeds: the one definition of
#: 255 (every loss, metric, seed writer and reader imports it from here).
IGNORE_INDEX: int = 255

#: Object name (as written in VOC XML) -> label index 1..20.
CLASS_TO_INDEX: dict[str, int] = {name: i for i, name in enumerate(VOC_CLASSES, start=1)}


def voc_palette(num_entries: int = 256) -> list[int]:
    """Return the VOC devkit colour palette as a flat ``[r0, g0, b0, r1, ...]`` list.

    Entry ``i`` spreads the bits of ``i`` over the three channels, most significant
    bit first (the devkit's ``labelcolormap``), so 0 is black, 1 dark red,
    15 (person) pink-ish, and 255 (void) the cream ``(224, 224, 192)``.
    The list has ``3 * num_entries`` items, the form ``PIL.Image.putpalette`` takes.
    """
    return list(_palette(num_entries))


@lru_cache(maxsize=4)
def _palette(num_entries: int) -> tuple[int, ...]:
    palette: list[int] = []
    for i in range(num_entries):
        r = g = b = 0
        cid = i
        for bit in range(8):
            r |= ((cid >> 0) & 1) << (7 - bit)
            g |= ((cid >> 1) & 1) << (7 - bit)
            b |= ((cid >> 2) & 1) << (7 - bit)
            cid >>= 3
        palette.extend((r, g, b))
    return tuple(palette)


def palette_array() -> np.ndarray:
    """The VOC palette as a ``(256, 3)`` uint8 array, for colouring masks with numpy."""
    return np.asarray(voc_palette(256), dtype=np.uint8).reshape(256, 3)


def colorize(mask: np.ndarray) -> np.ndarray:
    """Colour an index mask ``(H, W)`` with the VOC palette; returns uint8 ``(H, W, 3)``."""
    return palette_array()[_as_index_mask(mask)]


def save_palette_png(mask: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Save an index mask as a VOC-style palette PNG (mode ``"P"``).

    The pixel values are the labels themselves (0..20, 255 void); the palette only
    decides how they look.  This is the format of VOC's ``SegmentationClass``.
    """
    path = Path(path)
    img = Image.fromarray(_as_index_mask(mask), mode="P")
    img.putpalette(voc_palette(256))
    img.save(path, format="PNG")
    return path


def save_index_png(mask: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Save an index mask as a plain 8-bit grayscale PNG (mode ``"L"``, no palette).

    This is the format of SBD's ``SegmentationClassAug`` and of cached seeds: the
    values are the labels, so the file looks almost black in an image viewer.
    """
    path = Path(path)
    Image.fromarray(_as_index_mask(mask), mode="L").save(path, format="PNG")
    return path


def _as_index_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"an index mask must be 2-D (H, W), got shape {mask.shape}")
    if mask.dtype != np.uint8:
        # Refuse silently wrapping values such as 256 or -1 into the uint8 range.
        if mask.size and (mask.min() < 0 or mask.max() > 255):
            raise ValueError(
                f"index mask values must lie in 0..255, got {mask.min()}..{mask.max()}"
            )
        mask = mask.astype(np.uint8)
    return np.ascontiguousarray(mask)
