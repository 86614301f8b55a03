"""Segmentation and seed quality: one confusion matrix, one mIoU.

PASCAL VOC devkit convention: a (K, K) confusion matrix over the pixels whose
ground truth is not ``ignore_index`` (255, the void border), rows = truth,
columns = prediction; ``IoU_c = TP / (TP + FP + FN)``; classes absent from both
truth and prediction have no IoU (NaN) and are left out of the mean. Scores are
fractions in [0, 1]. (DSRG's own ``training/tools/evaluate.py`` leaves every
class with TP = 0 out of the mean, which on a subset of images would drop
missed classes too; on the full VOC val set, where every class occurs, the two
agree unless a class is never predicted correctly.)

A dataset-wide score sums the per-image confusion matrices
(:func:`confusion_matrix`, :func:`miou_from_confusion`); :class:`ConfusionMIoU`
does the same inside a LightningModule and sums the matrices across DDP
processes. Everything goes through :func:`confusion_counts`, so seeds, CAMs and
predictions are scored by the same code.

Predictions equal to ``ignore_index`` (unlabelled seed pixels) are left out of
the confusion matrix, so the mIoU of seeds is over their labelled pixels; their
coverage is what :func:`seed_precision_recall` reports (precision over the
labelled pixels, recall over all pixels with ground truth).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from ficklenet.data.classes import IGNORE_INDEX

ArrayLike = np.ndarray | Tensor


def _as_long_tensor(x: ArrayLike) -> Tensor:
    if isinstance(x, Tensor):
        return x.long()
    # astype copies: a read-only array (np.load, a PIL view) becomes a writable one.
    return torch.from_numpy(np.asarray(x).astype(np.int64))


def confusion_counts(
    pred: ArrayLike, target: ArrayLike, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """The (K, K) int64 confusion matrix as a tensor on ``pred``'s device.

    Pixels with ``target == ignore_index`` or ``pred == ignore_index`` are not
    counted; any other value outside [0, K) is an error.
    """
    pred_t = _as_long_tensor(pred)
    target_t = _as_long_tensor(target).to(pred_t.device)
    if pred_t.shape != target_t.shape:
        raise ValueError(f"pred {tuple(pred_t.shape)} and target {tuple(target_t.shape)} differ")
    keep = (target_t != ignore_index) & (pred_t != ignore_index)
    pred_t = pred_t[keep]
    target_t = target_t[keep]
    bad = (pred_t < 0) | (pred_t >= num_classes) | (target_t < 0) | (target_t >= num_classes)
    if bool(bad.any()):
        raise ValueError(
            f"labels outside [0, {num_classes}) other than ignore_index={ignore_index}"
        )
    counts = torch.bincount(target_t * num_classes + pred_t, minlength=num_classes**2)
    return counts.view(num_classes, num_classes)


def confusion_matrix(
    pred: ArrayLike,
    target: ArrayLike,
    num_classes: int = 21,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """np.int64 (K, K) confusion matrix, rows = truth, columns = prediction.

    ``pred`` and ``target`` are label maps of any (equal) shape, numpy or torch.
    """
    return confusion_counts(pred, target, num_classes, ignore_index).cpu().numpy()


def miou_from_confusion(cm: ArrayLike) -> tuple[float, np.ndarray]:
    """(mIoU, per-class IoU) from a confusion matrix (rows = truth).

    Classes with TP + FP + FN = 0 are NaN and excluded from the mean; the mean is
    NaN when every class is.
    """
    cm = np.asarray(cm.cpu() if isinstance(cm, Tensor) else cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    iou = np.full(len(cm), np.nan)
    np.divide(tp, union, out=iou, where=union > 0)
    mean = float(iou[union > 0].mean()) if (union > 0).any() else float("nan")
    return mean, iou


def miou(
    pred: ArrayLike,
    target: ArrayLike,
    num_classes: int = 21,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[float, np.ndarray]:
    """Mean IoU and per-class IoU (fractions; NaN for classes absent from both)."""
    return miou_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index))


class SeedScores(NamedTuple):
    """Seed quality over the pixels with ground truth.

    precision: of the labelled seed pixels, the fraction whose label is right.
    recall: of the ground-truth pixels, the fraction that got the right seed label.
    labelled: the fraction of ground-truth pixels that are labelled at all.
    """

    precision: float
    recall: float
    labelled: float


def seed_counts(
    seeds: ArrayLike, target: ArrayLike, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """np.int64 ``[ground-truth pixels, labelled seeds among them, correct seeds]``.

    Sum these over images and pass the total to :func:`seed_scores_from_counts`
    for a dataset-wide score. ``ignore_index`` marks both unlabelled seeds and
    void ground truth.
    """
    seeds_t = _as_long_tensor(seeds)
    target_t = _as_long_tensor(target).to(seeds_t.device)
    if seeds_t.shape != target_t.shape:
        raise ValueError(f"seeds {tuple(seeds_t.shape)} and target {tuple(target_t.shape)} differ")
    valid = target_t != ignore_index
    labelled = valid & (seeds_t != ignore_index)
    correct = labelled & (seeds_t == target_t)
    return np.array([int(valid.sum()), int(labelled.sum()), int(correct.sum())], dtype=np.int64)


def seed_scores_from_counts(counts: ArrayLike) -> SeedScores:
    """:class:`SeedScores` from (summed) :func:`seed_counts`; NaN where undefined."""
    valid, labelled, correct = (int(v) for v in np.asarray(counts))

    def frac(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return SeedScores(frac(correct, labelled), frac(correct, valid), frac(labelled, valid))


def seed_precision_recall(
    seeds: ArrayLike, target: ArrayLike, ignore_index: int = IGNORE_INDEX
) -> SeedScores:
    """Precision, recall and labelled fraction of seeds (``ignore_index`` = unlabelled)."""
    return seed_scores_from_counts(seed_counts(seeds, target, ignore_index))


def covered_confusion(
    seeds: ArrayLike, target: ArrayLike, num_classes: int = 21, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """np.int64 (K, K + 1) confusion of seeds, rows = truth: column K holds the
    pixels with ground truth that the seeds leave unlabelled (``ignore_index``).

    Sum over images and pass to :func:`coverage_miou`.
    """
    seeds_t = _as_long_tensor(seeds)
    extended = torch.where(seeds_t == ignore_index, num_classes, seeds_t)
    cm = confusion_counts(extended, target, num_classes + 1, ignore_index).cpu().numpy()
    return cm[:num_classes]


def coverage_miou(cm: ArrayLike) -> float:
    """The *coverage-aware* seed mIoU of a :func:`covered_confusion`: an unlabelled
    pixel counts as a miss of its true class, so seeds score well only when they
    are both right and plentiful (what DSRG needs to grow from). IoU_c = TP / (TP +
    FP + FN) with FN including class c's unlabelled pixels; classes absent from
    truth and seeds are left out of the mean."""
    cm = np.asarray(cm, dtype=np.float64)
    k = cm.shape[0]
    tp = np.diag(cm[:, :k])
    union = cm.sum(1) + cm[:, :k].sum(0) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if present.any() else float("nan")


class ConfusionMIoU(Metric):
    """mIoU from a confusion matrix accumulated over batches (and DDP processes).

    ``update(preds, target)`` takes label maps, or scores with one more dimension
    than ``target`` (class axis 1, argmax taken). ``compute()`` returns the mIoU
    as a 0-dim tensor (NaN if nothing was counted); :meth:`per_class` gives the
    per-class IoU. The state ``confmat`` is summed across processes.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    confmat: Tensor

    def __init__(
        self, num_classes: int = 21, ignore_index: int = IGNORE_INDEX, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state(
            "confmat",
            default=torch.zeros(num_classes, num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, preds: Tensor, target: Tensor) -> None:
        if preds.ndim == target.ndim + 1:
            preds = preds.argmax(dim=1)
        cm = confusion_counts(preds, target, self.num_classes, self.ignore_index)
        self.confmat += cm.to(self.confmat.device)

    def compute(self) -> Tensor:
        value, _ = miou_from_confusion(self.confmat)
        return torch.tensor(value, dtype=torch.float32)

    def per_class(self) -> np.ndarray:
        """Per-class IoU (NaN for classes absent from truth and prediction), over all
        processes like :meth:`compute`."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn):
            return miou_from_confusion(self.confmat.clone())[1]


# --------------------------------------------------------------------------------------
# Saliency maps against the object pixels (the salient-object literature's measures).

#: β² of the F-measure: 0.3 weighs precision more than recall, the convention since
#: Achanta et al. (CVPR 2009) that the salient-object benchmarks keep.
SALIENCY_BETA2 = 0.3


class SaliencyScores(NamedTuple):
    """``max_f_beta``: the highest F-β over the 256 thresholds of the mean
    precision and recall curves; ``threshold``: where (in [0, 1]); ``mae``: mean
    over images of the mean absolute difference between map and object mask."""

    max_f_beta: float
    threshold: float
    mae: float
    images: int


class SaliencyScore:
    """Max F-β and MAE of saliency maps against the object pixels, image by image.

    A saliency map is uint8 (0..255 → [0, 1]) or floats in [0, 1]; the truth is a label mask whose
    object pixels (1..254) are salient and whose background (0) is not; void
    pixels (255) count in neither. At each threshold t = 0..255 a pixel is salient
    when its value is ≥ t; precision and recall are computed per image and averaged
    over the images with object pixels, and F-β comes from those averages (the
    benchmark convention of Borji et al., "Salient Object Detection: A Benchmark",
    TIP 2015).
    """

    def __init__(self, beta2: float = SALIENCY_BETA2) -> None:
        self.beta2 = beta2
        self._precision = np.zeros(256)
        self._recall = np.zeros(256)
        self._with_objects = 0
        self._abs_error = 0.0
        self._images = 0

    def update(self, saliency: np.ndarray, mask: np.ndarray) -> None:
        sal = np.asarray(saliency)
        mask = np.asarray(mask)
        if sal.dtype != np.uint8:  # [0, 1] floats, read back to the 256 levels
            if sal.size and (np.nanmin(sal) < 0 or np.nanmax(sal) > 1):
                raise ValueError("saliency must be uint8 (0..255) or floats in [0, 1]")
            sal = np.rint(sal * 255).astype(np.uint8)
        if sal.shape != mask.shape:
            raise ValueError(f"saliency {sal.shape} and mask {mask.shape} differ in size")
        valid = mask != IGNORE_INDEX
        values = sal[valid].astype(np.int64)
        salient = mask[valid] > 0
        if not values.size:
            return
        self._images += 1
        self._abs_error += float(np.abs(values / 255.0 - salient).mean())
        if not salient.any():
            return
        # Pixels at or above each threshold: reversed cumulative histograms.
        pos = np.bincount(values[salient], minlength=256)[::-1].cumsum()[::-1]
        neg = np.bincount(values[~salient], minlength=256)[::-1].cumsum()[::-1]
        called = pos + neg
        self._precision += np.divide(pos, called, out=np.zeros(256), where=called > 0)
        self._recall += pos / salient.sum()
        self._with_objects += 1

    def result(self) -> SaliencyScores:
        if not self._with_objects:
            raise ValueError("no image with object pixels was scored")
        p = self._precision / self._with_objects
        r = self._recall / self._with_objects
        denom = self.beta2 * p + r
        f = np.divide((1 + self.beta2) * p * r, denom, out=np.zeros(256), where=denom > 0)
        best = int(f.argmax())
        return SaliencyScores(
            max_f_beta=float(f[best]),
            threshold=best / 255.0,
            mae=self._abs_error / self._images,
            images=self._images,
        )
