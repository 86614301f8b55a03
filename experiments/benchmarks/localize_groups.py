"""The localize stage with images one at a time against groups of them.

``ficklenet-localize`` works on groups of ``localize.batch_size`` consecutive ids:
equal-size images share a backbone pass, and with ``gradcam`` the N maps of as
many images as ``localize.memory_mb`` holds are made in two batched products
(docs/design.md, "Multi-process"). This runs the real command once per batch size
on the same classifier and images, each into a fresh directory, and reports the
stage's images/s (``metrics.json``) and how its outputs compare with the first
batch size's: the largest map difference (the maps are stored as float16) and the
share of seed pixels that agree.

    python experiments/benchmarks/localize_groups.py \\
        --ckpt runs/pipeline/toy/classify/checkpoints/last.ckpt --root data/toy-voc

Options after ``--`` go to every run (e.g. ``-- localize.formula=grad_x_act``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ficklenet.data.voc import read_label_png
from ficklenet.localization.quality import load_maps


def localize(ckpt: str, root: str, batch_size: int, run: Path, extra: list[str]) -> dict:
    command = [
        str(Path(sys.executable).parent / "ficklenet-localize"),
        f"classifier.ckpt={ckpt}",
        f"data.root={root}",
        "data.make_toy_if_missing=false",
        "trainer.enable_progress_bar=false",
        "localize.overlays=0",
        f"localize.batch_size={batch_size}",
        f"hydra.run.dir={run}",
        *extra,
    ]
    subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ.copy())
    return json.loads((run / "metrics.json").read_text())


def compare(run: Path, reference: Path) -> tuple[float, float]:
    """(largest |Δ| of the maps, share of equal seed pixels) against ``reference``."""
    worst, equal, total = 0.0, 0, 0
    for path in sorted((reference / "maps").glob("*.npz")):
        ref_maps, _ = load_maps(path)
        maps, _ = load_maps(run / "maps" / path.name)
        worst = max(worst, float(np.abs(maps - ref_maps).max()))
        ref_seeds = read_label_png(reference / "seeds" / f"{path.stem}.png")
        seeds = read_label_png(run / "seeds" / f"{path.stem}.png")
        equal += int((seeds == ref_seeds).sum())
        total += seeds.size
    return worst, equal / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a classify run's checkpoints/last.ckpt")
    parser.add_argument("--root", required=True, help="the dataset root (toy or VOC layout)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--limit", type=int, default=160, help="first ids of the split")
    parser.add_argument("extra", nargs="*", help="more overrides for every run")
    args = parser.parse_args()
    extra = [f"localize.limit={args.limit}", *args.extra]
    print(f"$ python {' '.join(sys.argv)}\n")
    print("| localize.batch_size | images/s | seed mIoU | max map |Δ| | seed pixels equal |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for i, size in enumerate(args.batch_sizes):  # a size may repeat (noise)
            run = Path(tmp) / f"{i}-b{size}"
            metrics = localize(args.ckpt, args.root, size, run, extra)
            runs.append(run)
            worst, agree = compare(run, runs[0])
            print(
                f"| {size} | {metrics['images_per_second']:.1f} | "
                f"{metrics.get('seed/miou', float('nan')):.4f} | {worst:.2g} | {agree:.4%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
