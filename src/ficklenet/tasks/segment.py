"""``ficklenet-segment``: pipeline stage 3, train the DSRG segmenter on seeds.

DSRG (Huang et al., CVPR 2018; official release, ``training/``): a DeepLab network
trained on the localize stage's seeds with seeded region growing, the balanced
seeding loss and the boundary loss (:mod:`ficklenet.lit.segmenter`). With
``data.pixel_labels`` the ground truth of the listed ids replaces their seeds
(semi-supervised); with no ``seeds`` and every training id in ``data.pixel_labels``
it trains the same network fully supervised (cross-entropy), the ceiling.

Writes into the Hydra run directory: ``checkpoints/{best,last}.ckpt`` (config
inside, ``ficklenet_stage="segment"``), ``config.yaml``, ``run_info.json``, the
logger's files and ``metrics.json`` with ``val/miou`` and ``val/miou_best``. When
``seed_eval_split`` (VOC ``train``) has ground truth, ``metrics.json`` also scores on
it, at full resolution, the raw seeds (mIoU over their labelled pixels, precision,
recall, labelled fraction), the seeds grown by DSRG's rule with the trained network,
and the network's predictions: does growing improve on the seeds? Returns
``val/miou_best`` for Hydra sweepers. Rerunning into a directory that holds
``checkpoints/last.ckpt`` resumes from it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from ficklenet.data.datamodule import (
    SegmentationDataModule,
    loader_kwargs,
    make_reader,
    pad_collate,
    resolve_seed_dir,
)
from ficklenet.data.datasets import SegmentationDataset
from ficklenet.data.transforms import EvalTransform
from ficklenet.data.voc import read_label_png
from ficklenet.dsrg.growing import grow
from ficklenet.dsrg.losses import floored_softmax
from ficklenet.files import existing_path, write_json
from ficklenet.geometry import grid_to_image, image_to_grid
from ficklenet.lit.segmenter import DSRGSegmenter, present_classes
from ficklenet.metrics import (
    confusion_counts,
    miou_from_confusion,
    seed_counts,
    seed_scores_from_counts,
)
from ficklenet.models.fickle import check_rate
from ficklenet.tasks.entry_point import stage_main
from ficklenet.tasks.run_record import DependsOn, read_record
from ficklenet.tasks.training import fit, start_training

log = logging.getLogger(__name__)


def validate_segment(cfg: DictConfig) -> None:
    """Value checks the schema's types cannot express; each names the key."""
    seg = cfg.segmenter
    for key in ("grow_fg_prob", "grow_bg_prob"):
        if not 0.0 <= seg[key] < 1.0:
            raise ValueError(f"segmenter.{key}={seg[key]}: a probability threshold in [0, 1)")
    for key in ("seed_loss_weight", "boundary_loss_weight"):
        if seg[key] < 0:
            raise ValueError(f"segmenter.{key}={seg[key]}: must be >= 0")
    check_rate(seg.dropout, "segmenter.dropout")
    if seg.crf_workers is not None and seg.crf_workers < 0:
        raise ValueError(f"segmenter.crf_workers={seg.crf_workers}: must be >= 0 (or null)")
    if cfg.seeds is None and not cfg.data.pixel_labels:
        raise ValueError(
            "seeds is not set: give seeds=<localize run dir> to train DSRG on seeds, or "
            "data.pixel_labels=<training split> to train fully supervised on ground truth"
        )


def run_segment(cfg: DictConfig, run_dir: Path | None = None) -> float:
    """Train the segmenter; return ``val/miou_best`` (stored, when the run in
    ``run_dir`` finished earlier with these settings)."""
    validate_segment(cfg)
    seed_dir = None if cfg.seeds is None else resolve_seed_dir(cfg.seeds)
    # The seeds are an input: a segmenter resumes only on the seeds it started with.
    depends_on = DependsOn(inputs=lambda _: {"seeds_from": seed_source(seed_dir)})
    run_dir, config, finished = start_training(cfg, run_dir, "segment", depends_on)
    if finished is not None:
        return float(finished["val/miou_best"])
    datamodule = SegmentationDataModule(cfg.data, seed_dir=seed_dir, rng_seed=cfg.seed)
    model = DSRGSegmenter(config)
    trainer, metrics = fit(cfg, run_dir, config, model, datamodule, monitor="val/miou")
    best = float(metrics.get("val/miou_best", model.best_miou))
    if trainer.is_global_zero:
        ckpt_dir = run_dir / "checkpoints"
        last_ckpt = ckpt_dir / "last.ckpt"
        out: dict[str, Any] = {
            "stage": "segment",
            "val/miou": metrics.get("val/miou"),
            "val/miou_best": best,
            "train/loss": metrics.get("train/loss"),
            "train/seeded_fraction": metrics.get("train/seeded_fraction"),
            "epochs": trainer.current_epoch,
            "steps": trainer.global_step,
            # The end of the schedule is what evaluate uses by default; best.ckpt
            # (best val mIoU, chosen on the split it is scored on) is an option.
            "checkpoint": existing_path(last_ckpt),
            "best_checkpoint": existing_path(ckpt_dir / "best.ckpt"),
            "mode": "dsrg" if seed_dir is not None else "fully_supervised",
            "seeds": None if seed_dir is None else str(seed_dir),
            "pixel_labels": cfg.data.pixel_labels,
            "pixel_label_images": len(datamodule.gt_ids),
        }
        if cfg.seed_eval_split and seed_dir is not None:
            net = DSRGSegmenter.from_checkpoint(last_ckpt) if last_ckpt.is_file() else model
            out.update(
                score_on_split(
                    net,
                    cfg.data,
                    seed_dir,
                    str(cfg.seed_eval_split),
                    trainer.strategy.root_device,
                )
            )
        write_json(run_dir / "metrics.json", out)
        log.info("segmenter val mIoU %.4f (best %.4f); outputs in %s", *_fmt(out), run_dir)
    return best


