"""What DSRG's growing did, on a split with ground truth: raw seeds, grown seeds and
the trained network's predictions, scored at full resolution.

Run by ``ficklenet-segment`` after training when ``seed_eval_split`` (VOC ``train``)
has ground truth, to answer: does growing improve on the seeds, and do the
predictions improve on both? (DSRG, Huang et al., CVPR 2018, Sec. 3.2; the growing
rule is :func:`ficklenet.dsrg.growing.grow`.)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ficklenet.data.classes import IGNORE_INDEX
from ficklenet.data.datamodule import loader_kwargs, make_reader, pad_collate
from ficklenet.data.datasets import SegmentationDataset
from ficklenet.data.transforms import EvalTransform
from ficklenet.data.voc import read_label_png
from ficklenet.dsrg.growing import grow
from ficklenet.dsrg.losses import floored_softmax
from ficklenet.geometry import grid_to_image, image_to_grid
from ficklenet.lit.segmenter import DSRGSegmenter, present_classes
from ficklenet.metric_names import GROWN_SEED, SEED, split_miou
from ficklenet.metrics import (
    confusion_counts,
    miou_from_confusion,
    seed_counts,
    seed_scores_from_counts,
)

log = logging.getLogger(__name__)


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
        seeds = torch.full_like(gt, IGNORE_INDEX)
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
        grown = torch.where(seeds != IGNORE_INDEX, seeds, grown)
        pred = grid_to_image(logits, gt.shape[-2:], stride).argmax(dim=1).cpu()
        for i in range(len(gt)):
            h, w = (int(v) for v in batch["size"][i])
            g, s, r = gt[i, :h, :w], seeds[i, :h, :w], grown[i, :h, :w]
            cm_pred += confusion_counts(pred[i, :h, :w], g, k)
            cm_seeds += confusion_counts(s, g, k)
            cm_grown += confusion_counts(r, g, k)
            counts_seeds += seed_counts(s, g)
            counts_grown += seed_counts(r, g)
    # The seeds' figures carry the names localize gives them (SEED), the grown
    # seeds' likewise (GROWN_SEED); the split they were scored on is recorded.
    out: dict[str, Any] = {"seed_eval_split": split, "seed_eval_images": len(ids)}
    for names, cm, counts in ((SEED, cm_seeds, counts_seeds), (GROWN_SEED, cm_grown, counts_grown)):
        scores = seed_scores_from_counts(counts)
        out[names.miou] = miou_from_confusion(cm)[0]
        out[names.precision] = scores.precision
        out[names.recall] = scores.recall
        out[names.labelled_fraction] = scores.labelled
    out[split_miou(split)] = miou_from_confusion(cm_pred)[0]
    log.info(
        "%s: seeds mIoU %.4f (labelled %.1f%%), grown %.4f (labelled %.1f%%), predictions %.4f",
        split,
        out[SEED.miou],
        100 * out[SEED.labelled_fraction],
        out[GROWN_SEED.miou],
        100 * out[GROWN_SEED.labelled_fraction],
        out[split_miou(split)],
    )
    return out
