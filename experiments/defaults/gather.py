"""Tabulate the defaults study (``run.sh``): what was chosen on ``train``, and why.

    python experiments/defaults/gather.py [RUNS_DIR]

Reads ``RUNS_DIR`` (default ``runs/defaults``): the three classifiers, the seeds of
each (classifier, formula) and the DSRG segmenter trained on them, and writes
``results.md`` beside this file. Only ``train`` figures choose: the segmenter's
predictions on ``train`` (``train/miou``), the seeds' scores on ``train``. (Segment
runs before 8f5ea72 named the first ``train/pred_miou``; none are kept.) The
``val`` column is shown for the record, never used to choose.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ficklenet.metric_names import CAM_OBJECT_RECALL, SEED, TRAIN_MIOU, VAL_MAP, VAL_MIOU

HERE = Path(__file__).resolve().parent
CLASSIFIERS = {
    "p0": "deterministic (p=0)",
    "p9c": "FickleNet p=0.9, centre scaled",
    "p9n": "FickleNet p=0.9, centre not scaled",
}
FORMULAS = ("gradcam", "grad_x_act")


def read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def main() -> None:
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/defaults")
    chosen = read(runs / "thresholds.json").get("chosen", {})
    lines = [
        "# Defaults chosen on train",
        "",
        f"Seed thresholds (coverage-aware seed mIoU on train, all six map sets): "
        f"fg {chosen.get('fg')}, bg {chosen.get('bg')}.",
        "",
        "| classifier | val mAP | formula | seed mIoU (train) | seed precision | seed labelled "
        "| CAM object recall | DSRG train mIoU (chooses) | DSRG val mIoU (not used) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, label in CLASSIFIERS.items():
        cls = read(runs / f"cls_{key}" / "metrics.json")
        for formula in FORMULAS:
            seeds = read(runs / f"seeds_{key}_{formula}" / "metrics.json")
            seg = read(runs / f"seg_{key}_{formula}" / "metrics.json")
            cells = [
                label,
                pct(cls.get(VAL_MAP)),
                formula,
                *(pct(seeds.get(k)) for k in (SEED.miou, SEED.precision)),
                *(pct(seeds.get(k)) for k in (SEED.labelled_fraction, CAM_OBJECT_RECALL)),
                pct(seg.get(TRAIN_MIOU)),
                pct(seg.get(VAL_MIOU)),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (HERE / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
