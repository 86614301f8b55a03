"""Stage 2 as a Lightning predict loop: maps and seeds for every image, once.

Lightning runs it on one CPU, one GPU or across DDP ranks. Images are split
between ranks by :class:`LocalizeDataModule` (ids ``todo[rank::world]``, no
padding, so each image is written exactly once), images already done by an
interrupted run are skipped, and every file is written atomically. Each image
draws its dropout masks from a generator seeded by (seed, id, scale, flip), so
its maps are bit-identical whatever the rank, order or resume point.

Per image (FickleNet Sec. 3.3): the backbone runs once per scale (and flip),
the head's N stochastic passes are computed in closed form
(:func:`ficklenet.localization.sample_maps`), the aggregated maps are upsampled
to the image, combined over scales, and thresholded into seeds.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Subset

from ficklenet.data.classes import save_palette_png
from ficklenet.data.datasets import SegmentationDataset
from ficklenet.data.transforms import EvalTransform, denormalize
from ficklenet.data.voc import VOCReader
from ficklenet.files import atomic_path
from ficklenet.geometry import resize, scaled_size
from ficklenet.lit.classifier import FickleClassifier
from ficklenet.localization import combine_scales, make_seeds, normalize_maps, sample_maps
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


def _collate_one(items: list[dict]) -> dict:
    (item,) = items
    return item


class LocalizeDataModule(pl.LightningDataModule):
    """The images still to do, sharded by rank without padding."""

    def __init__(self, reader: VOCReader, todo: list[int], num_workers: int = 0) -> None:
        super().__init__()
        targets = "none"
        self.dataset = SegmentationDataset(reader, EvalTransform(None), targets=targets)
        self.todo = todo
        self.num_workers = num_workers

    def predict_dataloader(self) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer else 0
        world = self.trainer.world_size if self.trainer else 1
        shard = Subset(self.dataset, self.todo[rank::world])
        return DataLoader(
            shard,
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

    def image_maps(self, image: torch.Tensor, image_id: str, classes: list[int]) -> np.ndarray:
        """Aggregated, max-normalised maps (len(classes), H, W) at image size."""
        settings = self.settings
        _, h, w = image.shape
        passes, sizes, flips = [], [], []
        for si, scale in enumerate(settings.scales):
            size = scaled_size((h, w), scale, minimum=8)
            scaled = resize(image[None], size)
            for flipped in [False, True] if settings.flip else [False]:
                x = self.classifier.features(scaled.flip(-1) if flipped else scaled)
                gen = torch.Generator(device=x.device)
                gen.manual_seed(image_seed(self.seed, image_id, si, flipped))
                passes.append(
                    sample_maps(
                        self.classifier.head,
                        x,
                        classes,
                        n=int(settings.n),
                        generator=gen,
                        formula=settings.formula,
                        chunk=int(settings.chunk),
                        aggregate=settings.aggregate,
                    )
                )
                sizes.append(size)
                flips.append(flipped)
        stride = self.classifier.backbone.output_stride
        combined = combine_scales(passes, (h, w), stride, sizes, flips, how=settings.aggregate)
        return normalize_maps(combined).clamp(0, 1).float().cpu().numpy()

    @torch.no_grad()
    def predict_step(self, item: dict, batch_idx: int) -> None:
        image_id = item["id"]
        labels = item["labels"]
        classes = [int(c) for c in torch.nonzero(labels).flatten()]  # head outputs, 0-based
        image = item["image"].to(self.device)
        maps = self.image_maps(image, image_id, classes)
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
