"""Seeds made from ground truth, to check the DSRG segmenter apart from localization.

Each ground-truth region (background included) is eroded by ``--erode`` pixels, so
the seeds miss every object boundary, and a random ``--drop`` fraction of the
remaining pixels is marked unlabelled (255). The segmenter (Huang et al., CVPR 2018,
DSRG) must then grow these seeds back to the boundaries. Written as index PNGs,
the layout the localize stage writes and ``ficklenet-segment seeds=DIR`` reads.

    python experiments/segmenter_sanity/gt_seeds.py --root data/toy-voc \\
        --split train_aug --out runs/gt-seeds/seeds
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ficklenet.data.classes import IGNORE_INDEX, save_index_png
from ficklenet.data.voc import VOCReader


def gt_seeds(mask: np.ndarray, erode: int, drop: float, rng: np.random.Generator) -> np.ndarray:
    """Eroded ground truth with a random ``drop`` fraction of pixels unlabelled."""
    seeds = mask.copy()
    if erode > 0:
        padded = np.pad(mask, erode, mode="edge")
        windows = sliding_window_view(padded, (2 * erode + 1, 2 * erode + 1))
        same = (windows.min(axis=(-1, -2)) == mask) & (windows.max(axis=(-1, -2)) == mask)
        seeds[~same] = IGNORE_INDEX
    seeds[rng.random(mask.shape) < drop] = IGNORE_INDEX
    return seeds


def write_gt_seeds(
    root: str | Path, split: str, out: str | Path, erode: int = 2, drop: float = 0.5, seed: int = 0
) -> Path:
    reader = VOCReader(root, split)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for index, image_id in enumerate(reader.ids):
        mask = reader.mask(image_id)
        if mask is None:
            raise SystemExit(f"{image_id}: no ground truth to make seeds from")
        rng = np.random.default_rng([seed, index])
        save_index_png(gt_seeds(mask, erode, drop, rng), out / f"{image_id}.png")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data/toy-voc")
    parser.add_argument("--split", default="train_aug")
    parser.add_argument("--out", required=True)
    parser.add_argument("--erode", type=int, default=2)
    parser.add_argument("--drop", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = write_gt_seeds(args.root, args.split, args.out, args.erode, args.drop, args.seed)
    print(f"seeds for {args.split} written to {out}")


if __name__ == "__main__":
    main()
