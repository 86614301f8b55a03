"""experiments/thresholds/choose.py scores with ficklenet.metrics, and its figures are
the ones of the code that chose the shipped thresholds (kept below, verbatim, as the
reference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from experiments.thresholds import choose
from omegaconf import OmegaConf

from ficklenet.data.voc import VOCReader
from ficklenet.localization import make_seeds
from ficklenet.metrics import confusion_matrix, coverage_miou, covered_confusion

# ---- the shipped code (experiments/thresholds/choose.py before it used ficklenet.metrics)
UNLABELLED = 255


def shipped_covered_confusion(seeds: np.ndarray, truth: np.ndarray) -> np.ndarray:
    pred = np.where(seeds == UNLABELLED, 21, seeds).astype(np.int64)
    keep = truth != UNLABELLED
    cm = np.bincount(22 * truth[keep].astype(np.int64) + pred[keep], minlength=21 * 22)
    return cm.reshape(21, 22)


def shipped_miou_with_misses(cm: np.ndarray) -> float:
    tp = np.diag(cm[:, :21]).astype(np.float64)
    fn = cm.sum(1) - tp
    fp = cm[:, :21].sum(0) - tp
    union = tp + fn + fp
    present = union > 0
    return float((tp[present] / union[present]).mean())


# ----


def test_by_hand():
    # truth  1 1 1 0 | 2 255      seeds  1 255 2 0 | 255 2
    truth = np.array([[1, 1, 1, 0, 2, 255]], np.uint8)
    seeds = np.array([[1, 255, 2, 0, 255, 2]], np.uint8)
    cm = covered_confusion(seeds, truth, choose.K)
    assert cm.shape == (21, 22)
    expected = np.zeros((21, 22), np.int64)
    expected[1, 1] = expected[1, 21] = expected[1, 2] = expected[0, 0] = expected[2, 21] = 1
    np.testing.assert_array_equal(cm, expected)
    np.testing.assert_array_equal(cm, shipped_covered_confusion(seeds, truth))
    # background: TP 1 -> 1; class 1: TP 1, FN 2 -> 1/3; class 2: TP 0, FP 1, FN 1 -> 0.
    assert coverage_miou(cm) == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert shipped_miou_with_misses(cm) == pytest.approx((1 + 1 / 3 + 0) / 3)


def test_the_metrics_give_the_shipped_numbers():
    rng = np.random.default_rng(21)
    new = np.zeros((21, 22), np.int64)
    old = np.zeros((21, 22), np.int64)
    for k in range(8):
        labels = [0, 255, *rng.choice(np.arange(1, 21), size=3, replace=False)]
        truth = rng.choice(labels, size=(12, 9)).astype(np.uint8)
        seeds = np.where(rng.random((12, 9)) < 0.6, truth, rng.choice(labels, size=(12, 9)))
        if k == 0:
            seeds[:] = 255  # an image left wholly unlabelled
        seeds = seeds.astype(np.uint8)
        new += covered_confusion(seeds, truth, choose.K)
        old += shipped_covered_confusion(seeds, truth)
        np.testing.assert_array_equal(new, old)
    assert coverage_miou(new) == shipped_miou_with_misses(old)


def test_score_over_runs(toy_root: Path, tmp_path: Path):
    """choose.score on two fake localize runs equals the shipped computation."""
    reader = VOCReader(toy_root, "train")
    runs = []
    for r, noise in enumerate((0.3, 0.6)):
        run = tmp_path / f"run{r}"
        (run / "maps").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create({"data": {"root": str(toy_root)}}), run / "config.yaml")
        rng = np.random.default_rng(r)
        for image_id in reader.ids[:-2]:  # two images without maps are skipped
            mask = reader.mask(image_id)
            classes = [int(c) for c in reader.labels(image_id)]
            maps = np.stack([(mask == c).astype(np.float32) for c in classes])
            maps = np.clip(maps + noise * rng.random(maps.shape), 0, None).astype(np.float16)
            np.savez(run / "maps" / f"{image_id}.npz", maps=maps, classes=np.array(classes))
        runs.append(run)

    for fg, bg in ((0.3, 0.1), (0.6, 0.2)):
        labelled, covered = choose.score(runs, "train", fg, bg)
        old_labelled, old_covered = [], []
        for run in runs:
            cm_l, cm_c = np.zeros((21, 21), np.int64), np.zeros((21, 22), np.int64)
            for image_id in reader.ids[:-2]:
                with np.load(run / "maps" / f"{image_id}.npz") as data:
                    maps, classes = data["maps"].astype(np.float32), list(data["classes"])
                seeds = make_seeds(maps, classes, fg_threshold=fg, bg_threshold=bg)
                truth = reader.mask(image_id)
                cm_l += confusion_matrix(seeds, truth)
                cm_c += shipped_covered_confusion(seeds, truth)
            tp = np.diag(cm_l).astype(np.float64)
            union = cm_l.sum(0) + cm_l.sum(1) - tp
            old_labelled.append(float((tp[union > 0] / union[union > 0]).mean()))
            old_covered.append(shipped_miou_with_misses(cm_c))
        assert labelled == pytest.approx(float(np.mean(old_labelled)), abs=1e-12)
        assert covered == pytest.approx(float(np.mean(old_covered)), abs=1e-12)
        assert 0 < covered <= labelled <= 1
