"""Lightning Trainer, loggers and callbacks from the ``trainer``/``logger`` configs.

One place builds them for every training stage, so metric names, checkpoint
layout (``<run>/checkpoints/{best,last}.ckpt``) and logging behave the same for
the classifier and the segmenter, on one CPU or many GPUs.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import (
    Callback,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
    TQDMProgressBar,
)
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger


class SetEpochCallback(Callback):
    """Tell the training set which epoch starts, so per-item augmentation
    streams (seed, epoch, index) differ between epochs and survive resume."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        dataset = getattr(dm, "train_set", None) if dm is not None else None
        if dataset is not None and hasattr(dataset, "set_epoch"):
            dataset.set_epoch(trainer.current_epoch)


def build_logger(logger_cfg: Any, run_dir: Path, name: str, config: dict | None) -> Logger | None:
    """csv (default), tensorboard or wandb (offline unless ``logger.offline=false``)."""
    kind = logger_cfg.name
    if kind == "none":
        return None
    if kind == "csv":
        return CSVLogger(save_dir=str(run_dir), name="logs", version="")
    if kind == "tensorboard":
        return TensorBoardLogger(save_dir=str(run_dir), name="logs", version="")
    if kind == "wandb":
        logger = WandbLogger(
            project=logger_cfg.project,
            entity=logger_cfg.entity,
            group=logger_cfg.group,
            tags=list(logger_cfg.tags),
            name=name,
            save_dir=str(run_dir),
            offline=bool(logger_cfg.offline),
        )
        if config is not None:
            logger.log_hyperparams(config)
        return logger
    raise ValueError(f"logger.name must be csv, tensorboard, wandb or none, got {kind!r}")


def close_logger(logger: Logger | None) -> None:
    """Finish a wandb run (also after a crash, so its files are complete).

    Called from the stages' ``finally``: when an exception is propagating the run
    is finished with exit code 1 (shown as failed once synced). Errors while
    finishing are logged, never raised over the original one.
    """
    if not isinstance(logger, WandbLogger):
        return
    import wandb

    if wandb.run is None:
        return
    crashed = sys.exc_info()[0] is not None
    try:
        wandb.finish(exit_code=1 if crashed else 0)
    except Exception:  # noqa: BLE001 - never mask the stage's own error
        logging.getLogger(__name__).exception("could not finish the wandb run")


def build_trainer(
    trainer_cfg: Any,
    run_dir: Path,
    logger: Logger | None,
    monitor: str,
    mode: str = "max",
    extra_callbacks: list[Callback] | None = None,
) -> pl.Trainer:
    """A Trainer writing checkpoints to ``<run_dir>/checkpoints``: ``best.ckpt``
    by ``monitor`` and ``last.ckpt`` (for resume) after every epoch."""
    kwargs = OmegaConf.to_container(trainer_cfg, resolve=True)
    assert isinstance(kwargs, dict)
    show_progress = bool(kwargs.pop("enable_progress_bar", True))
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=str(run_dir / "checkpoints"),
            filename="best",
            monitor=monitor,
            mode=mode,
            save_last=True,
            auto_insert_metric_name=False,
        ),
        SetEpochCallback(),
    ]
    if logger is not None:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if show_progress:
        callbacks.append(RichProgressBar() if sys.stdout.isatty() else TQDMProgressBar())
    callbacks += extra_callbacks or []
    if kwargs.get("gradient_clip_val") is None:
        kwargs.pop("gradient_clip_val", None)
    return pl.Trainer(
        default_root_dir=str(run_dir),
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        enable_progress_bar=show_progress,
        **kwargs,
    )
