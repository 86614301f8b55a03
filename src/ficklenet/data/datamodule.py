"""LightningDataModules over the one VOC reader, shared by both LightningModules.

:class:`VOCDataModule` serves the classifier (image-level labels, stage 1); the
segmenter reuses the same reader, transforms and loader settings. Toy data is
written on first use (``data.make_toy_if_missing``) in ``prepare_data``, which
Lightning runs once per node, so DDP ranks never race to write it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from ficklenet.data.datasets import ClassificationDataset
from ficklenet.data.toy import is_toy_voc, write_toy_voc
from ficklenet.data.transforms import EvalTransform, TrainTransform
from ficklenet.data.voc import VOCReader


def ensure_dataset(data_cfg: Any) -> Path:
    """The dataset root, written first when it is the toy set and missing."""
    root = Path(str(data_cfg.root)).expanduser()
    if data_cfg.make_toy_if_missing and not is_toy_voc(root):
        toy = data_cfg.toy
        write_toy_voc(
            root,
            seed=toy.seed,
            n_train_aug=toy.n_train_aug,
            n_train=toy.n_train,
            n_val=toy.n_val,
            size=toy.size,
        )
    return root


def make_reader(data_cfg: Any, split: str, **overrides: Any) -> VOCReader:
    """A :class:`VOCReader` for ``split`` with the config's label/mask settings."""
    kwargs = dict(
        labels_from=data_cfg.labels_from,
        mask_dirs=list(data_cfg.mask_dirs),
        saliency_dir=data_cfg.saliency_dir,
        include_difficult=data_cfg.include_difficult,
    )
    kwargs.update(overrides)
    return VOCReader(Path(str(data_cfg.root)).expanduser(), split, **kwargs)


def loader_kwargs(data_cfg: Any) -> dict[str, Any]:
    """DataLoader settings from the config: workers, pinning (GPU only)."""
    workers = int(data_cfg.num_workers)
    return dict(
        num_workers=workers,
        pin_memory=bool(data_cfg.pin_memory) and torch.cuda.is_available(),
        persistent_workers=workers > 0,
    )


class VOCDataModule(pl.LightningDataModule):
    """Image-level-label batches for the FickleNet classifier.

    Train: ``data.train_split`` (train_aug) with random scale, crop and flip.
    Val: ``data.val_split`` centre padded/cropped to ``data.crop_size``.
    """

    def __init__(self, data_cfg: Any, seed: int = 0) -> None:
        super().__init__()
        self.cfg = data_cfg
        self.seed = seed
        self.train_set: ClassificationDataset | None = None
        self.val_set: ClassificationDataset | None = None

    def prepare_data(self) -> None:
        ensure_dataset(self.cfg)

    def setup(self, stage: str | None = None) -> None:
        cfg = self.cfg
        if stage in (None, "fit") and self.train_set is None:
            train_tf = TrainTransform(
                cfg.crop_size, scale_range=tuple(cfg.scale_range), flip=cfg.flip
            )
            self.train_set = ClassificationDataset(
                make_reader(cfg, cfg.train_split), train_tf, seed=self.seed
            )
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = ClassificationDataset(
                make_reader(cfg, cfg.val_split), EvalTransform(cfg.crop_size), seed=self.seed
            )

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        return DataLoader(
            self.train_set,
            batch_size=self.cfg.batch_size,
            shuffle=True,
            drop_last=len(self.train_set) > self.cfg.batch_size,
            **loader_kwargs(self.cfg),
        )

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None
        return DataLoader(
            self.val_set,
            batch_size=self.cfg.val_batch_size,
            shuffle=False,
            **loader_kwargs(self.cfg),
        )
