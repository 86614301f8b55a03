"""Stage 2 as a Lightning predict loop: maps and seeds for every image, once.

Lightning runs it on one CPU, one GPU or across DDP ranks. Images are
localized in groups of ``localize.batch_size`` consecutive ids of the run's
id list (:func:`image_groups`); the groups are split between ranks by
:class:`LocalizeDataModule` (``groups[rank::world]``, no padding, so each image
is written exactly once), groups whose images are all done by an interrupted
run are skipped, and every file is written atomically. Each image draws its
dropout masks from a generator seeded by (seed, id, scale, flip), and a group
is the same whatever the rank or resume point, so maps are bit-identical
across ranks, orders and resumes.

Per group (FickleNet Sec. 3.3): the backbone runs once per scale (and flip) on
the images of equal size together, the head's N stochastic passes are computed
in closed form (:func:`ficklenet.localization.sample_maps_many`, batched within
``localize.memory_mb``), the aggregated maps are upsampled to each image,
combined over scales, and thresholded into seeds.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from ficklenet.data.classes import save_palette_png
from ficklenet.data.datasets import SegmentationDataset
from ficklenet.data.transforms import EvalTransform, denormalize
from ficklenet.data.voc import VOCReader
from ficklenet.files import atomic_path
from ficklenet.geometry import resize, scaled_size
from ficklenet.lit.classifier import FickleClassifier
from ficklenet.localization import (
    combine_scales,
    make_seeds,
    normalize_maps,
    sample_maps_many,
)
from ficklenet.models.fickle import check_rate
from ficklenet.viz import label_overlay, map_overlay, save_panel


def image_seed(seed: int, image_id: str, scale_index: int, flipped: bool) -> int:
    """A generator seed that depends only on the image and the pass, not on order."""
    digest = hashlib.sha256(f"{seed}:{image_id}:{scale_index}:{int(flipped)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def output_paths(run_dir: Path, image_id: str) -> tuple[Path, Path]:
    return run_dir / "maps" / f"{image_id}.npz", run_dir / "seeds" / f"{image_id}.png"


def is_done(run_dir: Path, image_id: str) -> bool:
    maps, seeds = output_paths(run_dir, image_id)
    return maps.is_file() and seeds.is_file()


def image_groups(indices: list[int], size: int) -> list[list[int]]:
    """Consecutive runs of ``size`` dataset indices: the units localized together.

    Made from the run's whole id list, never from what is left to do, so an image
    is batched with the same others whatever the rank count or resume point.
    """
    if size < 1:
        raise ValueError(f"localize.batch_size={size}: must be at least 1")
    return [indices[i : i + size] for i in range(0, len(indices), size)]


class _Groups(Dataset):
    """Items of a dataset, a group of indices at a time."""

    def __init__(self, dataset: Dataset, groups: list[list[int]]) -> None:
        self.dataset = dataset
        self.groups = groups

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, g: int) -> list[dict]:
        return [self.dataset[i] for i in self.groups[g]]


def _collate_one(items: list[list[dict]]) -> list[dict]:
    (group,) = items
    return group


class LocalizeDataModule(pl.LightningDataModule):
    """The groups with images still to do, sharded by rank without padding."""

    def __init__(self, reader: VOCReader, groups: list[list[int]], num_workers: int = 0) -> None:
        super().__init__()
        self.dataset = SegmentationDataset(reader, EvalTransform(None), targets="none")
        self.groups = groups
        self.num_workers = num_workers

    def predict_dataloader(self) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer else 0
        world = self.trainer.world_size if self.trainer else 1
        return DataLoader(
            _Groups(self.dataset, self.groups[rank::world]),
            batch_size=1,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=_collate_one,
        )


class Localizer(pl.LightningModule):
    """Writes ``maps/<id>.npz`` and ``seeds/<id>.png`` for each predicted image."""

    def __init__(
        self,
        classifier: FickleClassifier,
        settings: Any,
        run_dir: Path,
        reader: VOCReader,
        seed: int,
        overlay_ids: set[str],
        p: float | None = None,
    ) -> None:
        super().__init__()
        self.classifier = classifier.eval()
        if p is not None:
            self.classifier.head.p = check_rate(p, "model.p")
        self.settings = settings
        self.run_dir = Path(run_dir)
        self.reader = reader
        self.seed = seed
        self.overlay_ids = overlay_ids

    def group_maps(
        self, images: list[torch.Tensor], image_ids: list[str], classes: list[list[int]]
    ) -> list[np.ndarray]:
        """Aggregated, max-normalised maps (len(classes[i]), H_i, W_i) at image size."""
        settings = self.settings
        head = self.classifier.head
        stride = self.classifier.backbone.output_stride
        passes: list[list[torch.Tensor]] = [[] for _ in images]
        sizes: list[list[tuple[int, int]]] = [[] for _ in images]
        flips: list[list[bool]] = [[] for _ in images]
        for si, scale in enumerate(settings.scales):
            scaled = [scaled_size(tuple(im.shape[1:]), scale, minimum=8) for im in images]
            for flipped in [False, True] if settings.flip else [False]:
                xs = self._features(images, scaled, flipped)
                gens = []
                for image_id in image_ids:
                    gen = torch.Generator(device=self.device)
                    gen.manual_seed(image_seed(self.seed, image_id, si, flipped))
                    gens.append(gen)
                maps = sample_maps_many(
                    head,
                    xs,
                    classes,
                    n=int(settings.n),
                    generators=gens,
                    formula=settings.formula,
                    chunk=int(settings.chunk),
                    aggregate=settings.aggregate,
                    memory_mb=float(settings.memory_mb),
                )
                for i, m in enumerate(maps):
                    passes[i].append(m)
                    sizes[i].append(scaled[i])
                    flips[i].append(flipped)
        out = []
        for i, image in enumerate(images):
            size = tuple(image.shape[1:])
            combined = combine_scales(
                passes[i], size, stride, sizes[i], flips[i], how=settings.aggregate
            )
            out.append(normalize_maps(combined).clamp(0, 1).float().cpu().numpy())
        return out

    def _features(
        self, images: list[torch.Tensor], sizes: list[tuple[int, int]], flipped: bool
    ) -> list[torch.Tensor]:
        """Backbone features (1, C, h, w) of each image resized to its size; images
        of equal size go through the backbone together."""
        xs: list[torch.Tensor | None] = [None] * len(images)
        for size in dict.fromkeys(sizes):  # first-seen order: fixed by the group
            idx = [i for i, s in enumerate(sizes) if s == size]
            batch = torch.cat([resize(images[i][None], size) for i in idx])
            feats = self.classifier.features(batch.flip(-1) if flipped else batch)
            for j, i in enumerate(idx):
                xs[i] = feats[j : j + 1]
        return xs

    @torch.no_grad()
    def predict_step(self, group: list[dict], batch_idx: int) -> int:
        """Write the maps and seeds of a group of images; return how many it wrote
        (Lightning keeps nothing: ``return_predictions=False``)."""
        images = [item["image"].to(self.device) for item in group]
        ids = [item["id"] for item in group]
        # head outputs, 0-based
        classes = [[int(c) for c in torch.nonzero(item["labels"]).flatten()] for item in group]
        maps = self.group_maps(images, ids, classes)
        written = 0
        for item, image_maps, image_classes in zip(group, maps, classes, strict=True):
            if not is_done(self.run_dir, item["id"]):
                self._write(item, image_maps, image_classes)
                written += 1
        return written

    def _write(self, item: dict, maps: np.ndarray, classes: list[int]) -> None:
        """One image's maps, seeds and overlay, seeds last (they mark it done)."""
        image_id = item["id"]
        saliency = self.reader.saliency(image_id) if self.reader.saliency_dir else None
        seeds = make_seeds(
            maps,
            [c + 1 for c in classes],
            fg_threshold=float(self.settings.fg_threshold),
            bg_threshold=float(self.settings.bg_threshold),
            saliency=saliency,
            saliency_threshold=float(self.settings.saliency_threshold),
        )
        maps_path, seeds_path = output_paths(self.run_dir, image_id)
        with atomic_path(maps_path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                maps=maps.astype(np.float16),
                classes=np.asarray([c + 1 for c in classes], np.int64),
            )
        if image_id in self.overlay_ids:
            rgb = denormalize(item["image"])
            panels = [rgb, map_overlay(rgb, maps), label_overlay(rgb, seeds)]
            truth = self.reader.mask(image_id) if self.reader.has_mask(image_id) else None
            if truth is not None:
                panels.append(label_overlay(rgb, truth))
            save_panel(panels, self.run_dir / "overlays" / f"{image_id}.png")
        # Seeds last: they mark the image done (is_done), so a run stopped before
        # them (a kill, a full disk) redoes the image, overlay included.
        with atomic_path(seeds_path) as tmp:
            save_palette_png(seeds, tmp)
