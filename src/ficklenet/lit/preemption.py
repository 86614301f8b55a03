"""Preemption under SLURM: save, requeue, stop, and resume exactly where it stopped.

A cluster that takes a job's nodes back warns it first: ``sbatch --signal=USR1@120``
sends SIGUSR1 two minutes before the end, and preemption sends SIGTERM before the
kill. Lightning's own SLURM handler saves an ``hpc_ckpt_N.ckpt`` from inside the
signal handler, wherever the process happens to be (between two optimiser updates,
or in the middle of one), and resumes from it with the epoch's order restarted. Here
the signal only raises a flag, and :class:`Preemption` acts at the next boundary
where the state is whole:

- training (classify, segment): after the batch that completes an optimiser step,
  every process agrees (one all-reduce), the state is saved to the run's
  ``checkpoints/last.ckpt`` (written whole or not at all; after an epoch's last
  batch, its validation and epoch-end ``last.ckpt`` come first); before the next
  batch, rank 0 runs ``scontrol requeue <job>`` for the requeue signal (a SIGTERM
  comes from SLURM's own preemption, which requeues by itself), and the stage stops
  with :class:`ficklenet.errors.Preempted` (one line, status 1). The requeued job
  runs the same command; it resumes from ``last.ckpt`` at the next batch
  (:mod:`ficklenet.data.resumable`), takes the run directory's lock over (the same
  SLURM job: :func:`ficklenet.tasks.run_dir.take_lock`) and ends with the weights and
  metrics of an uninterrupted run.
- localize: after the group of images being written (each image is written whole);
  the requeued job localizes the images not done yet.

Active when Lightning detects a SLURM job (``SLURMEnvironment.detect()``: ``srun`` or
``sbatch`` with a job name other than ``bash``/``interactive``) and
``trainer.requeue_signal`` is set (the signal's name, ``SIGUSR1`` by default; null
turns this off and leaves Lightning's defaults).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.plugins.environments import SLURMEnvironment

from ficklenet.choices import RequeueSignal
from ficklenet.errors import Preempted

__all__ = ["Preemption", "preemption_settings", "requeue", "slurm_job"]

log = logging.getLogger(__name__)


def slurm_job() -> str | None:
    """The SLURM job to requeue (``<array job>_<task>`` for an array task), or None."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job:
        return f"{array_job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID") or None


def requeue(job: str) -> bool:
    """``scontrol requeue <job>``; whether it succeeded (a failure is logged)."""
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        log.warning("preempted, but scontrol is not on PATH: SLURM job %s not requeued", job)
        return False
    result = subprocess.run([scontrol, "requeue", job], capture_output=True, text=True)
    if result.returncode != 0:
        log.warning(
            "scontrol requeue %s failed (status %d): %s",
            job,
            result.returncode,
            result.stderr.strip(),
        )
        return False
    log.info("requeued SLURM job %s", job)
    return True


class Preemption(pl.Callback):
    """Stop at the next whole state after the cluster's warning (module docstring).

    Args:
        requeue_signal: the signal ``sbatch --signal`` sends (requeue the job);
            SIGTERM is also caught (saved and stopped; SLURM requeues).
        checkpoint: where a training stage saves its state (its ``last.ckpt``);
            None for a stage that writes its outputs as it goes (localize).
    """

    def __init__(self, requeue_signal: signal.Signals, checkpoint: Path | None) -> None:
        self.requeue_signal = requeue_signal
        self.checkpoint = checkpoint
        self.received: signal.Signals | None = None
        self.saved: str | None = None  # the state saved on the signal, where

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.received is None or signum == self.requeue_signal:
            self.received = signal.Signals(signum)
        log.info("received %s: stopping at the next whole state", signal.Signals(signum).name)

    def _listen(self) -> None:
        # Installed when the loop starts, after Lightning saved the handlers it
        # restores when the run ends (also after an error): none of this outlives it.
        if threading.current_thread() is threading.main_thread():
            for signum in {self.requeue_signal, signal.SIGTERM}:
                signal.signal(signum, self._on_signal)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._listen()

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._listen()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.saved is not None or (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # inside an optimiser step: its gradients are not in any state
        stop = self.received is not None
        if trainer.world_size > 1:  # every process stops at the same batch, or none
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        if batch_idx + 1 >= trainer.num_training_batches:
            # The epoch's last batch: its validation and last.ckpt come first (a state
            # saved before them would resume without that validation).
            self.saved = f"{self.checkpoint} (the end of epoch {trainer.current_epoch})"
            return
        assert self.checkpoint is not None
        trainer.save_checkpoint(self.checkpoint, weights_only=False)
        self.saved = (
            f"{self.checkpoint} (epoch {trainer.current_epoch}, step {trainer.global_step})"
        )

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # Stop here, not when saving: the saved step's logged metrics are written
        # between the two.
        if self.saved is not None:
            self._stop(trainer, f"state saved in {self.saved}")

    def on_predict_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.received is not None:
            self._stop(trainer, f"outputs of {batch_idx + 1} groups written")

    def _stop(self, trainer: pl.Trainer, saved: str) -> None:
        received = self.received or self.requeue_signal
        job = slurm_job()
        requeued = ""
        if received == self.requeue_signal and trainer.is_global_zero and job is not None:
            requeued = f"; SLURM job {job} requeued" if requeue(job) else ""
        raise Preempted(
            f"preempted ({received.name}): {saved}{requeued}. Run the same command again "
            "(a requeued job does) to resume there."
        )


def preemption_settings(trainer_cfg: Any, checkpoint: Path | None) -> dict[str, Any]:
    """The Trainer's ``plugins`` and ``callbacks`` for preemption: none outside
    SLURM or with ``trainer.requeue_signal=null``; under SLURM, Lightning's SLURM
    environment with its own requeue handler off, and :class:`Preemption`."""
    name = trainer_cfg.get("requeue_signal")
    if name is None or not SLURMEnvironment.detect():
        return {"plugins": [], "callbacks": []}
    signum = signal.Signals[str(RequeueSignal.parse(name, "trainer.requeue_signal"))]
    environment = SLURMEnvironment(auto_requeue=False, requeue_signal=signum)
    return {"plugins": [environment], "callbacks": [Preemption(signum, checkpoint)]}
