"""The FickleNet classifier as a LightningModule (pipeline stage 1).

Backbone → :class:`~ficklenet.models.fickle.FickleHead` → 20 class scores,
trained with the multi-label soft-margin (sigmoid) loss on image-level labels
(FickleNet Sec. 3.2). The backbone is the pretrained part; the head is new and
learns ``optim.new_layer_lr_mult`` (10) times faster, as in DeepLab/DSRG.
Validation reports mAP and F1 over the 20 labels (torchmetrics, reduced
across DDP ranks). The checkpoint holds the resolved config, so later stages
rebuild the exact model from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor
from torchmetrics.classification import MultilabelAveragePrecision, MultilabelF1Score

from ficklenet.checkpoints import keep_config, rebuild
from ficklenet.data.classes import NUM_CLASSES
from ficklenet.lit.optim import build_optimizer
from ficklenet.lit.panels import cam_panels, log_kept_panels, panels_wanted
from ficklenet.metric_names import TRAIN_LOSS, VAL_F1, VAL_LOSS, VAL_MAP, VAL_MAP_BEST
from ficklenet.models.backbones import backbone_from_config
from ficklenet.models.fickle import FickleHead

STAGE = "classify"


class FickleClassifier(pl.LightningModule):
    """FickleNet: backbone + centre-preserving-dropout head + GAP.

    Args:
        config: the resolved stage config (``backbone``, ``model``, ``optim``
            keys are used); kept in the checkpoint as hyper-parameters.
        load_pretrained: load the backbone's ImageNet weights. False when the
            module is rebuilt from a checkpoint, whose state dict has them.
    """

    def __init__(self, config: dict[str, Any] | DictConfig, load_pretrained: bool = True) -> None:
        super().__init__()
        self.cfg = cfg = keep_config(self, config)
        self.backbone = backbone_from_config(cfg.backbone, load_pretrained)
        self.head = FickleHead(
            self.backbone.out_channels,
            NUM_CLASSES,
            kernel_size=int(cfg.model.kernel_size),
            p=float(cfg.model.p),
            dropout=cfg.model.dropout,
            scale_centre=bool(cfg.model.get("scale_centre", True)),
        )
        self.val_map = MultilabelAveragePrecision(num_labels=NUM_CLASSES, average="macro")
        self.val_f1 = MultilabelF1Score(num_labels=NUM_CLASSES, average="macro")
        self.best_map = 0.0
        self.channels_last = False  # NHWC inputs (ficklenet.lit.processes.speed_up)
        self._panels: tuple[list, list[str]] | None = None

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, map_location: Any = "cpu", key: str | None = None
    ) -> FickleClassifier:
        """Rebuild a trained classifier from a stage-1 checkpoint (no ImageNet file
        needed); any other file is refused with a message naming it (and ``key``,
        the config key that named it)."""
        return rebuild(cls, path, STAGE, key, map_location)

    def features(self, images: Tensor) -> Tensor:
        """The backbone's feature map x (B, C, h, w) — what FickleHead expands."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.backbone(images)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        scores = self(batch["image"])
        loss = F.multilabel_soft_margin_loss(scores, batch["labels"])
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"classifier loss became {loss.item()} at step {self.global_step}; the last "
                "good checkpoint is kept (checkpoints/last.ckpt). Check the input data, or "
                "lower optim.lr and train again in a new run directory (hydra.run.dir=...)."
            )
        self.log(TRAIN_LOSS, loss, prog_bar=True, batch_size=len(scores))
        self.log(
            "train/epoch_loss",
            loss,
            on_step=False,
            on_epoch=True,
            sync_dist=True,
            batch_size=len(scores),
        )
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        x = self.features(batch["image"])
        scores = self.head(x)
        labels = batch["labels"]
        if batch_idx == 0 and (n := panels_wanted(self)):
            self._panels = cam_panels(
                batch["image"][:n],
                self.head.score_map(x[:n]),
                labels[:n],
                self.backbone.output_stride,
            )
        loss = F.multilabel_soft_margin_loss(scores, labels)
        targets = labels.int()
        self.val_map.update(scores, targets)
        self.val_f1.update(torch.sigmoid(scores), targets)
        self.log(VAL_LOSS, loss, sync_dist=True, batch_size=len(scores))

    def on_validation_epoch_end(self) -> None:
        # torchmetrics has already reduced these across ranks; sync_dist only
        # keeps Lightning's epoch-level bookkeeping consistent under DDP.
        mean_ap = self.val_map.compute()
        if not self.trainer.sanity_checking:
            self.best_map = max(self.best_map, float(mean_ap))
        self.log(VAL_MAP, mean_ap, prog_bar=True, sync_dist=True)
        self.log(VAL_F1, self.val_f1.compute(), sync_dist=True)
        self.log(VAL_MAP_BEST, self.best_map, sync_dist=True)
        self.val_map.reset()
        self.val_f1.reset()
        log_kept_panels(self, "val/cam")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ficklenet_stage"] = STAGE
        checkpoint["best_map"] = self.best_map

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.best_map = float(checkpoint.get("best_map", 0.0))

    def configure_optimizers(self) -> Any:
        return build_optimizer(
            self.cfg.optim,
            pretrained=list(self.backbone.parameters()),
            new=list(self.head.parameters()),
            pretrained_is_new=not self.backbone.is_pretrained,
            total_steps=self.trainer.estimated_stepping_batches,
        )
