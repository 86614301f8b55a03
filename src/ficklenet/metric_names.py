"""The names of the figures the stages write to ``metrics.json``: one table.

Every stage writes its figures under these keys (the training stages log them under
the same names, so the logger's columns and ``logs/metrics.csv`` carry them too), and
everything that reads them back reads these constants: the stages themselves on a
resume, the pipeline's report, :mod:`ficklenet.analysis` and the studies of
``experiments/``. A figure renamed here is renamed everywhere. Figures are fractions
in [0, 1]; per-class figures map class names to fractions.
"""

from __future__ import annotations

from typing import NamedTuple

# classify: the classifier on val, at the end of each epoch (ficklenet.lit.classifier)
VAL_MAP = "val/mAP"
VAL_MAP_BEST = "val/mAP_best"
VAL_F1 = "val/f1"
VAL_LOSS = "val/loss"  # logged, not in metrics.json
TRAIN_LOSS = "train/loss"  # classify and segment

# segment: the segmenter on val during training (ficklenet.lit.segmenter)
VAL_MIOU = "val/miou"
VAL_MIOU_BEST = "val/miou_best"
TRAIN_SEEDED_FRACTION = "train/seeded_fraction"


class SeedFigures(NamedTuple):
    """The keys of a set of seeds scored against ground truth (mIoU over their
    labelled pixels, precision, recall, labelled fraction; ficklenet.metrics)."""

    miou: str
    precision: str
    recall: str
    labelled_fraction: str

    @classmethod
    def named(cls, prefix: str) -> SeedFigures:
        return cls(*(f"{prefix}/{field}" for field in cls._fields))


#: The seeds: localize scores its own on its split; segment scores the seeds it was
#: trained on on ``seed_eval_split`` (ficklenet.tasks.seed_growth).
SEED = SeedFigures.named("seed")
SEED_PER_CLASS_IOU = "seed/per_class_iou"  # localize
#: DSRG's grown seeds on ``seed_eval_split`` (segment).
GROWN_SEED = SeedFigures.named("grown_seed")

# localize: the CAM (every pixel labelled) over a sweep of background thresholds, and
# the fraction of objects the maps reach at the seed threshold.
CAM_BEST_MIOU = "cam/best_miou"
CAM_BEST_BG_THRESHOLD = "cam/best_bg_threshold"
CAM_MIOU_CURVE = "cam/miou_curve"
CAM_OBJECT_RECALL = "cam/object_recall"
CAM_OBJECT_RECALL_CURVE = "cam/object_recall_curve"


def split_miou(split: str) -> str:
    """The segmenter's mIoU on ``split`` as segment writes it after training."""
    return f"{split}/miou"


#: segment: the trained segmenter's predictions on ``seed_eval_split`` (VOC ``train``).
TRAIN_MIOU = split_miou("train")

# evaluate: the headline mIoU (with the CRF when crf=true), and each variant's.
MIOU = "miou"
MIOU_NO_CRF = "miou_no_crf"
MIOU_CRF = "miou_crf"
PER_CLASS_IOU = "per_class_iou"
PER_CLASS_IOU_NO_CRF = "per_class_iou_no_crf"
PER_CLASS_IOU_CRF = "per_class_iou_crf"

#: The figures each stage writes to its metrics.json; some only when the stage has
#: what they need (ground truth for localize's split, seeds and ``seed_eval_split``
#: for segment, ``crf=true`` for evaluate's CRF figures). predict writes none.
STAGE_FIGURES: dict[str, tuple[str, ...]] = {
    "classify": (VAL_MAP, VAL_MAP_BEST, VAL_F1, TRAIN_LOSS),
    "localize": (
        *SEED,
        SEED_PER_CLASS_IOU,
        CAM_BEST_MIOU,
        CAM_BEST_BG_THRESHOLD,
        CAM_MIOU_CURVE,
        CAM_OBJECT_RECALL,
        CAM_OBJECT_RECALL_CURVE,
    ),
    "segment": (
        VAL_MIOU,
        VAL_MIOU_BEST,
        TRAIN_LOSS,
        TRAIN_SEEDED_FRACTION,
        *SEED,
        *GROWN_SEED,
        TRAIN_MIOU,
    ),
    "evaluate": (
        MIOU,
        MIOU_NO_CRF,
        MIOU_CRF,
        PER_CLASS_IOU,
        PER_CLASS_IOU_NO_CRF,
        PER_CLASS_IOU_CRF,
    ),
}
