"""How good are the seeds and maps? Scored from the files on disk.

Scoring reads ``seeds/<id>.png`` and ``maps/<id>.npz`` back rather than
accumulating in memory, so the numbers cover every image of the split however
many ranks wrote them and however often the run was resumed.

- Seeds (docs/method.md, "Seeds"): mIoU over the
  labelled seed pixels, precision (labelled pixels that are right), recall
  (ground-truth pixels that got the right seed) and the labelled fraction.
- CAM mIoU: the dense labelling of the aggregated maps (argmax over present
  classes, background below a threshold) for each background threshold of a
  sweep: the curve and its best point.
- CAM object recall: the fraction of object pixels whose own class's map reaches
  a threshold (relative to the class maximum), for each threshold of the sweep
  and at the foreground seed threshold. A CAM that lights up only the
  discriminative part of objects has a low object recall however well it
  classifies: the failure FickleNet's stochastic maps are meant to fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ficklenet.data.classes import CLASS_NAMES
from ficklenet.data.voc import VOCReader, read_label_png
from ficklenet.localization.seeds import cam_labels
from ficklenet.metric_names import (
    CAM_BEST_BG_THRESHOLD,
    CAM_BEST_MIOU,
    CAM_MIOU_CURVE,
    CAM_OBJECT_RECALL,
    CAM_OBJECT_RECALL_CURVE,
    SEED,
    SEED_PER_CLASS_IOU,
)
from ficklenet.metrics import (
    confusion_matrix,
    miou_from_confusion,
    seed_counts,
    seed_scores_from_counts,
)

#: The one-number figures of :func:`score_localization`, in this order: the seeds'
#: (mIoU, precision, recall, labelled fraction), the best CAM mIoU, its background
#: threshold, and the CAM object recall at the seed threshold. The curves and the
#: per-class seed IoU are tables (:func:`quality_tables`).
HEADLINE_FIGURES: tuple[str, ...] = (
    *SEED,
    CAM_BEST_MIOU,
    CAM_BEST_BG_THRESHOLD,
    CAM_OBJECT_RECALL,
)


def load_maps(path: Path) -> tuple[np.ndarray, list[int]]:
    """``maps/<id>.npz`` → (maps float32 (K_present, H, W), class indices 1..20)."""
    with np.load(path) as data:
        return data["maps"].astype(np.float32), [int(c) for c in data["classes"]]


def object_recall_counts(
    maps: np.ndarray, classes: list[int], truth: np.ndarray, thresholds: list[float]
) -> tuple[np.ndarray, int]:
    """(covered object pixels per threshold, object pixels) of one image.

    An object pixel (truth ``c`` in ``classes``) is covered at threshold ``t`` when
    the map of ``c``, divided by its maximum, is at least ``t``.
    """
    covered = np.zeros(len(thresholds), np.int64)
    total = 0
    for k, c in enumerate(classes):
        inside = truth == c
        n = int(inside.sum())
        if not n:
            continue
        total += n
        peak = float(maps[k].max())
        values = maps[k][inside] / peak if peak > 0 else np.zeros(n, np.float32)
        covered += np.array([(values >= t).sum() for t in thresholds], np.int64)
    return covered, total


def score_localization(
    run_dir: Path,
    reader: VOCReader,
    bg_sweep: list[float],
    progress: bool = True,
    fg_threshold: float | None = None,
) -> dict[str, Any]:
    """Seed and CAM quality over the ids of ``reader`` that have ground truth.

    ``fg_threshold``: the seeds' foreground threshold, at which the headline CAM
    object recall is read (it is added to the sweep's thresholds).
    """
    ids = [i for i in reader.ids if reader.has_mask(i)]
    if not ids:
        return {"scored_images": 0}
    seed_cm = np.zeros((21, 21), np.int64)
    counts = np.zeros(3, np.int64)
    cam_cms = {t: np.zeros((21, 21), np.int64) for t in bg_sweep}
    recall_at = sorted(set(bg_sweep) | ({fg_threshold} if fg_threshold is not None else set()))
    covered = np.zeros(len(recall_at), np.int64)
    objects = 0
    for image_id in tqdm(ids, desc="scoring seeds", disable=not progress, leave=False):
        truth = reader.mask(image_id)
        seeds = read_label_png(run_dir / "seeds" / f"{image_id}.png")
        seed_cm += confusion_matrix(seeds, truth)
        counts += seed_counts(seeds, truth)
        maps, classes = load_maps(run_dir / "maps" / f"{image_id}.npz")
        for t in bg_sweep:
            cam_cms[t] += confusion_matrix(cam_labels(maps, classes, t), truth)
        got, total = object_recall_counts(maps, classes, truth, recall_at)
        covered += got
        objects += total
    seed_miou, per_class = miou_from_confusion(seed_cm)
    scores = seed_scores_from_counts(counts)
    curve = [{"bg_threshold": t, "miou": miou_from_confusion(cm)[0]} for t, cm in cam_cms.items()]
    best = max(curve, key=lambda r: r["miou"])
    recall = {
        t: (float(n) / objects if objects else None)
        for t, n in zip(recall_at, covered, strict=True)
    }
    return {
        "scored_images": len(ids),
        SEED.miou: seed_miou,
        SEED.precision: scores.precision,
        SEED.recall: scores.recall,
        SEED.labelled_fraction: scores.labelled,
        SEED_PER_CLASS_IOU: {
            name: (None if np.isnan(v) else float(v))
            for name, v in zip(CLASS_NAMES, per_class, strict=True)
        },
        CAM_MIOU_CURVE: curve,
        CAM_BEST_MIOU: best["miou"],
        CAM_BEST_BG_THRESHOLD: best["bg_threshold"],
        CAM_OBJECT_RECALL_CURVE: [{"threshold": t, "recall": r} for t, r in recall.items()],
        CAM_OBJECT_RECALL: recall.get(fg_threshold) if fg_threshold is not None else None,
    }


def quality_tables(
    quality: dict[str, Any],
) -> dict[str, tuple[list[str], list[list[Any]], tuple[str, str] | None]]:
    """The tables of :func:`score_localization`'s result: the CAM mIoU and object-recall
    curves and the per-class seed IoU, each ``{name: (columns, rows, curve)}`` with
    ``curve`` the (x, y) columns of a curve, else None; none where no image was scored."""
    if not quality.get("scored_images"):
        return {}
    return {
        CAM_MIOU_CURVE: (
            ["bg_threshold", "miou"],
            [[r["bg_threshold"], r["miou"]] for r in quality[CAM_MIOU_CURVE]],
            ("bg_threshold", "miou"),
        ),
        CAM_OBJECT_RECALL_CURVE: (
            ["threshold", "recall"],
            [[r["threshold"], r["recall"]] for r in quality[CAM_OBJECT_RECALL_CURVE]],
            ("threshold", "recall"),
        ),
        SEED_PER_CLASS_IOU: (
            ["class", "iou"],
            [[k, v] for k, v in quality[SEED_PER_CLASS_IOU].items()],
            None,
        ),
    }
