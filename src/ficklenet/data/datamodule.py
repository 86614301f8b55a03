"""LightningDataModules over the one VOC reader, shared by both LightningModules.

:class:`VOCDataModule` serves the classifier (image-level labels, stage 1);
:class:`SegmentationDataModule` the DSRG segmenter (seeds, or ground truth for a
listed subset, stage 3) with the same reader, transforms and loader settings. Toy data is
written on first use (``data.make_toy_if_missing``) in ``prepare_data``, which
Lightning runs once per node, so DDP ranks never race to write it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler

from ficklenet.data.classes import IGNORE_INDEX
from ficklenet.data.datasets import ClassificationDataset, SegmentationDataset
from ficklenet.data.resumable import ResumableSampler, ResumePoint
from ficklenet.data.toy import TOY_MARKER, toy_settings, write_toy_voc
from ficklenet.data.transforms import EvalTransform, TrainTransform
from ficklenet.data.voc import VOCDataError, VOCReader
from ficklenet.errors import UserFileExistsError, UserValueError

log = logging.getLogger(__name__)


def toy_params(data_cfg: Any) -> dict[str, Any]:
    """The toy settings ``data.toy`` asks for, as :func:`write_toy_voc` takes them."""
    toy = data_cfg.toy
    return dict(
        seed=int(toy.seed),
        n_train_aug=int(toy.n_train_aug),
        n_train=int(toy.n_train),
        n_val=int(toy.n_val),
        size=int(toy.size),
        saliency=str(toy.saliency),
        part=str(toy.part),
        body_evidence=float(toy.body_evidence),
    )


def check_toy_root(data_cfg: Any) -> dict | None:
    """With ``make_toy_if_missing``, refuse a ``data.root`` that :func:`ensure_dataset`
    could not use as asked, before anything is written: a toy set made with other
    settings than ``data.toy`` asks (the run would silently use other data), or a
    folder holding something else. Returns :func:`toy_settings` of the root (None:
    no toy set there). Writes nothing."""
    root = Path(str(data_cfg.root)).expanduser()
    if not data_cfg.make_toy_if_missing:
        return None
    made = toy_settings(root)
    if made is None:
        if root.exists() and not (root.is_dir() and not any(root.iterdir())):
            raise UserFileExistsError(
                f"data.root={data_cfg.root}: exists and is not a toy dataset (no "
                f"{TOY_MARKER}), and data.make_toy_if_missing=true would write the toy "
                "there. For a VOC directory use data=voc; for the toy choose a data.root "
                "that does not exist yet (or set data.make_toy_if_missing=false)."
            )
        return None
    asked = toy_params(data_cfg)
    differ = {k: (made["params"].get(k), v) for k, v in asked.items() if made["params"].get(k) != v}
    if differ:
        shown = ", ".join(
            f"data.toy.{k}={v} (the toy there has {old})" for k, (old, v) in differ.items()
        )
        fix = " ".join(f"data.toy.{k}={old}" for k, (old, _) in differ.items())
        raise UserValueError(
            f"data.root={data_cfg.root} holds a toy dataset made with other settings: "
            f"{shown}. Give another data.root for the toy you ask for (it is written "
            f"there), delete {root} to rewrite it, or use it as it is: {fix}."
        )
    return made


def ensure_dataset(data_cfg: Any) -> Path:
    """The dataset root. With ``make_toy_if_missing``, a toy set is written there from
    ``data.toy`` when the folder does not exist (or is empty), saying so in one log
    line; a toy set there made with the settings ``data.toy`` asks is used as it is
    (rewritten with them if an older generator made it), and any other content is
    refused (:func:`check_toy_root`)."""
    root = Path(str(data_cfg.root)).expanduser()
    if not data_cfg.make_toy_if_missing:
        return root
    made = check_toy_root(data_cfg)
    if made is not None and made["current"]:
        return root
    if made is not None:
        log.info(
            "data.root=%s holds a toy dataset from an older generator; rewriting it with "
            "the same settings",
            data_cfg.root,
        )
    else:
        state = "is empty" if root.exists() else "does not exist"
        log.info(
            "data.root=%s %s; writing the toy dataset there (data.make_toy_if_missing=true)",
            data_cfg.root,
            state,
        )
    write_toy_voc(root, **toy_params(data_cfg))
    return root


def make_reader(data_cfg: Any, split: str, limited: bool = True, **overrides: Any) -> VOCReader:
    """A :class:`VOCReader` for ``split`` with the config's label/mask settings, over
    the split's first ``data.limit`` ids when that is set and ``limited``."""
    kwargs = dict(
        labels_from=data_cfg.labels_from,
        mask_dirs=list(data_cfg.mask_dirs),
        saliency_dir=data_cfg.saliency_dir,
        include_difficult=data_cfg.include_difficult,
    )
    kwargs.update(overrides)
    reader = VOCReader(Path(str(data_cfg.root)).expanduser(), split, **kwargs)
    limit = data_cfg.get("limit") if limited else None
    if limit is None:
        return reader
    if int(limit) < 1:
        raise UserValueError(f"data.limit={limit}: must be at least 1 (or null for every id)")
    return reader.subset(reader.ids[: int(limit)])


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
    Subclasses change the datasets in ``setup``; the loaders are shared.
    """

    # How validation items of different sizes are batched (None: plain stacking).
    val_collate: Any = None

    def __init__(self, data_cfg: Any, rng_seed: int = 0) -> None:
        super().__init__()
        self.cfg = data_cfg
        # Seeds the training order and the augmentation (not DSRG's seeds).
        self.rng_seed = rng_seed
        self.train_set: ClassificationDataset | None = None
        self.val_set: ClassificationDataset | None = None
        self._resume_at: ResumePoint | None = None  # from a checkpoint (load_state_dict)

    def prepare_data(self) -> None:
        ensure_dataset(self.cfg)

    def setup(self, stage: str | None = None) -> None:
        cfg = self.cfg
        if stage in (None, "fit") and self.train_set is None:
            train_tf = TrainTransform(
                cfg.crop_size, scale_range=tuple(cfg.scale_range), flip=cfg.flip
            )
            self.train_set = ClassificationDataset(
                make_reader(cfg, cfg.train_split), train_tf, seed=self.rng_seed
            )
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = ClassificationDataset(
                make_reader(cfg, cfg.val_split), EvalTransform(cfg.crop_size), seed=self.rng_seed
            )

    def train_dataloader(self) -> DataLoader:
        """Training batches; after a checkpoint saved inside an epoch, the first pass
        starts after the batches done (:mod:`ficklenet.data.resumable`)."""
        assert self.train_set is not None
        sampler = self.train_sampler()
        if self._resume_at is not None:
            sampler.resume(self._resume_at, int(self.cfg.batch_size))
            self.train_set.set_epoch(self._resume_at.epoch)
            self._resume_at = None
        return DataLoader(
            self.train_set,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            drop_last=len(self.train_set) > self.cfg.batch_size,
            **loader_kwargs(self.cfg),
        )

    def train_sampler(self) -> ResumableSampler:
        """The training order as a function of (seed, epoch) only.

        A ``DistributedSampler`` over this process's share (all of it in one
        process): Lightning calls its ``set_epoch`` at every epoch start, so a run
        resumed from ``last.ckpt`` sees the same order as an uninterrupted one —
        a ``shuffle=True`` loader would draw it from the global RNG, which a resume
        does not restore.
        """
        trainer = self.trainer
        world = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        return ResumableSampler(
            self.train_set, num_replicas=world, rank=rank, shuffle=True, seed=self.rng_seed
        )

    def state_dict(self) -> dict[str, Any]:
        """Stored in every checkpoint: where its training resumes."""
        trainer = self.trainer
        if trainer is None or trainer.state.fn != "fit":
            return {}
        epoch, done = (
            trainer.current_epoch,
            trainer.fit_loop.epoch_loop.batch_progress.current.processed,
        )
        if done >= trainer.num_training_batches:
            epoch, done = epoch + 1, 0
        return {"resume": ResumePoint(epoch, done).state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A checkpoint's resume point, applied to the next training loader."""
        if "resume" in state:
            self._resume_at = ResumePoint.from_state(state["resume"])

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None
        trainer = self.trainer
        return DataLoader(
            self.val_set,
            batch_size=self.cfg.val_batch_size,
            sampler=ShardSampler(
                len(self.val_set),
                trainer.world_size if trainer is not None else 1,
                trainer.global_rank if trainer is not None else 0,
            ),
            collate_fn=self.val_collate,
            **loader_kwargs(self.cfg),
        )


