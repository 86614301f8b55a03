"""The training shell the classify and segment stages share.

:func:`start_training` prepares the run directory and says whether the run
finished earlier (then the stage returns its stored metrics: a rerun sweep skips
its finished jobs); :func:`fit` builds logger and trainer, resumes from
``last.ckpt`` when there is one, trains, and always closes the logger.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from ficklenet.checkpoints import read_checkpoint
from ficklenet.lit.loggers import build_logger, close_logger
from ficklenet.lit.processes import speed_up
from ficklenet.lit.rank_watch import lost_peer
from ficklenet.lit.trainer import build_trainer
from ficklenet.tasks.run_dir import (
    is_rank_zero,
    prepare_run,
    resolve_resume,
    resolve_run_dir,
    run_name,
    scalar_metrics,
)
from ficklenet.tasks.run_record import DependsOn, open_run

log = logging.getLogger(__name__)


def start_training(
    cfg: DictConfig, run_dir: Path | None, stage: str, depends_on: DependsOn
) -> tuple[Path, dict[str, Any], dict[str, Any] | None]:
    """(run directory, resolved config for checkpoints, metrics of a finished run).

    Refuses, before anything is written, a ``ckpt_path`` of another stage and a
    run directory whose earlier run had other settings or inputs
    (:func:`ficklenet.tasks.run_record.open_run` with the stage's ``depends_on``);
    seeds every RNG from ``seed``.
    """
    check_resume_checkpoint(cfg.ckpt_path, stage)
    run_dir = resolve_run_dir(run_dir)
    finished = open_run(run_dir, stage, cfg, depends_on, write=is_rank_zero()).finished
    if finished is not None:
        log.info(
            "%s finished earlier (%s exists): skipped. Delete the folder or choose another "
            "run directory to train again.",
            run_dir,
            run_dir / "metrics.json",
        )
        return run_dir, {}, finished
    run_dir, config = prepare_run(cfg, run_dir)
    pl.seed_everything(cfg.seed, workers=True)
    return run_dir, config, None


def check_resume_checkpoint(ckpt_path: str | None, stage: str) -> None:
    """An explicit ``ckpt_path`` must be a checkpoint of this stage."""
    if ckpt_path in (None, "last") or not Path(ckpt_path).is_file():
        return  # resolve_resume explains a missing file
    read_checkpoint(ckpt_path, stage, key="ckpt_path", mmap=True)


def fit(
    cfg: DictConfig,
    run_dir: Path,
    config: dict[str, Any],
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    monitor: str,
) -> tuple[pl.Trainer, dict[str, float]]:
    """Train ``model`` (maximising ``monitor``); return the trainer and its final
    scalar metrics. Resumes from ``ckpt_path`` or the run's ``last.ckpt``."""
    logger = build_logger(cfg.logger, run_dir, run_name(cfg, run_dir), config)
    try:
        trainer = build_trainer(
            cfg.trainer,
            run_dir,
            logger,
            monitor=monitor,
            mode="max",
            seed=cfg.seed,
            callbacks_cfg=cfg.get("callbacks"),
        )
        speed_up(model, cfg.trainer)
        try:
            resume = resolve_resume(cfg.ckpt_path, run_dir)
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume)
        except RuntimeError as err:
            lost = lost_peer(err, trainer.world_size)
            if lost is None:
                raise
            raise lost from err
        return trainer, scalar_metrics(trainer.callback_metrics)
    finally:
        close_logger(logger)
