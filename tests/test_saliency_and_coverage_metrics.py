"""Max F-β and MAE of saliency maps, and the coverage-aware seed mIoU, against
literal implementations and hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from ficklenet.metrics import SaliencyScore, coverage_miou, covered_confusion


def literal_saliency(maps, masks, beta2=0.3):
    """Threshold by threshold, image by image, pixel by pixel (no histograms)."""
    precision = np.zeros(256)
    recall = np.zeros(256)
    with_objects = 0
    mae = []
    for sal, mask in zip(maps, masks, strict=True):
        pixels = [
            (int(s), int(m)) for s, m in zip(sal.ravel(), mask.ravel(), strict=True) if m != 255
        ]
        mae.append(np.mean([abs(s / 255 - (m > 0)) for s, m in pixels]))
        positives = sum(m > 0 for _, m in pixels)
        if not positives:
            continue
        with_objects += 1
        for t in range(256):
            called = [(s, m) for s, m in pixels if s >= t]
            tp = sum(m > 0 for _, m in called)
            precision[t] += tp / len(called) if called else 0.0
            recall[t] += tp / positives
    p, r = precision / with_objects, recall / with_objects
    f = [
        (1 + beta2) * a * b / (beta2 * a + b) if beta2 * a + b > 0 else 0
        for a, b in zip(p, r, strict=True)
    ]
    return max(f), int(np.argmax(f)), float(np.mean(mae))


def test_saliency_scores_equal_the_literal_computation():
    rng = np.random.default_rng(0)
    maps, masks = [], []
    for k in range(4):
        mask = np.zeros((9, 11), np.uint8)
        mask[2:6, 3:8] = 1 + k
        mask[rng.random(mask.shape) < 0.1] = 255
        maps.append(np.clip(rng.normal(60 + 120 * (mask == 1 + k), 50), 0, 255).astype(np.uint8))
        masks.append(mask)
    masks.append(np.zeros((9, 11), np.uint8))  # no object: counts in MAE only
    maps.append(rng.integers(0, 256, (9, 11)).astype(np.uint8))
    score = SaliencyScore()
    for sal, mask in zip(maps, masks, strict=True):
        score.update(sal, mask)
    got = score.result()
    f, t, mae = literal_saliency(maps, masks)
    assert got.max_f_beta == pytest.approx(f, abs=1e-12)
    assert got.threshold == pytest.approx(t / 255)
    assert got.mae == pytest.approx(mae, abs=1e-12)
    assert got.images == 5


def test_saliency_scores_by_hand():
    # 4 pixels: two object pixels (200, 100), two background (150, 0); one void.
    sal = np.array([[200, 100, 150, 0, 255]], np.uint8)
    mask = np.array([[1, 1, 0, 0, 255]], np.uint8)
    score = SaliencyScore()
    score.update(sal, mask)
    res = score.result()
    # MAE: |200/255-1| + |100/255-1| + 150/255 + 0, over 4 pixels.
    assert res.mae == pytest.approx((55 + 155 + 150) / 255 / 4)
    # t in (150, 200]: P = 1, R = 1/2 -> F = 1.3 * 0.5 / (0.3 + 0.5) = 0.8125; t in
    # (100, 150]: P = 1/2, R = 1/2 -> 0.5; t in (0, 100]: P = 2/3, R = 1 -> 1.3*(2/3)/(0.2+1).
    assert res.max_f_beta == pytest.approx(max(0.8125, 1.3 * (2 / 3) / (0.2 + 1)))


def test_saliency_accepts_floats_in_unit_range_and_refuses_others():
    mask = np.array([[1, 0]], np.uint8)
    a, b = SaliencyScore(), SaliencyScore()
    a.update(np.array([[204, 51]], np.uint8), mask)
    b.update(np.array([[0.8, 0.2]], np.float32), mask)
    assert a.result() == b.result()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SaliencyScore().update(np.array([[1.5, 0.0]]), mask)
    with pytest.raises(ValueError, match="no image"):
        SaliencyScore().result()


def literal_coverage_miou(seeds_list, truths, k=21):
    ious = []
    for c in range(k):
        tp = fp = fn = 0
        for seeds, truth in zip(seeds_list, truths, strict=True):
            valid = truth != 255
            tp += int(((seeds == c) & (truth == c) & valid).sum())
            fp += int(((seeds == c) & (truth != c) & valid).sum())
            fn += int(((seeds != c) & (truth == c) & valid).sum())  # 255 seeds included
        if tp + fp + fn:
            ious.append(tp / (tp + fp + fn))
    return float(np.mean(ious))


def test_coverage_miou_counts_unlabelled_pixels_as_misses():
    rng = np.random.default_rng(3)
    seeds_list, truths = [], []
    cm = np.zeros((21, 22), np.int64)
    for _ in range(5):
        truth = rng.choice([0, 3, 7, 255], size=(8, 8), p=[0.5, 0.2, 0.2, 0.1]).astype(np.uint8)
        seeds = np.where(rng.random((8, 8)) < 0.7, truth, rng.choice([0, 3, 7, 255], size=(8, 8)))
        seeds = seeds.astype(np.uint8)
        seeds_list.append(seeds)
        truths.append(truth)
        cm += covered_confusion(seeds, truth)
    assert coverage_miou(cm) == pytest.approx(literal_coverage_miou(seeds_list, truths), abs=1e-12)


def test_coverage_miou_by_hand():
    truth = np.array([[1, 1, 1, 0]], np.uint8)
    seeds = np.array([[1, 255, 255, 0]], np.uint8)
    # class 1: TP 1, FN 2 (unlabelled) -> 1/3; background: TP 1 -> 1.
    assert coverage_miou(covered_confusion(seeds, truth)) == pytest.approx((1 / 3 + 1) / 2)