class ShardSampler(DistributedSampler):
    """Indices ``rank, rank + world, ...``, in order and without padding.

    Lightning's own distributed sampler pads the ranks' shares to equal length by
    repeating items, so with 1,449 VOC val images on 4 GPUs some images would count
    twice in ``val/miou`` and ``val/mAP`` (which choose ``best.ckpt``). These shares
    partition the items: every image counts exactly once, and the metrics, reduced
    over ranks (confusion matrices summed, predictions gathered), equal one
    process's. A ``DistributedSampler`` subclass, so Lightning keeps it as it is.
    """

    def __init__(self, size: int, world: int = 1, rank: int = 0) -> None:
        self.size, self.world, self.rank = int(size), int(world), int(rank)
        self.num_replicas, self.epoch = self.world, 0

    def __iter__(self):
        return iter(range(self.rank, self.size, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world))


# --------------------------------------------------------------------------------------
# Stage 3: the DSRG segmenter (Huang et al., CVPR 2018).


def resolve_seed_dir(seeds: str | os.PathLike[str]) -> Path:
    """The folder of seed PNGs named by ``seeds``: a localize run directory (its
    ``seeds/``) or the seeds folder itself."""
    path = Path(seeds).expanduser()
    if (path / "seeds").is_dir():
        return path / "seeds"
    if path.is_dir():
        return path
    raise VOCDataError(
        f"seeds={seeds}: no such directory. Give the localize stage's run directory "
        "(runs/localize/<time>, holding seeds/) or a folder of <id>.png seed PNGs."
    )


