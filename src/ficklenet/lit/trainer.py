"""Lightning Trainer and callbacks from the ``trainer`` config.

One place builds them for every training stage, so checkpoint layout
(``<run>/checkpoints/{best,last}.ckpt``), reseeding and progress behave the same for
the classifier and the segmenter, on one CPU or many GPUs. Loggers:
:mod:`ficklenet.lit.loggers`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
    TQDMProgressBar,
)
from pytorch_lightning.loggers import Logger

from ficklenet.checkpoints import CHECKPOINT_DIR, checkpoint_path
from ficklenet.lit.processes import lightning_trainer, process_settings

log = logging.getLogger(__name__)


class SetEpochCallback(Callback):
    """Tell the training set which epoch starts, so per-item augmentation
    streams (seed, epoch, index) differ between epochs and survive resume."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        dataset = getattr(dm, "train_set", None) if dm is not None else None
        if dataset is not None and hasattr(dataset, "set_epoch"):
            dataset.set_epoch(trainer.current_epoch)


class StepSeedCallback(Callback):
    """Reseed torch's RNGs before every training batch from (seed, step, rank,
    micro-batch).

    Everything random inside a batch — FickleNet's masks (drawn from a seed taken
    from the global RNG), dropout in the DeepLab heads — then depends only on where
    the batch is in training, so a run resumed from ``last.ckpt`` draws exactly what
    an uninterrupted run draws (a checkpoint does not hold the RNG states), ranks
    draw independent streams, and with ``trainer.accumulate_grad_batches=k`` each of
    the k micro-batches of one optimiser step draws its own masks (their index in
    the step, ``batch_idx mod k``, enters the seed; checkpoints fall on epoch ends,
    where the count restarts).
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        micro = batch_idx % max(1, int(trainer.accumulate_grad_batches))
        torch.manual_seed(step_seed(self.seed, trainer.global_step, trainer.global_rank, micro))


class LogIntervalCallback(Callback):
    """Log the training steps at least once an epoch: Lightning's
    ``log_every_n_steps`` becomes ``min(trainer.log_every_n_steps, the epoch's
    training batches)`` (after ``trainer.limit_train_batches``), so a short epoch
    (``debug=fast``, a small dataset) still logs its steps instead of warning that
    it logs none."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        if stage != "fit" or dm is None or trainer.log_every_n_steps < 1:
            return
        try:
            batches = len(dm.train_dataloader())  # this process's share
        except TypeError:  # an iterable without a length
            return
        limit = trainer.limit_train_batches
        batches = min(batches, int(limit)) if isinstance(limit, int) else int(batches * limit)
        if 1 <= batches < trainer.log_every_n_steps:
            log.debug("logging every %d steps: an epoch has %d batches", batches, batches)
            trainer.log_every_n_steps = batches


def step_seed(seed: int, step: int, rank: int, micro: int = 0) -> int:
    """A 63-bit seed for micro-batch ``micro`` of training step ``step`` on ``rank``
    (SeedSequence mixing; without accumulation every micro index is 0)."""
    entropy = [int(seed), int(step), int(rank)] + ([int(micro)] if micro else [])
    state = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def build_trainer(
    trainer_cfg: Any,
    run_dir: Path,
    logger: Logger | None,
    monitor: str,
    mode: str = "max",
    seed: int = 0,
    callbacks_cfg: Any = None,
) -> pl.Trainer:
    """A Trainer writing checkpoints to ``<run_dir>/checkpoints``: ``best.ckpt``
    by ``monitor`` and ``last.ckpt`` (for resume) after every epoch, each written
    whole or not at all (Lightning saves through an fsspec transaction: a temporary
    file moved into place). Training steps are reseeded from ``seed``
    (:class:`StepSeedCallback`), so resumed runs match uninterrupted ones, and
    logged at least once an epoch (:class:`LogIntervalCallback`).
    ``callbacks_cfg`` (the ``callbacks`` group) adds early stopping on ``monitor``."""
    kwargs = OmegaConf.to_container(trainer_cfg, resolve=True)
    assert isinstance(kwargs, dict)
    show_progress = bool(kwargs.pop("enable_progress_bar", True))
    ckpt_dir = str(run_dir / CHECKPOINT_DIR)
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
        LogIntervalCallback(),
    ]
    if logger is not None:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if show_progress:
        callbacks.append(RichProgressBar() if sys.stdout.isatty() else TQDMProgressBar())
    stopping = callbacks_cfg.get("early_stopping") if callbacks_cfg is not None else None
    if stopping is not None:
        callbacks.append(
            EarlyStopping(
                monitor=monitor,
                mode=mode,
                patience=int(stopping.patience),
                min_delta=float(stopping.min_delta),
            )
        )
    for key in ("gradient_clip_val", "val_check_interval", "profiler"):
        if kwargs.get(key) is None:
            kwargs.pop(key, None)
    for key in ("limit_train_batches", "limit_val_batches"):
        # 1.0 (every batch) is Lightning's default; passed, Lightning prints that it is.
        if isinstance(kwargs.get(key), float) and kwargs[key] == 1.0:
            kwargs.pop(key)
    # Where and how fast are decided in ficklenet.lit.processes.
    for key in (
        *process_settings(trainer_cfg),
        *("channels_last", "tf32", "benchmark", "compile", "requeue_signal", "timeout_s"),
    ):
        kwargs.pop(key, None)
    return lightning_trainer(
        trainer_cfg,
        run_dir,
        checkpoint=checkpoint_path(run_dir),
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        enable_progress_bar=show_progress,
        **kwargs,
    )
