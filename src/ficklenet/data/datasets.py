"""torch ``Dataset``s over :class:`~ficklenet.data.voc.VOCReader` for both stages.

* :class:`ClassificationDataset` feeds the FickleNet classifier (stage 1): image and
  20-way multi-hot image-level labels.
* :class:`SegmentationDataset` feeds the DSRG segmenter (stage 3) and evaluation: image,
  a per-pixel target (ground truth, cached seeds, or seeds with ground truth replacing
  them for a listed subset, the semi-supervised setting of docs/method.md) and labels.

Reproducible augmentation: item ``index`` in epoch ``e`` draws its randomness from
``numpy.random.default_rng([seed, e, index])``, so the result does not depend on the
number of DataLoader workers, on which worker gets the item, or on DDP sharding.  The
epoch lives in a shared-memory tensor, so :meth:`set_epoch` also reaches persistent
DataLoader workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ficklenet.data.voc import VOCDataError, VOCReader, read_label_png

__all__ = ["ClassificationDataset", "SegmentationDataset"]

Transform = Callable[..., tuple[torch.Tensor, ...]]


class _EpochSeeded(Dataset):
    def __init__(self, reader: VOCReader, transform: Transform, seed: int = 0) -> None:
        self.reader = reader
        self.transform = transform
        self.seed = int(seed)
        # Shared memory: worker processes see updates made in the main process.
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream for ``epoch`` (call at each epoch start)."""
        self._epoch.fill_(int(epoch))

    def rng(self, index: int) -> np.random.Generator:
        """The generator item ``index`` uses in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def __len__(self) -> int:
        return len(self.reader)


class ClassificationDataset(_EpochSeeded):
    """Items ``{"image": float (3, H, W), "labels": float32 (20,), "id": str}``."""

    def __getitem__(self, index: int) -> dict:
        image_id = self.reader.ids[index]
        (image,) = self.transform(self.reader.image(image_id), rng=self.rng(index))
        return {
            "image": image,
            "labels": torch.from_numpy(self.reader.label_vector(image_id)),
            "id": image_id,
        }


class SegmentationDataset(_EpochSeeded):
    """Items ``{"image", "target": int64 (H, W), "labels": float32 (20,), "id"}``.

    Args:
        reader: the split to read.
        transform: a :class:`~ficklenet.data.transforms.TrainTransform` or
            ``EvalTransform`` (applied jointly to image and target).
        targets: where ``target`` comes from:
            ``"gt"`` the reader's ground-truth mask (an error if an id has none);
            ``"seeds"`` ``<seed_dir>/<id>.png`` index PNGs written by the localisation
            stage, except ids in ``gt_ids``, which use their ground truth
            (semi-supervised training);
            ``"none"`` no target (prediction); the item has no ``"target"`` key.
        seed_dir: folder of seed PNGs, required for ``targets="seeds"``.
        gt_ids: ids whose ground truth replaces their seeds.
        seed: base of the per-item random streams.
    """

    def __init__(
        self,
        reader: VOCReader,
        transform: Transform,
        targets: str = "gt",
        seed_dir: str | os.PathLike[str] | None = None,
        gt_ids: Collection[str] = (),
        seed: int = 0,
    ) -> None:
        super().__init__(reader, transform, seed)
        if targets not in ("gt", "seeds", "none"):
            raise ValueError(f"targets must be 'gt', 'seeds' or 'none', got {targets!r}")
        if targets == "seeds":
            if seed_dir is None:
                raise ValueError("targets='seeds' needs seed_dir (the localisation output)")
            seed_dir = Path(seed_dir)
            if not seed_dir.is_dir():
                raise VOCDataError(
                    f"{seed_dir}: seed directory not found. Run the localize stage first "
                    "(ficklenet-localize) or point seed_dir at its seeds/ output."
                )
        self.targets = targets
        self.seed_dir = None if seed_dir is None else Path(seed_dir)
        self.gt_ids = frozenset(gt_ids)

    def target(self, image_id: str) -> np.ndarray:
        """The untransformed target of ``image_id``: uint8 ``(H, W)``, 255 ignored."""
        if self.targets == "seeds" and image_id not in self.gt_ids:
            assert self.seed_dir is not None
            path = self.seed_dir / f"{image_id}.png"
            if not path.is_file():
                raise VOCDataError(
                    f"{path}: no seeds for id {image_id!r}. Rerun the localize stage on this "
                    "split, or remove the id from the split list."
                )
            seeds = read_label_png(path)
            h, w = self.reader.image_size(image_id)
            if seeds.shape != (h, w):
                raise VOCDataError(
                    f"{path}: seeds are {seeds.shape[1]}x{seeds.shape[0]} (WxH) but the image "
                    f"is {w}x{h}. Rerun the localize stage for this dataset."
                )
            return seeds
        mask = self.reader.mask(image_id)
        if mask is None:
            searched = ", ".join(str(d) for d in self.reader.mask_dirs)
            raise VOCDataError(
                f"{image_id}.png: no ground-truth mask for id {image_id!r} in {searched}. Use a "
                "split whose ids all have masks (train, val), or train on seeds."
            )
        return mask

    def __getitem__(self, index: int) -> dict:
        image_id = self.reader.ids[index]
        image = self.reader.image(image_id)
        item: dict = {"id": image_id}
        if self.targets == "none":
            (item["image"],) = self.transform(image, rng=self.rng(index))
        else:
            target = self.target(image_id)
            item["image"], item["target"] = self.transform(image, target, rng=self.rng(index))
        item["labels"] = torch.from_numpy(self.reader.label_vector(image_id))
        return item