def pixel_label_ids(data_cfg: Any) -> list[str]:
    """Ids of ``data.pixel_labels`` (a split name or a .txt id list), or none."""
    name = data_cfg.get("pixel_labels")
    if not name:
        return []
    return make_reader(data_cfg, str(name), limited=False, check=False).ids


def pad_collate(items: list[dict]) -> dict[str, Any]:
    """Stack items of different sizes: images padded at the bottom/right with 0 (the
    mean colour after normalisation), targets with 255 (ignored). Padding at the
    bottom/right keeps every pixel's place on the network's output grid.

    Adds ``"size"``: int64 (B, 2), each item's unpadded (H, W).
    """
    sizes = torch.tensor([list(item["image"].shape[-2:]) for item in items], dtype=torch.long)
    height, width = (int(v) for v in sizes.max(dim=0).values)
    images = items[0]["image"].new_zeros((len(items), 3, height, width))
    for i, item in enumerate(items):
        h, w = item["image"].shape[-2:]
        images[i, :, :h, :w] = item["image"]
    batch: dict[str, Any] = {
        "image": images,
        "labels": torch.stack([item["labels"] for item in items]),
        "id": [item["id"] for item in items],
        "size": sizes,
    }
    if "target" in items[0]:
        targets = torch.full((len(items), height, width), IGNORE_INDEX, dtype=torch.long)
        for i, item in enumerate(items):
            h, w = item["target"].shape[-2:]
            targets[i, :h, :w] = item["target"]
        batch["target"] = targets
    return batch


def _check_seeds_cover(seed_dir: Path, reader: VOCReader, gt_ids: set[str], split: str) -> None:
    """Every training id needs a seed file (or ground truth): fail before training."""
    have = {name[:-4] for name in os.listdir(seed_dir) if name.endswith(".png")}
    missing = [i for i in reader.ids if i not in have and i not in gt_ids]
    if missing:
        raise VOCDataError(
            f"{seed_dir}: no seeds for {len(missing)} of the {len(reader)} ids of "
            f"data.train_split={split} (first: {missing[:3]}). Localize that split "
            "(localize.split=...), or train on the split that was localized "
            "(data.train_split=...)."
        )


