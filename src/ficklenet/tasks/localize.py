"""``ficklenet-localize``: pipeline stage 2, localization maps and seeds.

    ficklenet-localize classifier.ckpt=runs/classify/<time>/checkpoints/last.ckpt
    ficklenet-localize classifier.ckpt=... -m localize.n=1,10,50,200
    ficklenet-localize classifier.ckpt=... trainer=ddp trainer.devices=4

Writes into the run directory ``maps/<id>.npz`` (float16 maps of the present
classes at image size, max-normalised, with their class indices),
``seeds/<id>.png`` (palette PNG, 255 = unlabelled), ``overlays/`` for a sample,
``run_record.json`` (the checkpoint and settings the outputs came from) and
``metrics.json`` (seed and CAM quality where the split has ground truth).

Rerunning into the same directory resumes: finished images are skipped. A run
against another checkpoint or other settings refuses to mix its outputs with
the ones there unless ``localize.overwrite=true``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from ficklenet.data.datamodule import check_toy_root, ensure_dataset, make_reader
from ficklenet.errors import UserFileNotFoundError, UserValueError
from ficklenet.lit.classifier import FickleClassifier
from ficklenet.lit.localizer import LocalizeDataModule, Localizer, image_groups, is_done
from ficklenet.lit.loggers import Table, build_logger, close_logger, log_results
from ficklenet.lit.processes import lightning_trainer, speed_up
from ficklenet.lit.rank_watch import telling_lost_peers
from ficklenet.localization.quality import HEADLINE_FIGURES, quality_tables, score_localization
from ficklenet.metric_names import SEED
from ficklenet.models.fickle import check_rate
from ficklenet.tasks.entry_point import stage_main
from ficklenet.tasks.run_dir import RunDir, open_run_dir, run_name
from ficklenet.tasks.run_record import DependsOn, checkpoint_input

log = logging.getLogger(__name__)


def validate_localize(cfg: DictConfig) -> None:
    """Value checks the schema's types cannot express; each names the key."""
    settings = cfg.localize
    if settings.n < 1:
        raise UserValueError(f"localize.n={settings.n}: need at least one stochastic pass")
    if settings.chunk < 1:
        raise UserValueError(f"localize.chunk={settings.chunk}: must be at least 1")
    if settings.batch_size < 1:
        raise UserValueError(f"localize.batch_size={settings.batch_size}: must be at least 1")
    if settings.memory_mb <= 0:
        raise UserValueError(f"localize.memory_mb={settings.memory_mb}: must be positive")
    if not settings.scales or min(settings.scales) <= 0:
        raise UserValueError(f"localize.scales={list(settings.scales)}: need positive scales")
    if cfg.model.p is not None:
        check_rate(cfg.model.p, "model.p")
    check_toy_root(cfg.data)
    if not Path(cfg.classifier.ckpt).is_file():
        raise UserFileNotFoundError(
            f"classifier.ckpt={cfg.classifier.ckpt}: no such file. Train one with "
            "ficklenet-classify and pass <run>/checkpoints/last.ckpt."
        )


# The maps and seeds depend on every localize setting (but where and how the work
# is spread) and on the classifier's checkpoint; an overwrite deletes these.
DEPENDS_ON = DependsOn(
    inputs=checkpoint_input("classifier"), outputs=("maps", "seeds", "overlays", "metrics.json")
)


def run_localize(cfg: DictConfig, run_dir: Path | None = None) -> float:
    """Write maps and seeds for the split; return the seed mIoU (NaN without truth;
    stored, when the run in ``run_dir`` finished earlier with these settings)."""
    validate_localize(cfg)
    # Load (and so check) the checkpoint before the run directory gets anything:
    # a wrong file must not leave a config or record behind.
    classifier = FickleClassifier.from_checkpoint(cfg.classifier.ckpt, key="classifier.ckpt")
    with open_run_dir(
        "localize",
        cfg,
        DEPENDS_ON,
        run_dir,
        overwrite=bool(cfg.localize.overwrite),
        overwrite_key="localize.overwrite",
    ) as run:
        if run.finished is not None:
            return float(run.finished.get(SEED.miou, float("nan")))
        return _localize(cfg, run, classifier)


