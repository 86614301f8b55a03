"""Run a ficklenet console entry point and SIGKILL it (or signal it) at a chosen point.

    python -m tests.fault_injection ficklenet.tasks.classify:main <args...>

with ``FICKLENET_KILL_AT=train:<global step>`` (before that training step) or
``predict:<batch index>`` (before that prediction batch, e.g. localization), and
optionally ``FICKLENET_KILL_IN=<text>``: only in a trainer whose run directory
contains the text (one job of a sweep, one stage of the pipeline). The kill is a
real ``SIGKILL``: no Python cleanup, no ``finally``, like a preempted cluster job.
``FICKLENET_KILL_WITH=<signal name>`` (``SIGUSR1``, ``SIGTERM``) sends that signal
instead, once: a cluster's warning before the kill. ``FICKLENET_KILL_RANK=<r>``: only
the process of that rank (a DDP job losing one process).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import Any

import pytorch_lightning as pl


class KillAt(pl.Callback):
    def __init__(self, spec: str, only_in: str | None, signum: signal.Signals) -> None:
        kind, value = spec.split(":")
        self.kind, self.value, self.only_in, self.signum = kind, int(value), only_in, signum
        self.sent = False

    def _armed(self, trainer: pl.Trainer) -> bool:
        rank = os.environ.get("FICKLENET_KILL_RANK")
        return (
            not self.sent
            and (self.only_in is None or self.only_in in str(trainer.default_root_dir))
            and (rank is None or int(rank) == trainer.global_rank)
        )

    def _send(self) -> None:
        self.sent = True
        os.kill(os.getpid(), self.signum)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.kind == "train" and trainer.global_step == self.value and self._armed(trainer):
            self._send()

    def on_predict_batch_start(
        self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        if self.kind == "predict" and batch_idx == self.value and self._armed(trainer):
            self._send()


def install(spec: str, only_in: str | None, signum: signal.Signals = signal.SIGKILL) -> None:
    """Every Trainer built from now on gets the :class:`KillAt` callback."""
    original = pl.Trainer.__init__

    def init(self: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        kill = KillAt(spec, only_in, signum)
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), kill]
        original(self, *args, **kwargs)

    pl.Trainer.__init__ = init  # type: ignore[method-assign]


def main() -> None:
    # A DDP launcher restarts this module for the other ranks with the app's own
    # arguments only: the entry point reaches them through the environment.
    if "FICKLENET_ENTRY" in os.environ:
        target, args = os.environ["FICKLENET_ENTRY"], sys.argv[1:]
    else:
        target, *args = sys.argv[1:]
        os.environ["FICKLENET_ENTRY"] = target
    if spec := os.environ.get("FICKLENET_KILL_AT"):
        signum = signal.Signals[os.environ.get("FICKLENET_KILL_WITH", "SIGKILL")]
        install(spec, os.environ.get("FICKLENET_KILL_IN"), signum)
    module, func = target.split(":")
    sys.argv = [sys.argv[0], *args]
    getattr(importlib.import_module(module), func)()


if __name__ == "__main__":
    main()
