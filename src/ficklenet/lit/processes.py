"""Where a stage runs, in how many processes and how fast: one place, for every stage.

The ``trainer`` config's ``accelerator``, ``devices``, ``strategy``, ``num_nodes`` and
``precision`` (:func:`process_settings`) decide it for all of them: the training
stages and localization run in a Lightning ``Trainer`` built here
(:func:`lightning_trainer`), evaluation and prediction in Lightning ``Fabric``
(:func:`launch_fabric`), which splits images between processes without a training
loop. On one machine both start the other processes themselves (a Hydra app reruns
with the same run directory); under SLURM or torchrun they join the processes that
exist.

On a GPU the same config makes them fast (:func:`speed_up`): ``precision=auto-mixed``
is bf16 mixed precision where the GPU has it and fp16 with loss scaling elsewhere;
``tf32`` allows TensorFloat-32 matmuls and convolutions; ``benchmark`` lets cuDNN
pick its fastest kernels (by default on for training crops, off under
``trainer.deterministic=true`` and for whole images of many sizes);
``channels_last`` stores images and convolution weights NHWC; ``compile``
compiles the backbone with ``torch.compile`` in place (``nn.Module.compile``: the
state-dict keys, and so checkpoints, resume and DDP, are unchanged). On a CPU they do
nothing but ``compile``.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric import Fabric
from lightning_fabric.strategies import DDPStrategy as FabricDDPStrategy
from pytorch_lightning.strategies import DDPStrategy
from torch import nn

from ficklenet.lit.preemption import preemption_settings
from ficklenet.lit.quiet import quiet
from ficklenet.lit.rank_watch import RankWatch

__all__ = [
    "launch_fabric",
    "lightning_trainer",
    "on_gpu",
    "process_settings",
    "resolve_precision",
    "speed_up",
]

log = logging.getLogger(__name__)


def on_gpu(trainer_cfg: Any) -> bool:
    """Whether the stage will run on CUDA GPUs."""
    accelerator = str(trainer_cfg.accelerator)
    return accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()


def resolve_precision(precision: Any, gpu: bool) -> Any:
    """``auto-mixed``: bf16 mixed precision on a GPU that has bf16 (Ampere and
    later), fp16 mixed (with loss scaling) on older GPUs, float32 on a CPU. Other
    values are Lightning's own and pass through."""
    if str(precision) != "auto-mixed":
        return precision
    if not gpu:
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def process_settings(trainer_cfg: Any, fabric: bool = False) -> dict[str, Any]:
    """The keys of ``trainer`` that say where and in how many processes (for Lightning
    ``Fabric`` when ``fabric``, else for a ``Trainer``)."""
    return {
        "accelerator": str(trainer_cfg.accelerator),
        "devices": trainer_cfg.devices,
        "strategy": _strategy(trainer_cfg, fabric),
        "num_nodes": int(trainer_cfg.num_nodes),
        "precision": resolve_precision(trainer_cfg.precision, on_gpu(trainer_cfg)),
    }


def _strategy(trainer_cfg: Any, fabric: bool) -> Any:
    """``trainer.strategy``; for ``ddp`` with ``trainer.timeout_s`` set, Lightning's
    DDP strategy with that timeout: how long a process waits for the others in a
    collective operation before the job ends with an error (torch's default: 30
    minutes)."""
    strategy, timeout = trainer_cfg.strategy, trainer_cfg.get("timeout_s")
    if timeout is None or not str(strategy).startswith("ddp"):
        return strategy
    if str(strategy) != "ddp":
        log.warning("trainer.timeout_s applies to strategy=ddp only; %s keeps its own", strategy)
        return strategy
    ddp = FabricDDPStrategy if fabric else DDPStrategy
    return ddp(timeout=timedelta(seconds=float(timeout)))


def _backends(trainer_cfg: Any, varying_sizes: bool) -> dict[str, Any]:
    """Set the process-wide GPU switches; return the Trainer's share of them.

    ``benchmark`` left null is on for fixed-size inputs (training crops) unless
    ``trainer.deterministic``; off where inputs vary in size (``varying_sizes``:
    localize, evaluate, predict on whole images), since cuDNN would tune again for
    every new size and may pick other kernels from one run or rank to the next,
    which would break bit-identical maps.
    """
    if not on_gpu(trainer_cfg):
        return {}
    tf32 = bool(trainer_cfg.get("tf32", True))
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    benchmark = trainer_cfg.get("benchmark")
    if benchmark is None:
        benchmark = not bool(trainer_cfg.get("deterministic", False)) and not varying_sizes
    return {"benchmark": bool(benchmark)}


def lightning_trainer(
    trainer_cfg: Any,
    run_dir: Path,
    varying_sizes: bool = False,
    checkpoint: Path | None = None,
    **kwargs: Any,
) -> pl.Trainer:
    """A Lightning Trainer in the configured processes, writing under ``run_dir``;
    ``varying_sizes``: inputs are whole images of many sizes (see :func:`_backends`);
    ``checkpoint``: where a training stage saves its state when a SLURM job is
    preempted (:mod:`ficklenet.lit.preemption`); ``kwargs`` are the stage's own
    Trainer settings (loop, callbacks, logger)."""
    quiet()  # before the Trainer: it prints a tip when built
    settings = {**process_settings(trainer_cfg), **_backends(trainer_cfg, varying_sizes)}
    preemption = preemption_settings(trainer_cfg, checkpoint)
    callbacks = [*(kwargs.pop("callbacks", None) or []), *preemption["callbacks"], RankWatch()]
    return pl.Trainer(
        default_root_dir=str(run_dir),
        plugins=preemption["plugins"] or None,
        callbacks=callbacks,
        **settings,
        **kwargs,
    )


def launch_fabric(trainer_cfg: Any) -> Fabric:
    """Lightning Fabric in the configured processes, launched. Its stages
    (evaluate, predict) run on whole images of many sizes."""
    quiet()
    switches = _backends(trainer_cfg, varying_sizes=True)
    if switches:
        torch.backends.cudnn.benchmark = switches["benchmark"]
    fabric = Fabric(**process_settings(trainer_cfg, fabric=True))
    fabric.launch()
    return fabric


def speed_up(module: nn.Module, trainer_cfg: Any) -> nn.Module:
    """``module`` (a LightningModule with a ``backbone``, or a network) with the
    configured ``channels_last`` (GPU only) and ``compile`` applied, in place."""
    if bool(trainer_cfg.get("channels_last", False)) and on_gpu(trainer_cfg):
        module.to(memory_format=torch.channels_last)
        module.channels_last = True
    if bool(trainer_cfg.get("compile", False)):
        backbone = _backbone(module)
        if backbone is None:
            log.warning("trainer.compile=true: %s has no backbone to compile", type(module))
        else:
            backbone.compile()
    return module


def _backbone(module: nn.Module) -> nn.Module | None:
    for path in ("backbone", "net.backbone"):
        target: Any = module
        for name in path.split("."):
            target = getattr(target, name, None)
        if isinstance(target, nn.Module):
            return target
    return None