def _localize(cfg: DictConfig, run: RunDir, classifier: FickleClassifier) -> float:
    run_dir = run.path
    pl.seed_everything(cfg.seed, workers=True)
    ensure_dataset(cfg.data)
    settings = cfg.localize
    reader = make_reader(cfg.data, settings.split)
    ids = reader.ids[: settings.limit] if settings.limit else list(reader.ids)
    trainer = lightning_trainer(
        cfg.trainer,
        run_dir,
        varying_sizes=True,  # whole images: no cuDNN autotuning by default
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=bool(cfg.trainer.enable_progress_bar),
        use_distributed_sampler=False,
        enable_model_summary=False,
    )
    trainer.strategy.barrier()  # rank 0 has removed outputs of other settings
    done_now, seconds = localize_images(trainer, cfg, classifier, reader, ids, run_dir)
    if not trainer.is_global_zero:
        return float("nan")
    missing = [i for i in ids if not is_done(run_dir, i)]
    if missing:
        raise RuntimeError(f"{len(missing)} images have no outputs (first: {missing[0]})")
    quality = score_localization(
        run_dir,
        reader if not settings.limit else reader.subset(ids),
        list(settings.cam_bg_sweep),
        progress=bool(cfg.trainer.enable_progress_bar),
        fg_threshold=float(settings.fg_threshold),
    )
    metrics = {
        "stage": "localize",
        "images": len(ids),
        "localized_now": done_now,
        "seconds": seconds,
        "images_per_second": done_now / seconds if done_now and seconds > 0 else None,
        "n": int(settings.n),
        "formula": settings.formula,
        "model.p": float(classifier.head.p if cfg.model.p is None else cfg.model.p),
        **quality,
    }
    run.write_metrics(metrics)
    report_to_logger(cfg, run_dir, run.config, metrics)
    _log_quality(metrics)
    return float(metrics.get(SEED.miou, float("nan")))


def localize_images(
    trainer: pl.Trainer,
    cfg: DictConfig,
    classifier: FickleClassifier,
    reader: Any,
    ids: list[str],
    run_dir: Path,
) -> tuple[int, float]:
    """Maps and seeds for the images of ``ids`` not done yet, split over the
    trainer's processes; (images done now, seconds)."""
    settings = cfg.localize
    index = {image_id: i for i, image_id in enumerate(reader.ids)}
    todo = [i for i in ids if not is_done(run_dir, i)]
    pending = {index[i] for i in todo}
    # Groups of the whole id list, so an image's batch never depends on what is left.
    groups = [
        g
        for g in image_groups([index[i] for i in ids], int(settings.batch_size))
        if pending.intersection(g)
    ]
    log.info(
        "%d of %d images to localize (%d already done), %d groups of up to %d -> %s",
        len(todo),
        len(ids),
        len(ids) - len(todo),
        len(groups),
        settings.batch_size,
        run_dir,
    )
    speed_up(classifier, cfg.trainer)
    overlay_ids = set(sorted(ids)[: settings.overlays])
    module = Localizer(
        classifier, settings, run_dir, reader, int(cfg.seed), overlay_ids, p=cfg.model.p
    )
    start = time.perf_counter()
    with telling_lost_peers(trainer.world_size):
        if todo:
            trainer.predict(
                module,
                datamodule=LocalizeDataModule(reader, groups, cfg.data.num_workers),
                return_predictions=False,
            )
        trainer.strategy.barrier()
    return len(todo), time.perf_counter() - start


def _log_quality(metrics: dict[str, Any]) -> None:
    if not metrics.get("scored_images"):
        return
    log.info(
        "seeds: mIoU %.4f precision %.4f recall %.4f labelled %.3f | CAM best mIoU %.4f "
        "at bg %.2f, object recall %.3f (%d images)",
        *(metrics[key] for key in HEADLINE_FIGURES),
        metrics["scored_images"],
    )


def report_to_logger(
    cfg: DictConfig, run_dir: Path, config: dict[str, Any], metrics: dict[str, Any]
) -> None:
    """Seed and CAM quality to the logger: the headline figures as scalars, the CAM
    mIoU and object-recall curves and the per-class seed IoU as tables."""
    logger = build_logger(cfg.logger, run_dir, run_name(cfg, run_dir), config)
    try:
        keys = (*HEADLINE_FIGURES, "images_per_second")
        tables = {
            name: Table(columns, rows, curve=curve)
            for name, (columns, rows, curve) in quality_tables(metrics).items()
        }
        log_results(logger, {k: metrics.get(k) for k in keys}, tables, run_dir)
    finally:
        close_logger(logger)


main = stage_main("localize", run_localize)


if __name__ == "__main__":
    main()
