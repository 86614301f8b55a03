"""The DSRG segmenter as a LightningModule (pipeline stage 3).

Huang et al., "Deep Seeded Region Growing", CVPR 2018, Sec. 3, as the official
release trains it (``training/`` prototxts and ``pylayers/pylayers.py``;
docs/method.md, "The DSRG segmenter"). A DeepLab network
(:func:`~ficklenet.models.deeplab.build_segmenter_net`) is trained on localization
seeds; every training step, at the network's output resolution:

1. ``p`` = the floored softmax of the logits (``SoftmaxLayer``);
2. ``Q`` = the dense CRF of ``p`` on the image sampled to the output grid, with the
   training preset (``CRFLayer``), in ``segmenter.crf_workers`` processes
   (pydensecrf), or on the training device (``segmenter.crf_backend=torch``);
3. the *original* seeds (sampled to the output grid) grow into the confident
   regions of ``Q`` that touch them, over the classes in the image's labels
   (:func:`~ficklenet.dsrg.growing.grow`, ``UpdateSeedLayer3``);
4. loss = ``seed_loss_weight`` · balanced seeding loss(log p, grown seeds) +
   ``boundary_loss_weight`` · boundary loss(p, Q) (``SeedLossLayer3``,
   ``ConstrainLossLayer``).

Semi-supervised targets (ground truth replacing the seeds of a listed subset, set
up by the data module) go through the same path: growing never changes a labelled
pixel, so ground truth stays as it is and only its void border can grow.

Without seeds (``seeds`` null in the config, every training id with ground truth)
the same network is trained fully supervised with plain cross-entropy on the
ground truth sampled to the output grid (DeepLab's recipe): the ceiling that
weakly supervised results are read against.

Validation upsamples the logits to each image's size and accumulates a confusion
matrix (:class:`~ficklenet.metrics.ConfusionMIoU`, reduced across DDP ranks):
``val/miou`` and ``val/miou_best``. Pretrained layers (backbone, and fc6/fc7 when
they come from ImageNet) learn at the base rate, new layers at
``optim.new_layer_lr_mult`` (10) times it. The checkpoint holds the resolved config
and ``ficklenet_stage = "segment"``.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor

from ficklenet.checkpoints import keep_config, rebuild
from ficklenet.choices import CRFBackend
from ficklenet.data.classes import IGNORE_INDEX, NUM_CLASSES
from ficklenet.data.transforms import denormalize_batch
from ficklenet.dsrg.crf import TRAIN_CRF, CRFParams, default_workers, dense_crf_batch
from ficklenet.dsrg.crf_torch import dense_crf_torch
from ficklenet.dsrg.growing import grow
from ficklenet.dsrg.losses import balanced_seed_loss, boundary_loss, floored_softmax
from ficklenet.geometry import grid_to_image, image_to_grid
from ficklenet.lit.optim import build_optimizer
from ficklenet.lit.panels import log_kept_panels, panels_wanted, segmentation_panels
from ficklenet.metric_names import TRAIN_LOSS, TRAIN_SEEDED_FRACTION, VAL_MIOU, VAL_MIOU_BEST
from ficklenet.metrics import ConfusionMIoU
from ficklenet.models.deeplab import build_segmenter_net

__all__ = ["DSRGOutputs", "DSRGSegmenter", "present_classes", "train_crf_params"]

STAGE = "segment"


def train_crf_params(crf_cfg: Any) -> CRFParams:
    """The training CRF: :data:`~ficklenet.dsrg.crf.TRAIN_CRF` with the non-null keys
    of ``segmenter.crf`` (its σxy follow the size of the map, DSRG's at 41×41)."""
    values = dict(crf_cfg) if crf_cfg is not None else {}
    overrides = {k: v for k, v in values.items() if v is not None}
    return replace(TRAIN_CRF, **overrides)


def present_classes(labels: Tensor) -> Tensor:
    """(B, 21) bool from (B, 20) multi-hot image labels, background always present."""
    background = torch.ones(labels.shape[0], 1, dtype=torch.bool, device=labels.device)
    return torch.cat([background, labels > 0.5], dim=1)


class DSRGOutputs(NamedTuple):
    """One DSRG step's tensors, all at the output resolution."""

    logits: Tensor  # (B, 21, h, w)
    probs: Tensor  # floored softmax
    crf: Tensor  # Q, the dense-CRF refinement of probs (no gradient)
    seeds: Tensor  # the original seeds on the output grid, int64, 255 unlabelled
    grown: Tensor  # after region growing
    seed_loss: Tensor
    boundary_loss: Tensor
    loss: Tensor


def _check_finite(loss: Tensor, step: int, parts: str) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"segmenter loss became {loss.item()} at step {step} ({parts}); the last good "
            "checkpoint is kept (checkpoints/last.ckpt). Check the seeds, or lower optim.lr "
            "and train again in a new run directory (hydra.run.dir=...)."
        )


