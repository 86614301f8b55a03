"""Reading the run folders the studies of ``experiments/`` lay out, and writing their
results: the figures every study reports, where each stage's ``metrics.json`` keeps
them, and the labels of the classifier rows (the paper's Table 5 rows, ``conf/table5``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ficklenet.files import atomic_path
from ficklenet.metric_names import (
    CAM_BEST_MIOU,
    CAM_OBJECT_RECALL,
    GROWN_SEED,
    MIOU,
    SEED,
    TRAIN_MIOU,
    VAL_MAP,
)

# (name, stage, key) of every figure, fractions in [0, 1], the keys those of
# ficklenet.metric_names. Seed and CAM figures come from the val localization
# (localize_val), which chose no threshold.
WEAK_FIGURES: list[tuple[str, str, str]] = [
    ("classifier mAP", "classify", VAL_MAP),
    ("seed mIoU", "localize_val", SEED.miou),
    ("seed precision", "localize_val", SEED.precision),
    ("seed recall", "localize_val", SEED.recall),
    ("seed labelled", "localize_val", SEED.labelled_fraction),
    ("CAM mIoU", "localize_val", CAM_BEST_MIOU),
    ("CAM object recall", "localize_val", CAM_OBJECT_RECALL),
    ("segmenter mIoU", "evaluate", MIOU),
    ("segmenter mIoU + CRF", "evaluate_crf", MIOU),
]
# What DSRG's growing did, on train at the end of training (ficklenet.tasks.seed_growth).
GROWTH_FIGURES: list[tuple[str, str, str]] = [
    ("seeds mIoU", "segment", SEED.miou),
    ("seeds precision", "segment", SEED.precision),
    ("seeds labelled", "segment", SEED.labelled_fraction),
    ("grown mIoU", "segment", GROWN_SEED.miou),
    ("grown precision", "segment", GROWN_SEED.precision),
    ("grown labelled", "segment", GROWN_SEED.labelled_fraction),
    ("prediction mIoU (train)", "segment", TRAIN_MIOU),
]
# The seeds of train, thresholded as chosen (the pipeline's own localize stage).
TRAIN_FIGURES: list[tuple[str, str, str]] = [("seed mIoU (train)", "localize", SEED.miou)]
ALL_FIGURES = WEAK_FIGURES + GROWTH_FIGURES + TRAIN_FIGURES
# The columns of a study's table of whole pipelines, one row each (other_toy,
# window_evidence): WEAK_FIGURES but the seed recall and the CAM mIoU.
TABLE_FIGURES: list[str] = [
    name for name, _, _ in WEAK_FIGURES if name not in ("seed recall", "CAM mIoU")
]

ROW_LABELS: dict[str, str] = {
    "supervised": "fully supervised (ceiling)",
    "gt_seeds": "DSRG on ground-truth-derived seeds",
    "deterministic": "deterministic CAM seeds (p=0) → DSRG",
    "fickle_0.9": "FickleNet p=0.9 → DSRG",
    "general_0.9": "general dropout p=0.9 → DSRG",
    "fickle_0.3": "FickleNet p=0.3 → DSRG",
    "fickle_0.5": "FickleNet p=0.5 → DSRG",
    "fickle_0.7": "FickleNet p=0.7 → DSRG",
    "general_0.5": "general dropout p=0.5 → DSRG",
}


def read_figures(job: Path, classifier: Path | None = None) -> dict[str, float | None]:
    """Every figure of one run folder (the pipeline's ``metrics.json``, one entry per
    stage; ``localize_val/metrics.json``; the classifier's ``metrics.json``); None
    where missing."""
    stages: dict[str, dict[str, Any]] = {}
    for name, path in (
        ("", job / "metrics.json"),
        ("localize_val", job / "localize_val" / "metrics.json"),
        ("classify", classifier / "metrics.json" if classifier else None),
    ):
        if path is None or not path.is_file():
            continue
        data = json.loads(path.read_text())
        if name:
            stages[name] = data
        else:
            stages.update(data)
    out: dict[str, float | None] = {}
    for name, stage, key in ALL_FIGURES:
        value = stages.get(stage, {}).get(key)
        out[name] = None if value is None else float(value)
    return out


def seed_folders(folder: Path) -> dict[int, Path]:
    """{training seed: folder} of the ``seed<N>`` folders under ``folder``."""
    found = (p for p in sorted(folder.glob("seed*")) if p.is_dir())
    return {int(p.name[4:]): p for p in found if p.name[4:].isdigit()}


def job_overrides(job: Path) -> dict[str, str]:
    """The ``key=value`` overrides Hydra recorded for a job."""
    import yaml

    path = job / ".hydra" / "overrides.yaml"
    items = yaml.safe_load(path.read_text()) if path.is_file() else []
    return dict(str(item).split("=", 1) for item in items or [] if "=" in str(item))


def find_jobs(runs_dir: Path) -> dict[str, dict[int, Path]]:
    """{row: {seed: job}} over the ``ficklenet-pipeline -m`` sweeps under ``runs_dir``
    (one sweep per row: the layout of the studies measured at commit a02f831)."""
    rows: dict[str, dict[int, Path]] = {}
    for metrics in sorted(runs_dir.glob("*/*/metrics.json")):
        job = metrics.parent
        overrides = job_overrides(job)
        row = overrides.get("table5", job.parent.name)
        rows.setdefault(row, {})[int(overrides.get("seed", 0))] = job
    return rows


def write_results(out: Path, result: Any, text: str, indent: int = 1) -> None:
    """Write ``results.json`` (``result``) and ``results.md`` (``text``) into ``out``, each
    atomically, and print the Markdown: how every gather script of experiments/ ends."""
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(result, indent=indent, sort_keys=True) + "\n")
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(text)
    print(text)
