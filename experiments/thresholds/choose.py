"""Choose the seed thresholds on ``train`` from localize runs' stored maps.

    python experiments/thresholds/choose.py runs/.../localize [more localize runs] \\
        [--split train] [--fg 0.2 0.3 ...] [--bg 0.05 0.1 ...]

For every (fg, bg) pair the seeds of each run's stored maps (``maps/<id>.npz``) are
remade with :func:`ficklenet.localization.make_seeds` on the ids of ``--split`` that
have ground truth, and scored two ways by :mod:`ficklenet.metrics`: the seed mIoU
over labelled pixels (what ``ficklenet-localize`` reports), and the *coverage-aware*
seed mIoU (:func:`~ficklenet.metrics.coverage_miou`) in which an unlabelled pixel
counts as a miss of its true class. The first rises as seeds get
fewer and surer; the second also asks for coverage, which DSRG needs to grow from,
so it is the criterion: the pair with the best coverage-aware mIoU averaged over the
given runs is printed (and written to ``--json``). Give runs of different
classifiers (deterministic and FickleNet) so that the choice favours none of them,
and choose on ``train``: the figures the ladder reports are on ``val``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from ficklenet.data.classes import NUM_CLASSES
from ficklenet.data.voc import VOCReader
from ficklenet.localization import make_seeds
from ficklenet.localization.quality import load_maps
from ficklenet.metrics import (
    confusion_matrix,
    coverage_miou,
    covered_confusion,
    miou_from_confusion,
)

#: Background and the VOC object classes.
K = NUM_CLASSES + 1


def score(runs: list[Path], split: str, fg: float, bg: float) -> tuple[float, float]:
    """(mean seed mIoU over labelled pixels, mean coverage-aware mIoU) over the runs."""
    labelled, covered = [], []
    for run in runs:
        cfg_root = OmegaConf.load(run / "config.yaml").data.root
        reader = VOCReader(cfg_root, split)
        cm_l = np.zeros((K, K), np.int64)
        cm_c = np.zeros((K, K + 1), np.int64)
        for image_id in reader.ids:
            if not reader.has_mask(image_id):
                continue
            path = run / "maps" / f"{image_id}.npz"
            if not path.is_file():
                continue
            maps, classes = load_maps(path)
            truth = reader.mask(image_id)
            seeds = make_seeds(maps, classes, fg_threshold=fg, bg_threshold=bg)
            cm_l += confusion_matrix(seeds, truth, K)
            cm_c += covered_confusion(seeds, truth, K)
        labelled.append(miou_from_confusion(cm_l)[0])
        covered.append(coverage_miou(cm_c))
    return float(np.mean(labelled)), float(np.mean(covered))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="localize run directories")
    parser.add_argument("--split", default="train")
    parser.add_argument("--fg", nargs="*", type=float, default=[0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    parser.add_argument("--bg", nargs="*", type=float, default=[0.05, 0.1, 0.2, 0.3])
    parser.add_argument("--json", type=Path, help="write the table and the choice here")
    args = parser.parse_args()
    table = []
    print("| fg | bg | seed mIoU (labelled px) | coverage-aware seed mIoU |\n|---|---|---|---|")
    for fg in args.fg:
        for bg in args.bg:
            if bg >= fg:
                continue
            labelled, covered = score(args.runs, args.split, fg, bg)
            table.append({"fg": fg, "bg": bg, "labelled_miou": labelled, "covered_miou": covered})
            print(f"| {fg} | {bg} | {100 * labelled:.1f} | {100 * covered:.1f} |", flush=True)
    best = max(table, key=lambda r: r["covered_miou"])
    print(f"\nchosen on {args.split}: fg_threshold={best['fg']} bg_threshold={best['bg']}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "runs": [str(r) for r in args.runs],
                    "split": args.split,
                    "table": table,
                    "chosen": best,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
