"""Image panels for the experiment logger, whichever logger it is.

The training stages show a few validation images at the end of every
validation epoch: the classifier its class-score (CAM) heat maps, the segmenter
its prediction next to the ground truth. :func:`log_panels` sends them to
wandb (``WandbLogger.log_image``, a PNG per image under the run's
``files/media/images``) or tensorboard (``add_image``, one tag per image), and
does nothing for csv or no logger. Only global rank zero logs. How many images:
``logger.panels`` (0 turns them off).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor

from ficklenet.data.classes import CLASS_NAMES, IGNORE_INDEX, VOC_CLASSES
from ficklenet.data.transforms import denormalize
from ficklenet.geometry import grid_to_image
from ficklenet.viz import label_overlay, map_overlay, side_by_side

__all__ = [
    "cam_panels",
    "log_kept_panels",
    "log_panels",
    "panels_wanted",
    "panel_count",
    "segmentation_panels",
    "supports_panels",
]


def supports_panels(logger: Logger | None) -> bool:
    """True for loggers that take images (wandb, tensorboard)."""
    return isinstance(logger, (WandbLogger, TensorBoardLogger))


def panel_count(config: Any) -> int:
    """``logger.panels`` from a stage config (0 when the key is absent, e.g. in a
    checkpoint written before the key existed)."""
    logger_cfg = config.get("logger") if config is not None else None
    if not logger_cfg:
        return 0
    return max(0, int(logger_cfg.get("panels", 0) or 0))


def panels_wanted(module: Any) -> int:
    """How many validation images a LightningModule should render this epoch
    (0: no image logger, not rank zero, or the sanity check)."""
    trainer = module._trainer
    if trainer is None or trainer.sanity_checking or not trainer.is_global_zero:
        return 0
    return panel_count(module.cfg) if supports_panels(module.logger) else 0


def log_panels(
    logger: Logger | None,
    key: str,
    images: Sequence[np.ndarray],
    step: int,
    captions: Sequence[str] | None = None,
) -> None:
    """Log uint8 (H, W, 3) ``images`` under ``key`` at ``step``.

    wandb: one media entry ``key`` holding all images (with ``captions``);
    tensorboard: tags ``key/0``, ``key/1``, …; anything else: nothing.
    """
    if not images or getattr(rank_zero_only, "rank", 0) != 0 or not supports_panels(logger):
        return
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if isinstance(logger, WandbLogger):
        kwargs: dict[str, Any] = {}
        if captions is not None:
            kwargs["caption"] = list(captions)
        logger.log_image(key=key, images=list(images), step=step, **kwargs)
    elif isinstance(logger, TensorBoardLogger):
        for i, image in enumerate(images):
            logger.experiment.add_image(f"{key}/{i}", image, global_step=step, dataformats="HWC")


def log_kept_panels(module: Any, key: str) -> None:
    """At the end of a validation epoch: log under ``key`` the panels a LightningModule
    kept from its first validation batch (``module._panels``: the images and their
    captions, or None), and forget them."""
    kept, module._panels = module._panels, None
    if kept is not None:
        images, captions = kept
        log_panels(module.logger, key, images, module.global_step, captions)


@torch.no_grad()
def cam_panels(
    images: Tensor, score_maps: Tensor, labels: Tensor, stride: int
) -> tuple[list[np.ndarray], list[str]]:
    """Classifier panels: [image | CAM heat map of the image's classes].

    ``images`` (B, 3, H, W) normalised, ``score_maps`` (B, 20, h, w) the head's
    class-score maps on the grid of output stride ``stride``, ``labels`` (B, 20)
    multi-hot. Each present class's map is
    rectified, upsampled to the image and divided by its maximum; the overlay
    shows their per-pixel maximum. Captions name the classes.
    """
    size = tuple(images.shape[-2:])
    maps = grid_to_image(score_maps.float(), size, stride)
    maps = maps.clamp_min(0)
    peak = maps.flatten(2).amax(dim=2).clamp_min(1e-12)[:, :, None, None]
    maps = (maps / peak).cpu().numpy()
    panels, captions = [], []
    for image, cams, present in zip(images, maps, labels.cpu() > 0.5, strict=True):
        rgb = denormalize(image)
        classes = [int(c) for c in torch.nonzero(present).flatten()]
        panels.append(side_by_side([rgb, map_overlay(rgb, cams[classes])]))
        captions.append(", ".join(VOC_CLASSES[c] for c in classes) or "(no class)")
    return panels, captions


@torch.no_grad()
def segmentation_panels(
    images: Tensor, predictions: Tensor, targets: Tensor, sizes: Tensor | None = None
) -> tuple[list[np.ndarray], list[str]]:
    """Segmenter panels: [image | prediction | ground truth], palette-coloured.

    ``images`` (B, 3, H, W) normalised, ``predictions`` and ``targets`` (B, H, W)
    label maps (255 void); ``sizes`` (B, 2) crops away batch padding. Captions
    list the classes predicted (``pred``) and in the ground truth (``gt``).
    """
    preds = predictions.cpu().numpy().astype(np.uint8)
    truths = targets.cpu().numpy().astype(np.uint8)
    panels, captions = [], []
    for i, image in enumerate(images):
        h, w = (int(v) for v in sizes[i]) if sizes is not None else image.shape[-2:]
        rgb = denormalize(image[:, :h, :w])
        pred, gt = preds[i, :h, :w], truths[i, :h, :w]
        panels.append(side_by_side([rgb, label_overlay(rgb, pred), label_overlay(rgb, gt)]))
        captions.append(f"pred: {_names(pred)} | gt: {_names(gt)}")
    return panels, captions


def _names(labels: np.ndarray) -> str:
    values = [int(v) for v in np.unique(labels) if v != IGNORE_INDEX and 0 < v < len(CLASS_NAMES)]
    return ", ".join(CLASS_NAMES[v] for v in values) or "background"
