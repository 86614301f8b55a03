"""mIoU, confusion matrices and seed scores (ficklenet.metrics) against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ficklenet.data.classes import IGNORE_INDEX as I
from ficklenet.metrics import (
    ConfusionMIoU,
    confusion_matrix,
    miou,
    miou_from_confusion,
    seed_counts,
    seed_precision_recall,
    seed_scores_from_counts,
)

TARGET = np.array([[0, 0, 0], [1, 1, I], [2, 2, 1]])
PRED = np.array([[0, 1, 0], [1, 1, 2], [2, 0, 1]])  # the 2 at the void pixel is not counted
# Four classes; class 3 is in neither prediction nor truth.
CM = np.array([[2, 1, 0, 0], [0, 3, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
# IoU = TP / (TP + FP + FN): class 0: 2 / (2 + 1 + 1); class 1: 3 / (3 + 1 + 0);
# class 2: 1 / (1 + 0 + 1); class 3: undefined.
IOU = np.array([0.5, 0.75, 0.5, np.nan])


def test_confusion_matrix_by_hand() -> None:
    cm = confusion_matrix(PRED, TARGET, num_classes=4)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, CM)


def test_miou_by_hand_numpy_and_torch() -> None:
    for pred, target in [(PRED, TARGET), (torch.from_numpy(PRED), torch.from_numpy(TARGET))]:
        value, per_class = miou(pred, target, num_classes=4)
        np.testing.assert_allclose(per_class, IOU)  # NaN where NaN
        assert value == pytest.approx((0.5 + 0.75 + 0.5) / 3)


def test_accumulated_confusion_equals_one_call_on_concatenation() -> None:
    rng = np.random.default_rng(0)
    a_pred, a_true = rng.integers(0, 5, (7, 9)), rng.integers(0, 5, (7, 9))
    b_pred, b_true = rng.integers(0, 5, (4, 6)), rng.integers(0, 5, (4, 6))
    a_true[0, :3] = I
    b_true[1, 1:] = I
    total = confusion_matrix(a_pred, a_true, 5) + confusion_matrix(b_pred, b_true, 5)
    together = miou(
        np.concatenate([a_pred.ravel(), b_pred.ravel()]),
        np.concatenate([a_true.ravel(), b_true.ravel()]),
        num_classes=5,
    )
    accumulated = miou_from_confusion(total)
    assert accumulated[0] == pytest.approx(together[0])
    np.testing.assert_allclose(accumulated[1], together[1])


def test_unlabelled_predictions_are_not_counted_and_bad_labels_raise() -> None:
    pred = PRED.copy()
    pred[0, 1] = I  # an unlabelled seed pixel: drops the (truth 0, pred 1) count
    expected = CM.copy()
    expected[0, 1] = 0
    np.testing.assert_array_equal(confusion_matrix(pred, TARGET, 4), expected)
    pred[0, 1] = 7
    with pytest.raises(ValueError):
        confusion_matrix(pred, TARGET, 4)


def test_empty_is_nan() -> None:
    value, per_class = miou(np.full(4, I), np.full(4, I), num_classes=3)
    assert np.isnan(value) and np.isnan(per_class).all()


def test_seed_precision_recall_by_hand() -> None:
    seeds = np.array([[0, I, 1], [1, I, 2], [I, 2, 1]])
    # 8 pixels with truth; 5 of them labelled ((1, 2) has no truth); 4 correct
    # ((0, 2) says 1, truth 0).
    scores = seed_precision_recall(seeds, TARGET)
    assert scores.precision == pytest.approx(4 / 5)
    assert scores.recall == pytest.approx(4 / 8)
    assert scores.labelled == pytest.approx(5 / 8)
    counts = seed_counts(seeds, TARGET) + seed_counts(torch.tensor([[1]]), torch.tensor([[1]]))
    np.testing.assert_array_equal(counts, [9, 6, 5])
    assert seed_scores_from_counts(counts).precision == pytest.approx(5 / 6)


def test_torchmetric_matches_miou_and_merges_like_ddp() -> None:
    rng = np.random.default_rng(1)
    true = rng.integers(0, 4, (2, 5, 5))
    true[:, 0, 0] = I
    logits = torch.randn(2, 4, 5, 5)
    pred = logits.argmax(dim=1)
    metric = ConfusionMIoU(num_classes=4)
    metric.update(logits[:1], torch.from_numpy(true[:1]))  # scores: argmax taken
    metric.update(pred[1:], torch.from_numpy(true[1:]))  # labels
    expected, per_class = miou(pred, true, num_classes=4)
    assert metric.compute().item() == pytest.approx(expected)
    np.testing.assert_allclose(metric.per_class(), per_class)

    # Two "processes", each with half the data, merged the way DDP reduces (sum).
    first, second = ConfusionMIoU(num_classes=4), ConfusionMIoU(num_classes=4)
    first.update(pred[:1], torch.from_numpy(true[:1]))
    second.update(pred[1:], torch.from_numpy(true[1:]))
    first.merge_state(second)
    assert first.compute().item() == pytest.approx(expected)


def test_void_is_255_defined_once() -> None:
    """255 (void truth, unlabelled seeds) has one definition, in ficklenet.data.classes;
    the metrics, the losses, the growing and the seed writer use that one."""
    from pathlib import Path

    import ficklenet

    assert I == 255
    src = Path(ficklenet.__file__).parent
    defining = [
        str(path.relative_to(src))
        for path in sorted(src.rglob("*.py"))
        for line in path.read_text().splitlines()
        if line.replace(" ", "").split(":")[0].split("=")[0].isupper()
        and line.replace(" ", "").rstrip().endswith("=255")
    ]
    assert defining == ["data/classes.py"]
