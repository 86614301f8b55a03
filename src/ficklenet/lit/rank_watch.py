"""A training process that dies ends the whole job, at once and with a clear message.

With ``trainer=ddp`` / ``ddp_cpu`` on one machine, rank 0 starts the other ranks as
child processes. When one of them dies (killed, out of memory), the others would
wait for it in their next collective operation until the process group's timeout
(``trainer.timeout_s``; torch's default is 30 minutes). Lightning's own observer
notices within 5 seconds but ends the job with SIGKILL and an info line that is
easily lost. :class:`RankWatch` (rank 0, when it started the others) checks the
children every second; when one has ended with a failure it prints one line on
stderr naming the rank, its pid and how it ended, stops the other children and
exits with status 1. Nothing is half-written: checkpoints, maps and seeds are each
written whole (a file moved into place), and the same command resumes from the last
``last.ckpt`` (a stale ``run.lock`` of the dead job is taken over).

A rank waiting in a collective operation for a dead peer notices too: at once when
the peer's connection closes (gloo), else after ``trainer.timeout_s``; where the
processes were started by someone else (``srun``, ``torchrun``), that is how the job
ends. :func:`telling_lost_peers` turns that error into the same one-line message.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl
import torch

from ficklenet.errors import UserError

__all__ = ["RankWatch", "ended", "lost_peer", "telling_lost_peers"]

#: Seconds between two looks at the other processes.
PERIOD_S = 1.0


def ended(returncode: int) -> str:
    """How a process ended, in words: ``status 1``, ``killed by SIGKILL``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"status {returncode}"


# What torch's process groups say when a peer is gone or does not answer.
_LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "timed out", "Timed out")


def lost_peer(error: BaseException, world_size: int) -> UserError | None:
    """A :class:`UserError` saying the job lost a process, when ``error`` is a
    collective operation failing for that reason in a job of several processes."""
    if world_size < 2 or not isinstance(error, RuntimeError):
        return None
    text = str(error)
    if not (isinstance(error, torch.distributed.DistError) or any(s in text for s in _LOST_PEER)):
        return None
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return UserError(
        f"another process of this {world_size}-process job stopped or stopped answering "
        f"({first[:200]}); the job stops. Run the same command again to resume from the "
        "run's last checkpoint (trainer.timeout_s sets how long a process waits)."
    )


@contextmanager
def telling_lost_peers(world_size: int) -> Iterator[None]:
    """Raise :func:`lost_peer`'s one-line error in place of a collective operation's
    failure on a lost peer inside the block; any other error passes as it is."""
    try:
        yield
    except RuntimeError as err:
        lost = lost_peer(err, world_size)
        if lost is None:
            raise
        raise lost from err


class RankWatch(pl.Callback):
    """End the job when a child rank dies (module docstring)."""

    def __init__(self, period_s: float = PERIOD_S) -> None:
        self.period_s = period_s
        self._stop = threading.Event()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        procs = getattr(trainer.strategy.launcher, "procs", None)
        if trainer.global_rank != 0 or not procs:
            return
        self._stop.clear()
        threading.Thread(target=self._watch, args=(list(procs),), daemon=True).start()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._stop.set()

    def _watch(self, procs: list[Any]) -> None:
        while not self._stop.wait(self.period_s):
            for rank, proc in enumerate(procs, start=1):
                code = proc.poll()
                if code:  # None: running; 0: finished its part
                    self._end(rank, proc, code, procs)

    def _end(self, rank: int, proc: Any, code: int, procs: list[Any]) -> None:
        print(
            f"ficklenet: the training process of rank {rank} (pid {proc.pid}) ended "
            f"({ended(code)}); the job stops. Run the same command again to resume from "
            "the run's last checkpoint.",
            file=sys.stderr,
            flush=True,
        )
        for other in procs:
            if other.poll() is None:
                other.kill()
        os._exit(1)  # the main thread may be blocked in a collective waiting for it
