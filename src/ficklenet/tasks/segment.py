"""``ficklenet-segment``: pipeline stage 3, train the DSRG segmenter on seeds.

DSRG (Huang et al., CVPR 2018; official release, ``training/``): a DeepLab network
trained on the localize stage's seeds with seeded region growing, the balanced
seeding loss and the boundary loss (:mod:`ficklenet.lit.segmenter`). With
``data.pixel_labels`` the ground truth of the listed ids replaces their seeds
(semi-supervised); with no ``seeds`` and every training id in ``data.pixel_labels``
it trains the same network fully supervised (cross-entropy), the ceiling.

Writes into the Hydra run directory: ``checkpoints/{best,last}.ckpt`` (config
inside, ``ficklenet_stage="segment"``), ``config.yaml``, ``run_info.json``, the
logger's files and ``metrics.json`` with ``val/miou`` and ``val/miou_best``. When
``seed_eval_split`` (VOC ``train``) has ground truth, ``metrics.json`` also scores on
it, at full resolution, the raw seeds (mIoU over their labelled pixels, precision,
recall, labelled fraction), the seeds grown by DSRG's rule with the trained network,
and the network's predictions: does growing improve on the seeds? Returns
``val/miou_best`` for Hydra sweepers. Rerunning into a directory that holds
``checkpoints/last.ckpt`` resumes from it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ficklenet.checkpoints import checkpoint_path
from ficklenet.data.datamodule import (
    SegmentationDataModule,
    check_toy_root,
    resolve_seed_dir,
)
from ficklenet.errors import UserValueError
from ficklenet.files import existing_path
from ficklenet.lit.segmenter import DSRGSegmenter
from ficklenet.metric_names import TRAIN_LOSS, TRAIN_SEEDED_FRACTION, VAL_MIOU, VAL_MIOU_BEST
from ficklenet.models.fickle import check_rate
from ficklenet.tasks.entry_point import stage_main
from ficklenet.tasks.run_record import DependsOn, read_record
from ficklenet.tasks.seed_growth import score_on_split
from ficklenet.tasks.training import fit, training_run

log = logging.getLogger(__name__)


def validate_segment(cfg: DictConfig) -> None:
    """Value checks the schema's types cannot express; each names the key."""
    seg = cfg.segmenter
    for key in ("grow_fg_prob", "grow_bg_prob"):
        if not 0.0 <= seg[key] <= 1.0:
            raise UserValueError(
                f"segmenter.{key}={seg[key]}: a probability threshold in [0, 1] (1: never grow)"
            )
    for key in ("seed_loss_weight", "boundary_loss_weight"):
        if seg[key] < 0:
            raise UserValueError(f"segmenter.{key}={seg[key]}: must be >= 0")
    check_rate(seg.dropout, "segmenter.dropout")
    if seg.crf_workers is not None and seg.crf_workers < 0:
        raise UserValueError(f"segmenter.crf_workers={seg.crf_workers}: must be >= 0 (or null)")
    if cfg.seeds is None and not cfg.data.pixel_labels:
        raise UserValueError(
            "seeds is not set: give seeds=<localize run dir> to train DSRG on seeds, or "
            "data.pixel_labels=<training split> to train fully supervised on ground truth"
        )
    check_toy_root(cfg.data)


def _seed_dir(cfg: DictConfig) -> Path | None:
    return None if cfg.seeds is None else resolve_seed_dir(cfg.seeds)


# The seeds are an input: a segmenter resumes only on the seeds it started with.
DEPENDS_ON = DependsOn(inputs=lambda cfg: {"seeds_from": seed_source(_seed_dir(cfg))})


def run_segment(cfg: DictConfig, run_dir: Path | None = None) -> float:
    """Train the segmenter; return ``val/miou_best`` (stored, when the run in
    ``run_dir`` finished earlier with these settings)."""
    validate_segment(cfg)
    seed_dir = _seed_dir(cfg)
    with training_run(cfg, run_dir, "segment", DEPENDS_ON) as run:
        if run.finished is not None:
            return float(run.finished[VAL_MIOU_BEST])
        datamodule = SegmentationDataModule(cfg.data, seed_dir=seed_dir, rng_seed=cfg.seed)
        model = DSRGSegmenter(run.config)
        trainer, metrics = fit(cfg, run, model, datamodule, monitor=VAL_MIOU)
        best = float(metrics.get(VAL_MIOU_BEST, model.best_miou))
        if not run.writer:
            return best
        last_ckpt = checkpoint_path(run.path)
        out: dict[str, Any] = {
            "stage": "segment",
            VAL_MIOU: metrics.get(VAL_MIOU),
            VAL_MIOU_BEST: best,
            TRAIN_LOSS: metrics.get(TRAIN_LOSS),
            TRAIN_SEEDED_FRACTION: metrics.get(TRAIN_SEEDED_FRACTION),
            "epochs": trainer.current_epoch,
            "steps": trainer.global_step,
            # The end of the schedule is what evaluate uses by default; best.ckpt
            # (best val mIoU, chosen on the split it is scored on) is an option.
            "checkpoint": existing_path(last_ckpt),
            "best_checkpoint": existing_path(checkpoint_path(run.path, "best")),
            "mode": "dsrg" if seed_dir is not None else "fully_supervised",
            "seeds": None if seed_dir is None else str(seed_dir),
            "pixel_labels": cfg.data.pixel_labels,
            "pixel_label_images": len(datamodule.gt_ids),
        }
        if cfg.seed_eval_split and seed_dir is not None:
            net = DSRGSegmenter.from_checkpoint(last_ckpt) if last_ckpt.is_file() else model
            out.update(
                score_on_split(
                    net,
                    cfg.data,
                    seed_dir,
                    str(cfg.seed_eval_split),
                    trainer.strategy.root_device,
                )
            )
        run.write_metrics(out)
        log.info("segmenter val mIoU %.4f (best %.4f); outputs in %s", *_fmt(out), run.path)
        return best


def seed_source(seed_dir: Path | None) -> str | None:
    """What made the seeds: a digest of the localize run's record (its classifier
    checkpoint and settings), or None for a plain folder of seed PNGs (or no seeds)."""
    record = read_record(seed_dir.parent) if seed_dir is not None else None
    if record is None:
        return None
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _fmt(out: dict[str, Any]) -> tuple[float, float]:
    value = out.get(VAL_MIOU)
    return (float("nan") if value is None else value, out[VAL_MIOU_BEST])


main = stage_main("segment", run_segment)


if __name__ == "__main__":
    main()
