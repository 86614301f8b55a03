"""Optimiser and learning-rate schedule shared by both LightningModules.

Two parameter groups as in DeepLab / DSRG's solver and irn: pretrained layers
at the base learning rate, new layers at ``new_layer_lr_mult`` (10) times it.
Schedules: ``poly`` (lr·(1 - t/T)^power, DeepLab), ``step`` (×gamma every
``step_size`` iterations: DSRG's step 1 uses ×0.33 every 1000) or ``constant``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ficklenet.choices import OptimizerName, Schedule
from ficklenet.errors import UserValueError


def build_optimizer(
    optim_cfg: Any,
    pretrained: list[nn.Parameter],
    new: list[nn.Parameter],
    total_steps: int | float,
    pretrained_is_new: bool = False,
) -> dict[str, Any]:
    """Optimiser + per-step scheduler in Lightning's ``configure_optimizers`` form.

    ``pretrained_is_new``: the "pretrained" group was randomly initialised (no
    ImageNet weights), so it learns at the new-layer rate too.
    """
    base = float(optim_cfg.lr)
    mult = float(optim_cfg.new_layer_lr_mult)
    groups = [
        {
            "params": [p for p in pretrained if p.requires_grad],
            "lr": base * (mult if pretrained_is_new else 1.0),
        },
        {"params": [p for p in new if p.requires_grad], "lr": base * mult},
    ]
    groups = [g for g in groups if g["params"]]
    name = OptimizerName.parse(optim_cfg.name, "optim.name")
    if name == OptimizerName.sgd:
        opt: torch.optim.Optimizer = torch.optim.SGD(
            groups,
            lr=base,
            momentum=float(optim_cfg.momentum),
            weight_decay=float(optim_cfg.weight_decay),
        )
    else:
        opt = torch.optim.Adam(groups, lr=base, weight_decay=float(optim_cfg.weight_decay))
    schedule = Schedule.parse(optim_cfg.schedule, "optim.schedule")
    total = max(1, int(total_steps)) if total_steps != float("inf") else None
    if schedule == "poly":
        if total is None:
            raise UserValueError(
                "optim.schedule=poly needs a finite number of steps "
                "(set trainer.max_epochs or trainer.max_steps)"
            )
        power = float(optim_cfg.poly_power)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: max(0.0, 1.0 - step / total) ** power
        )
    elif schedule == "step":
        sched = torch.optim.lr_scheduler.StepLR(
            opt, step_size=int(optim_cfg.step_size), gamma=float(optim_cfg.gamma)
        )
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
