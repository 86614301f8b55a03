"""Lightning Trainer, loggers and callbacks from the ``trainer``/``logger`` configs.

One place builds them for every training stage, so metric names, checkpoint
layout (``<run>/checkpoints/{best,last}.ckpt``) and logging behave the same for
the classifier and the segmenter, on one CPU or many GPUs.
"""

from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.loggers.logger import rank_zero_experiment
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import (
    Callback,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
    TQDMProgressBar,
)
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class SetEpochCallback(Callback):
    """Tell the training set which epoch starts, so per-item augmentation
    streams (seed, epoch, index) differ between epochs and survive resume."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        dataset = getattr(dm, "train_set", None) if dm is not None else None
        if dataset is not None and hasattr(dataset, "set_epoch"):
            dataset.set_epoch(trainer.current_epoch)


class StepSeedCallback(Callback):
    """Reseed torch's RNGs before every training step from (seed, step, rank).

    Everything random inside a step — FickleNet's masks (drawn from a seed taken
    from the global RNG), dropout in the DeepLab heads — then depends only on the
    step, so a run resumed from ``last.ckpt`` draws exactly what an uninterrupted
    run draws (a checkpoint does not hold the RNG states), and ranks draw
    independent streams.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        torch.manual_seed(step_seed(self.seed, trainer.global_step, trainer.global_rank))


def step_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit seed for training step ``step`` on ``rank`` (SeedSequence mixing)."""
    state = np.random.SeedSequence([int(seed), int(step), int(rank)]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts;
    this one continues it (a resumed run keeps the rows of the attempts before)."""

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if path.is_file():
            with path.open(newline="") as file:
                self.metrics_keys = sorted(next(csv.reader(file), []))


class ResumableCSVLogger(CSVLogger):
    """``logs/metrics.csv`` across resumes: the rows of every attempt, in order
    (steps replayed after a kill appear again; the later rows are the ones kept
    in the checkpoint's history)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def build_logger(logger_cfg: Any, run_dir: Path, name: str, config: dict | None) -> Logger | None:
    """csv (default), tensorboard or wandb (offline unless ``logger.offline=false``)."""
    kind = logger_cfg.name
    if kind == "none":
        return None
    if kind == "csv":
        return ResumableCSVLogger(
            save_dir=str(run_dir), name="logs", version="", flush_logs_every_n_steps=10
        )
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
    seed: int = 0,
) -> pl.Trainer:
    """A Trainer writing checkpoints to ``<run_dir>/checkpoints``: ``best.ckpt``
    by ``monitor`` and ``last.ckpt`` (for resume) after every epoch, each written
    whole or not at all (Lightning saves through an fsspec transaction: a temporary
    file moved into place). Training steps are reseeded from ``seed``
    (:class:`StepSeedCallback`), so resumed runs match uninterrupted ones."""
    kwargs = OmegaConf.to_container(trainer_cfg, resolve=True)
    assert isinstance(kwargs, dict)
    show_progress = bool(kwargs.pop("enable_progress_bar", True))
    ckpt_dir = str(run_dir / "checkpoints")
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="best",
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            auto_insert_metric_name=False,
            enable_version_counter=False,  # overwrite: never best-v1.ckpt beside it
        ),
        # last.ckpt after every epoch: its own callback, because Lightning 2.6's
        # save_last=True writes last.ckpt only when a best checkpoint is written,
        # so a run whose metric stalls would resume from an old epoch.
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="last",
            save_top_k=1,
            monitor=None,
            enable_version_counter=False,
        ),
        SetEpochCallback(),
        StepSeedCallback(seed),
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
