"""The training shell the classify and segment stages share.

:func:`training_run` opens the run directory and says whether the run finished
earlier (then the stage returns its stored metrics: a rerun sweep skips its
finished jobs); :func:`fit` builds logger and trainer, resumes from
``last.ckpt`` when there is one, trains, and always closes the logger.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig

from ficklenet.checkpoints import read_checkpoint
from ficklenet.lit.loggers import build_logger, close_logger
from ficklenet.lit.processes import speed_up
from ficklenet.lit.rank_watch import telling_lost_peers
from ficklenet.lit.trainer import build_trainer
from ficklenet.tasks.run_dir import (
    RunDir,
    open_run_dir,
    resolve_resume,
    run_name,
    scalar_metrics,
)
from ficklenet.tasks.run_record import DependsOn


@contextmanager
def training_run(
    cfg: DictConfig, run_dir: Path | None, stage: str, depends_on: DependsOn
) -> Iterator[RunDir]:
    """The stage's run directory, opened (:func:`ficklenet.tasks.run_dir.open_run_dir`).

    Refuses, before anything is written, a ``ckpt_path`` of another stage and a run
    directory whose earlier run had other settings or inputs; a run that finished
    earlier with the same ones comes back with ``finished`` set (the stage returns its
    stored metrics); otherwise every RNG is seeded from ``seed``.
    """
    check_resume_checkpoint(cfg.ckpt_path, stage)
    with open_run_dir(stage, cfg, depends_on, run_dir) as run:
        if run.finished is None:
            pl.seed_everything(cfg.seed, workers=True)
        yield run


def check_resume_checkpoint(ckpt_path: str | None, stage: str) -> None:
    """An explicit ``ckpt_path`` must be a checkpoint of this stage."""
    if ckpt_path in (None, "last") or not Path(ckpt_path).is_file():
        return  # resolve_resume explains a missing file
    read_checkpoint(ckpt_path, stage, key="ckpt_path", mmap=True)


def fit(
    cfg: DictConfig,
    run: RunDir,
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    monitor: str,
) -> tuple[pl.Trainer, dict[str, float]]:
    """Train ``model`` (maximising ``monitor``); return the trainer and its final
    scalar metrics. Resumes from ``ckpt_path`` or the run's ``last.ckpt``."""
    run_dir = run.path
    logger = build_logger(cfg.logger, run_dir, run_name(cfg, run_dir), run.config)
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
        with telling_lost_peers(trainer.world_size):
            resume = resolve_resume(cfg.ckpt_path, run_dir)
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume)
        return trainer, scalar_metrics(trainer.callback_metrics)
    finally:
        close_logger(logger)