def seed_source(seed_dir: Path | None) -> str | None:
    """What made the seeds: a digest of the localize run's record (its classifier
    checkpoint and settings), or None for a plain folder of seed PNGs (or no seeds)."""
    record = read_record(seed_dir.parent) if seed_dir is not None else None
    if record is None:
        return None
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


@torch.no_grad()
def score_on_split(
    model: DSRGSegmenter,
    data_cfg: Any,
    seed_dir: Path,
    split: str,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Raw seeds, grown seeds and predictions of ``model`` against ground truth on
    ``split``, at full resolution.

    Only ids with both a mask and a seed file count; none → an empty result (logged).
    Grown seeds: DSRG's step (training CRF, :func:`grow` from the raw seeds) with the
    trained network on the whole image, the grown labels brought back to full
    resolution by nearest neighbour on the output grid; raw seed pixels keep their
    label, so grown seeds contain the raw ones. Keys are prefixed ``<split>/``.
    """
    reader = make_reader(data_cfg, split)
    ids = [i for i in reader.ids if reader.has_mask(i) and (seed_dir / f"{i}.png").is_file()]
    if not ids:
        log.info("no ids of %s have both ground truth and seeds; seed scoring skipped", split)
        return {}
    reader.ids = ids
    dataset = SegmentationDataset(reader, EvalTransform(None), targets="gt")
    loader = DataLoader(
        dataset,
        batch_size=int(data_cfg.val_batch_size),
        collate_fn=pad_collate,
        **{**loader_kwargs(data_cfg), "persistent_workers": False},
    )
    model = model.eval().to(device)
    stride = model.output_stride
    k = model.val_miou.num_classes
    cm_pred = torch.zeros(k, k, dtype=torch.long)
    cm_seeds = torch.zeros_like(cm_pred)
    cm_grown = torch.zeros_like(cm_pred)
    counts_seeds = np.zeros(3, np.int64)
    counts_grown = np.zeros(3, np.int64)
    for batch in loader:
        images = batch["image"].to(device)
        gt = batch["target"]
        seeds = torch.full_like(gt, 255)
        for i, image_id in enumerate(batch["id"]):
            h, w = (int(v) for v in batch["size"][i])
            seeds[i, :h, :w] = torch.from_numpy(read_label_png(seed_dir / f"{image_id}.png").copy())
        logits = model(images).float()
        probs = floored_softmax(logits)
        q = model.refine(images, probs)
        grid_seeds = image_to_grid(seeds, logits.shape[-2:], stride).to(device)
        present = present_classes(batch["labels"].to(device))
        grown_grid = grow(
            q,
            grid_seeds,
            present,
            model.cfg.segmenter.grow_fg_prob,
            model.cfg.segmenter.grow_bg_prob,
        ).cpu()
        grown = grid_to_image(grown_grid, gt.shape[-2:], stride, mode="nearest")
        grown = torch.where(seeds != 255, seeds, grown)
        pred = grid_to_image(logits, gt.shape[-2:], stride).argmax(dim=1).cpu()
        for i in range(len(gt)):
            h, w = (int(v) for v in batch["size"][i])
            g, s, r = gt[i, :h, :w], seeds[i, :h, :w], grown[i, :h, :w]
            cm_pred += confusion_counts(pred[i, :h, :w], g, k)
            cm_seeds += confusion_counts(s, g, k)
            cm_grown += confusion_counts(r, g, k)
            counts_seeds += seed_counts(s, g)
            counts_grown += seed_counts(r, g)
    # The seeds' figures carry the names localize gives them (seed/...), the grown
    # seeds' likewise (grown_seed/...); the split they were scored on is recorded.
    out: dict[str, Any] = {"seed_eval_split": split, "seed_eval_images": len(ids)}
    for name, cm, counts in (
        ("seed", cm_seeds, counts_seeds),
        ("grown_seed", cm_grown, counts_grown),
    ):
        scores = seed_scores_from_counts(counts)
        out[f"{name}/miou"] = miou_from_confusion(cm)[0]
        out[f"{name}/precision"] = scores.precision
        out[f"{name}/recall"] = scores.recall
        out[f"{name}/labelled_fraction"] = scores.labelled
    out[f"{split}/miou"] = miou_from_confusion(cm_pred)[0]
    log.info(
        "%s: seeds mIoU %.4f (labelled %.1f%%), grown %.4f (labelled %.1f%%), predictions %.4f",
        split,
        out["seed/miou"],
        100 * out["seed/labelled_fraction"],
        out["grown_seed/miou"],
        100 * out["grown_seed/labelled_fraction"],
        out[f"{split}/miou"],
    )
    return out


def _fmt(out: dict[str, Any]) -> tuple[float, float]:
    value = out.get("val/miou")
    return (float("nan") if value is None else value, out["val/miou_best"])


main = stage_main("segment", run_segment)


if __name__ == "__main__":
    main()
