"""Pictures people would rather look at than read: heat maps of localization
maps, palette-coloured seeds and predictions over the image, side by side."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ficklenet.data.classes import IGNORE_INDEX, colorize
from ficklenet.files import atomic_path


def heatmap(score: np.ndarray) -> np.ndarray:
    """A [0, 1] map as an RGB uint8 heat map (black → red → yellow → white)."""
    s = np.clip(np.nan_to_num(score.astype(np.float32)), 0.0, 1.0)
    r = np.clip(3 * s, 0, 1)
    g = np.clip(3 * s - 1, 0, 1)
    b = np.clip(3 * s - 2, 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def blend(image: np.ndarray, overlay: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``image`` and ``overlay`` (both uint8 (H, W, 3)) mixed with weight alpha."""
    mixed = (1 - alpha) * image.astype(np.float32) + alpha * overlay.astype(np.float32)
    return mixed.clip(0, 255).astype(np.uint8)


def label_overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Palette-coloured labels over the image; 255 (unlabelled/void) shows the image."""
    out = blend(image, colorize(labels), alpha)
    void = labels == IGNORE_INDEX
    out[void] = image[void]
    return out


def map_overlay(image: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """The per-pixel maximum of class maps (K, H, W) as a heat map over the image."""
    score = maps.max(axis=0) if maps.size else np.zeros(image.shape[:2], np.float32)
    return blend(image, heatmap(score), 0.6)


def side_by_side(panels: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Equally tall RGB images in one uint8 row with white gaps (shorter ones padded
    at the bottom)."""
    h = max(p.shape[0] for p in panels)
    spacer = np.full((h, gap, 3), 255, np.uint8)
    row: list[np.ndarray] = []
    for p in panels:
        if p.shape[0] < h:
            p = np.pad(p, ((0, h - p.shape[0]), (0, 0), (0, 0)), constant_values=255)
        row += [p, spacer]
    return np.ascontiguousarray(np.concatenate(row[:-1], axis=1))


def save_panel(panels: list[np.ndarray], path: str | os.PathLike[str], gap: int = 4) -> Path:
    """Save equally tall RGB images side by side (white gaps), atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(side_by_side(panels, gap)).save(tmp, format="PNG")
    return Path(path)