class DSRGSegmenter(pl.LightningModule):
    """DeepLab trained by DSRG: seeded region growing + seeding and boundary losses.

    Args:
        config: the resolved stage config (``backbone``, ``segmenter``, ``optim``,
            ``data.crop_size`` are used); kept in the checkpoint.
        load_pretrained: load the backbone's ImageNet weights (False when the
            module is rebuilt from a checkpoint, whose state dict has them).
    """

    def __init__(self, config: dict[str, Any] | DictConfig, load_pretrained: bool = True) -> None:
        super().__init__()
        self.cfg = cfg = keep_config(self, config)
        seg = cfg.segmenter
        self.net = build_segmenter_net(
            cfg.backbone,
            head=seg.head,
            num_classes=NUM_CLASSES + 1,
            width=seg.width,
            dilations=None if seg.dilations is None else list(seg.dilations),
            dropout=float(seg.dropout),
            init_fc_from_imagenet=bool(seg.init_fc_from_imagenet),
            load_pretrained=load_pretrained,
        )
        self.crf_params = train_crf_params(seg.crf)
        self.fully_supervised = cfg.get("seeds") is None
        self.crf_workers = default_workers() if seg.crf_workers is None else int(seg.crf_workers)
        # Checkpoints written before the key existed ran pydensecrf.
        self.crf_backend = CRFBackend.parse(seg.get("crf_backend", "pydensecrf"), "crf_backend")
        self.val_miou = ConfusionMIoU(num_classes=NUM_CLASSES + 1)
        self.best_miou = 0.0
        self.channels_last = False  # NHWC inputs (ficklenet.lit.processes.speed_up)
        self.crf_seconds = 0.0  # of the last training step, for the perf log
        self._panels: tuple[list, list[str]] | None = None

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, map_location: Any = "cpu", key: str | None = "segmenter.ckpt"
    ) -> DSRGSegmenter:
        """Rebuild a trained segmenter from a ``ficklenet-segment`` checkpoint (no
        ImageNet file needed); any other checkpoint is refused with a message naming
        it (and ``key``, the config key that named it)."""
        return rebuild(cls, path, STAGE, key, map_location)

    @property
    def output_stride(self) -> int:
        return self.net.output_stride

    def forward(self, images: Tensor) -> Tensor:
        """Logits (B, 21, ⌈H/8⌉, ⌈W/8⌉) at the output resolution."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)

    def predict_logits(self, images: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """Logits upsampled to ``size`` (default: the input's size)."""
        logits = self(images)
        return grid_to_image(logits, size or tuple(images.shape[-2:]), self.output_stride)

    def refine(self, images: Tensor, probs: Tensor) -> Tensor:
        """The training CRF's Q for output-grid ``probs`` (B, 21, h, w) on normalised
        ``images`` (B, 3, H, W), sampled to the same grid."""
        small = image_to_grid(images, probs.shape[-2:], self.output_stride)
        images_u8 = denormalize_batch(small)  # on the training device
        if self.crf_backend == CRFBackend.torch:
            q = dense_crf_torch(images_u8, probs, self.crf_params)
            return q.to(dtype=probs.dtype)
        images_u8 = images_u8.cpu().numpy()
        q = dense_crf_batch(images_u8, probs.detach().float(), self.crf_params, self.crf_workers)
        return torch.from_numpy(q).to(device=probs.device, dtype=probs.dtype)

    def dsrg_step(self, images: Tensor, targets: Tensor, labels: Tensor) -> DSRGOutputs:
        """Forward pass, CRF, region growing and both losses (module docstring)."""
        seg = self.cfg.segmenter
        logits = self(images)
        probs = floored_softmax(logits.float())
        start = time.perf_counter()
        q = self.refine(images, probs)
        self.crf_seconds = time.perf_counter() - start
        seeds = image_to_grid(targets, logits.shape[-2:], self.output_stride).long()
        grown = grow(
            q, seeds, present_classes(labels), float(seg.grow_fg_prob), float(seg.grow_bg_prob)
        )
        seed_loss = balanced_seed_loss(torch.log(probs), grown)
        bound_loss = boundary_loss(probs, q)
        loss = (
            float(seg.seed_loss_weight) * seed_loss + float(seg.boundary_loss_weight) * bound_loss
        )
        return DSRGOutputs(logits, probs, q, seeds, grown, seed_loss, bound_loss, loss)

    def supervised_step(self, images: Tensor, targets: Tensor) -> Tensor:
        """Cross-entropy on ground truth sampled to the output grid (255 ignored)."""
        logits = self(images)
        grid = image_to_grid(targets, logits.shape[-2:], self.output_stride).long()
        return F.cross_entropy(logits.float(), grid, ignore_index=IGNORE_INDEX)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        if self.fully_supervised:
            loss = self.supervised_step(batch["image"], batch["target"])
            _check_finite(loss, self.global_step, "cross-entropy")
            self.log(TRAIN_LOSS, loss, prog_bar=True, batch_size=len(batch["image"]))
            return loss
        out = self.dsrg_step(batch["image"], batch["target"], batch["labels"])
        _check_finite(
            out.loss,
            self.global_step,
            f"seed loss {out.seed_loss.item()}, boundary loss {out.boundary_loss.item()}",
        )
        n = len(out.logits)
        self.log(TRAIN_LOSS, out.loss, prog_bar=True, batch_size=n)
        self.log("train/seed_loss", out.seed_loss, batch_size=n)
        self.log("train/boundary_loss", out.boundary_loss, batch_size=n)
        self.log(TRAIN_SEEDED_FRACTION, (out.grown != IGNORE_INDEX).float().mean(), batch_size=n)
        self.log(
            "train/raw_seeded_fraction", (out.seeds != IGNORE_INDEX).float().mean(), batch_size=n
        )
        self.log("perf/crf_seconds", self.crf_seconds, batch_size=n)
        return out.loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        target = batch["target"]
        logits = self.predict_logits(batch["image"], tuple(target.shape[-2:]))
        pred = logits.argmax(dim=1)
        self.val_miou.update(pred, target)
        if batch_idx == 0 and (n := panels_wanted(self)):
            sizes = batch.get("size")
            self._panels = segmentation_panels(
                batch["image"][:n], pred[:n], target[:n], None if sizes is None else sizes[:n]
            )

    def on_validation_epoch_end(self) -> None:
        value = self.val_miou.compute()
        self.val_miou.reset()
        if not self.trainer.sanity_checking and torch.isfinite(value):
            self.best_miou = max(self.best_miou, float(value))
        # Already reduced over DDP ranks (the confusion matrix is); sync_dist only
        # tells Lightning so.
        self.log(VAL_MIOU, value, prog_bar=True, sync_dist=True)
        self.log(VAL_MIOU_BEST, self.best_miou, sync_dist=True)
        log_kept_panels(self, "val/segmentation")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ficklenet_stage"] = STAGE
        checkpoint["best_miou"] = self.best_miou

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.best_miou = float(checkpoint.get("best_miou", 0.0))

    def configure_optimizers(self) -> Any:
        pretrained, new = self.net.parameter_groups()
        return build_optimizer(
            self.cfg.optim,
            pretrained=pretrained,
            new=new,
            pretrained_is_new=not self.net.backbone.is_pretrained,
            total_steps=self.trainer.estimated_stepping_batches,
        )
