"""Where a stage runs and in how many processes: one place, for every stage.

The ``trainer`` config's ``accelerator``, ``devices``, ``strategy``, ``num_nodes`` and
``precision`` (:func:`process_settings`) decide it for all of them: the training
stages and localization run in a Lightning ``Trainer`` built here
(:func:`lightning_trainer`), evaluation and prediction in Lightning ``Fabric``
(:func:`launch_fabric`), which splits images between processes without a training
loop. On one machine both start the other processes themselves (a Hydra app reruns
with the same run directory); under SLURM or torchrun they join the processes that
exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric import Fabric

__all__ = ["launch_fabric", "lightning_trainer", "process_settings"]


def process_settings(trainer_cfg: Any) -> dict[str, Any]:
    """The keys of ``trainer`` that say where and in how many processes."""
    return {
        "accelerator": str(trainer_cfg.accelerator),
        "devices": trainer_cfg.devices,
        "strategy": trainer_cfg.strategy,
        "num_nodes": int(trainer_cfg.num_nodes),
        "precision": trainer_cfg.precision,
    }


def lightning_trainer(trainer_cfg: Any, run_dir: Path, **kwargs: Any) -> pl.Trainer:
    """A Lightning Trainer in the configured processes, writing under ``run_dir``;
    ``kwargs`` are the stage's own Trainer settings (loop, callbacks, logger)."""
    return pl.Trainer(default_root_dir=str(run_dir), **process_settings(trainer_cfg), **kwargs)


def launch_fabric(trainer_cfg: Any) -> Fabric:
    """Lightning Fabric in the configured processes, launched."""
    fabric = Fabric(**process_settings(trainer_cfg))
    fabric.launch()
    return fabric
