"""Reading a stage's checkpoint, with errors that name the file and the fix.

Every checkpoint records the stage that wrote it (``ficklenet_stage``:
``classify`` or ``segment``) and its resolved config
(``hyper_parameters.config``); a missing, unreadable or other-stage file is
refused here, before any output is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from ficklenet.config.stages import STAGES, readers_of
from ficklenet.errors import UserFileNotFoundError, UserValueError

#: The folder of a training run's checkpoints (``best.ckpt``, ``last.ckpt``).
CHECKPOINT_DIR = "checkpoints"


def checkpoint_path(run_dir: str | Path, name: str = "last") -> Path:
    """``<run_dir>/checkpoints/<name>.ckpt``. ``last``: the state at the end of the
    latest epoch, or where a preempted run stopped: what a rerun resumes from and
    what later stages read; ``best``: the best validation score's."""
    return Path(run_dir) / CHECKPOINT_DIR / f"{name}.ckpt"


def _input_of(stage: str) -> str | None:
    """The apps that read ``stage``'s checkpoint, and the key they read it from."""
    readers = readers_of(stage)
    apps = dict.fromkeys(f"{spec.command} ({key}=...)" for spec, key in readers)
    return " or ".join(apps) or None


def read_checkpoint(
    path: str | Path,
    stage: str,
    key: str | None = None,
    map_location: Any = "cpu",
    mmap: bool = False,
) -> dict[str, Any]:
    """The checkpoint at ``path``, which must be one ``stage`` wrote.

    ``key`` is the config key that named the file (shown in errors); ``mmap``
    maps tensors instead of reading them (a cheap check of a large file).
    """
    path = Path(path)
    label = f"{key}={path}" if key else str(path)
    spec = STAGES[stage]
    wanted = (
        f"pass the checkpoint written by {spec.command} (<run>/checkpoints/best.ckpt or last.ckpt)."
    )
    if not path.is_file():
        raise UserFileNotFoundError(f"{label}: no such file; {wanted}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
        raise UserValueError(
            f"{label} could not be read as a checkpoint ({type(exc).__name__}: {exc}); it may "
            f"be truncated or not a checkpoint at all: {wanted}"
        ) from exc
    found = ckpt.get("ficklenet_stage") if isinstance(ckpt, dict) else None
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    config = hparams.get("config") if isinstance(hparams, dict) else None
    if found != stage or not isinstance(config, dict):
        what = f"a {found!r}-stage checkpoint" if found else "not a ficklenet checkpoint"
        reader = _input_of(found) if found in STAGES else None
        hint = f" A {found!r}-stage checkpoint is the input of {reader}." if reader else ""
        raise UserValueError(
            f"{label} is {what}, not a {spec.checkpoint} checkpoint: {wanted}{hint}"
        )
    return ckpt


M = TypeVar("M", bound=pl.LightningModule)


def rebuild(
    cls: type[M], path: str | Path, stage: str, key: str | None, map_location: Any = "cpu"
) -> M:
    """The trained module in a ``stage`` checkpoint: built from the config inside it
    (no ImageNet file needed), its weights loaded, and its own checkpoint state
    (best metric so far) restored by its ``on_load_checkpoint``, as when Lightning
    resumes it; any other file is refused by :func:`read_checkpoint`."""
    ckpt = read_checkpoint(path, stage, key=key, map_location=map_location)
    model = cls(ckpt["hyper_parameters"]["config"], load_pretrained=False)
    model.load_state_dict(ckpt["state_dict"])
    model.on_load_checkpoint(ckpt)
    return model


def keep_config(module: pl.LightningModule, config: dict[str, Any] | DictConfig) -> DictConfig:
    """Store the resolved config as ``module``'s hyper-parameters — so it is inside
    every checkpoint, where :func:`read_checkpoint` finds it — and return it.

    The hyper-parameters also say ``load_pretrained=False``: they are what
    Lightning's ``load_from_checkpoint`` rebuilds the module with, and a rebuilt
    module takes every weight from the checkpoint, so it must not ask for the
    ImageNet file its backbone was first initialised from.
    """
    # Plain values only (choices as strings): a checkpoint must load with
    # torch.load(weights_only=True), which refuses the project's classes.
    node = config if isinstance(config, DictConfig) else OmegaConf.create(config)
    config = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    module.save_hyperparameters({"config": config, "load_pretrained": False})
    return OmegaConf.create(config)
