"""Run a ficklenet console entry point and SIGKILL it at a chosen point.

    python -m tests.fault_injection ficklenet.tasks.classify:main <args...>

with ``FICKLENET_KILL_AT=train:<global step>`` (before that training step) or
``predict:<batch index>`` (before that prediction batch, e.g. localization), and
optionally ``FICKLENET_KILL_IN=<text>``: only in a trainer whose run directory
contains the text (one job of a sweep, one stage of the pipeline). The kill is a
real ``SIGKILL``: no Python cleanup, no ``finally``, like a preempted cluster job.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import Any

import pytorch_lightning as pl


class KillAt(pl.Callback):
    def __init__(self, spec: str, only_in: str | None) -> None:
        kind, value = spec.split(":")
        self.kind, self.value, self.only_in = kind, int(value), only_in

    def _armed(self, trainer: pl.Trainer) -> bool:
        return self.only_in is None or self.only_in in str(trainer.default_root_dir)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.kind == "train" and trainer.global_step == self.value and self._armed(trainer):
            os.kill(os.getpid(), signal.SIGKILL)

    def on_predict_batch_start(
        self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        if self.kind == "predict" and batch_idx == self.value and self._armed(trainer):
            os.kill(os.getpid(), signal.SIGKILL)


def install(spec: str, only_in: str | None) -> None:
    """Every Trainer built from now on gets the :class:`KillAt` callback."""
    original = pl.Trainer.__init__

    def init(self: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), KillAt(spec, only_in)]
        original(self, *args, **kwargs)

    pl.Trainer.__init__ = init  # type: ignore[method-assign]


def main() -> None:
    target, *args = sys.argv[1:]
    if spec := os.environ.get("FICKLENET_KILL_AT"):
        install(spec, os.environ.get("FICKLENET_KILL_IN"))
    module, func = target.split(":")
    sys.argv = [sys.argv[0], *args]
    getattr(importlib.import_module(module), func)()


if __name__ == "__main__":
    main()