def _check_fully_labelled(reader: VOCReader, gt_ids: set[str], cfg: Any) -> None:
    """Without seeds the segmenter trains on ground truth alone: every id needs it."""
    missing = [i for i in reader.ids if i not in gt_ids]
    if missing:
        raise VOCDataError(
            f"no seeds= given, so the segmenter trains fully supervised, but "
            f"{len(missing)} of the {len(reader)} ids of data.train_split={cfg.train_split} "
            f"are not in data.pixel_labels={cfg.get('pixel_labels')} (first: {missing[:3]}). "
            "Give seeds=<localize run> to train DSRG, or data.pixel_labels="
            f"{cfg.train_split} (every id with a mask) for the fully supervised ceiling."
        )


class SegmentationDataModule(VOCDataModule):
    """Batches for the DSRG segmenter.

    Train: ``data.train_split`` with seeds from ``seeds`` (a localize run directory or
    its ``seeds/`` folder) as targets, except the ids of ``data.pixel_labels``, whose
    ground truth replaces their seeds (semi-supervised); random scale, flip and crop to
    ``data.crop_size`` applied jointly to image and target. Without ``seeds`` every
    training id must be in ``data.pixel_labels``: the fully supervised ceiling.
    Val: ``data.val_split`` with ground truth, whole images (padded to the largest of
    the batch by :func:`pad_collate`), so val mIoU is over full images.

    Args:
        data_cfg: the ``data`` config.
        seed_dir: the seeds (see above); ``None`` for fully supervised training (or
            validation only).
        rng_seed: base of the training order and augmentation streams.
    """

    val_collate = staticmethod(pad_collate)

    def __init__(
        self, data_cfg: Any, seed_dir: str | os.PathLike[str] | None, rng_seed: int = 0
    ) -> None:
        super().__init__(data_cfg, rng_seed)
        self.seeds = seed_dir
        self.train_set: SegmentationDataset | None = None  # type: ignore[assignment]
        self.val_set: SegmentationDataset | None = None  # type: ignore[assignment]
        self.gt_ids: list[str] = []

    @property
    def seed_dir(self) -> Path | None:
        return None if self.seeds is None else resolve_seed_dir(self.seeds)

    def setup(self, stage: str | None = None) -> None:
        cfg = self.cfg
        if stage in (None, "fit") and self.train_set is None:
            reader = make_reader(cfg, cfg.train_split)
            gt_ids = pixel_label_ids(cfg)
            in_split = set(reader.ids)
            self.gt_ids = [i for i in gt_ids if i in in_split]
            if gt_ids and not self.gt_ids:
                raise VOCDataError(
                    f"data.pixel_labels={cfg.pixel_labels}: none of its {len(gt_ids)} ids is "
                    f"in data.train_split={cfg.train_split}; list ids of the training split."
                )
            missing = [i for i in self.gt_ids if not reader.has_mask(i)]
            if missing:
                raise VOCDataError(
                    f"data.pixel_labels={cfg.pixel_labels}: {len(missing)} ids have no "
                    f"ground-truth mask in {[str(d) for d in reader.mask_dirs]} (first: "
                    f"{missing[:5]}); list only ids with masks (VOC train)."
                )
            seed_dir = self.seed_dir
            if seed_dir is None:
                _check_fully_labelled(reader, set(self.gt_ids), cfg)
            else:
                _check_seeds_cover(seed_dir, reader, set(self.gt_ids), cfg.train_split)
            scale_range = tuple(cfg.scale_range) if cfg.scale_range else None
            self.train_set = SegmentationDataset(
                reader,
                TrainTransform(cfg.crop_size, scale_range=scale_range, flip=cfg.flip),
                targets="gt" if seed_dir is None else "seeds",
                seed_dir=seed_dir,
                gt_ids=self.gt_ids,
                seed=self.rng_seed,
            )
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = SegmentationDataset(
                make_reader(cfg, cfg.val_split),
                EvalTransform(None),
                targets="gt",
                seed=self.rng_seed,
            )
