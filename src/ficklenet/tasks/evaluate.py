"""``ficklenet-evaluate``: pipeline stage 4, mIoU of a trained segmenter.

Follows DSRG's test procedure (Huang et al., CVPR 2018; official
``training/tools/test-ms.py``; docs/method.md, "Test") through
:mod:`ficklenet.inference`, the inference ``ficklenet-predict`` shares: the logits
at each scale in ``scales`` (and of the flipped image with ``flip=true``) are
upsampled to the image and summed, a softmax gives the probabilities, and with
``crf=true`` a dense CRF with the official test parameters
(:data:`ficklenet.dsrg.crf.TEST_CRF`) refines them on the full-resolution image, in
``crf_workers`` processes while the network works on the next batch. One confusion
matrix per variant
(:mod:`ficklenet.metrics`: 255 ignored, classes absent from truth and prediction
left out of the mean).

Writes into the run directory ``metrics.json`` (``miou``: with the CRF when
``crf=true``; ``miou_no_crf`` always, ``miou_crf`` with the CRF; per-class IoU by
class name; the keys are :mod:`ficklenet.metric_names`), prints the per-class
table, and writes palette PNG predictions ``predictions/<id>.png`` (the format of
VOC's ``SegmentationClass``, each file written atomically) and ``overlays/<id>.png``
(image | truth | prediction) for the first ``overlays`` images. Returns ``miou``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning_fabric import Fabric
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from tqdm import tqdm

from ficklenet import inference
from ficklenet.data.classes import CLASS_NAMES, save_palette_png
from ficklenet.data.datamodule import ensure_dataset, make_reader, pad_collate
from ficklenet.data.datasets import SegmentationDataset
from ficklenet.data.transforms import EvalTransform, denormalize
from ficklenet.errors import UserValueError
from ficklenet.files import atomic_path
from ficklenet.lit.loggers import Table, build_logger, close_logger, log_results
from ficklenet.lit.processes import launch_fabric
from ficklenet.lit.segmenter import DSRGSegmenter
from ficklenet.metric_names import (
    MIOU,
    MIOU_CRF,
    MIOU_NO_CRF,
    PER_CLASS_IOU,
    PER_CLASS_IOU_CRF,
    PER_CLASS_IOU_NO_CRF,
)
from ficklenet.metrics import confusion_counts, miou_from_confusion
from ficklenet.tasks.entry_point import stage_main
from ficklenet.tasks.run_dir import RunDir, open_run_dir, run_name
from ficklenet.tasks.run_record import DependsOn, checkpoint_input
from ficklenet.viz import label_overlay, save_panel

log = logging.getLogger(__name__)


def validate_evaluate(cfg: DictConfig) -> None:
    """Value checks the schema's types cannot express; each names the key."""
    if not cfg.scales or any(s <= 0 for s in cfg.scales):
        raise UserValueError(f"scales={list(cfg.scales)}: give one or more positive scales")
    for key in ("batch_size",):
        if cfg[key] < 1:
            raise UserValueError(f"{key}={cfg[key]}: must be >= 1")
    for key in ("num_workers", "overlays"):
        if cfg[key] < 0:
            raise UserValueError(f"{key}={cfg[key]}: must be >= 0")
    if cfg.crf_workers is not None and cfg.crf_workers < 0:
        raise UserValueError(f"crf_workers={cfg.crf_workers}: must be >= 0 (or null)")


# Predictions depend on every setting but where and how the work is spread, and on
# the segmenter's checkpoint (ficklenet.tasks.run_record).
SEGMENTER_INPUT = DependsOn(
    inputs=checkpoint_input("segmenter"), outputs=("predictions", "overlays", "metrics.json")
)


class _Results:
    """Confusion matrices, prediction files and overlays as items finish."""

    def __init__(self, cfg: DictConfig, run_dir: Path, num_classes: int, overlays: int) -> None:
        self.cfg = cfg
        self.k = num_classes
        self.cm_net = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self.cm_crf = torch.zeros_like(self.cm_net)
        self.pred_dir = run_dir / "predictions" if cfg.save_predictions else None
        self.overlays = overlays
        self.overlay_dir = run_dir / "overlays" if cfg.overlays > 0 else None
        self.done = 0

    def reduce(self, fabric: Fabric) -> None:
        """Sum the counts of all processes (a no-op in one process)."""
        if fabric.world_size == 1:
            return
        stacked = torch.stack([self.cm_net, self.cm_crf]).to(fabric.device)
        self.cm_net, self.cm_crf = fabric.all_reduce(stacked, reduce_op="sum").cpu()
        done = torch.tensor([self.done], device=fabric.device)
        self.done = int(fabric.all_reduce(done, reduce_op="sum").item())

    def add(
        self,
        image_id: str,
        image: np.ndarray,
        gt: np.ndarray,
        pred_net: np.ndarray,
        pred_crf: np.ndarray | None,
    ) -> None:
        self.cm_net += confusion_counts(pred_net, gt, self.k)
        final = pred_net
        if pred_crf is not None:
            self.cm_crf += confusion_counts(pred_crf, gt, self.k)
            final = pred_crf
        if self.pred_dir is not None:
            with atomic_path(self.pred_dir / f"{image_id}.png") as tmp:
                save_palette_png(final.astype(np.uint8), tmp)
        if self.overlay_dir is not None and self.done < self.overlays:
            panels = [image, label_overlay(image, gt), label_overlay(image, pred_net)]
            if pred_crf is not None:
                panels.append(label_overlay(image, pred_crf))
            save_panel(panels, self.overlay_dir / f"{image_id}.png")
        self.done += 1


def run_evaluate(cfg: DictConfig, run_dir: Path | None = None) -> float:
    """Evaluate ``segmenter.ckpt`` on ``split``; return the headline mIoU.

    In several processes (``trainer.strategy=ddp``) process r takes the ids
    ``r, r + world, ...``: each image is predicted and written once, and the
    summed confusion matrices give the metrics one process would.
    """
    validate_evaluate(cfg)
    model = inference.load_segmenter(cfg.segmenter.ckpt)
    # The checkpoint's data settings with the data.<key>=... given, or data=toy|voc's:
    # what runs, and so what config.yaml and the run record show.
    cfg.data = inference.data_settings(cfg.data, model.cfg.data)
    fabric = launch_fabric(cfg.trainer)
    # Rank 0 checks, locks and records before any process writes.
    with open_run_dir("evaluate", cfg, SEGMENTER_INPUT, run_dir, fabric.is_global_zero) as run:
        if fabric.broadcast(run.finished is not None, src=0):
            return float((run.finished or {}).get(MIOU, float("nan")))
        return _evaluate(cfg, run, model, fabric)


def _evaluate(cfg: DictConfig, run: RunDir, model: DSRGSegmenter, fabric: Fabric) -> float:
    run_dir, config = run.path, run.config
    data_cfg = cfg.data
    if fabric.is_global_zero:
        ensure_dataset(data_cfg)
    fabric.barrier()
    reader = make_reader(data_cfg, cfg.split)
    n_images = len(reader)
    mine = reader.subset(reader.ids[fabric.global_rank :: fabric.world_size])
    results = _Results(
        cfg, run_dir, model.val_miou.num_classes, cfg.overlays if fabric.is_global_zero else 0
    )
    start = time.perf_counter()
    model = inference.on_device(model, fabric.device, cfg.trainer)
    evaluate_images(cfg, model, mine, results, fabric)
    results.reduce(fabric)
    if results.done != n_images:
        raise RuntimeError(f"evaluated {results.done} of the {n_images} images of {cfg.split}")
    metrics, columns = _metrics(cfg, results, data_cfg, fabric.world_size)
    metrics["seconds"] = time.perf_counter() - start
    if fabric.is_global_zero:
        run.write_metrics(metrics)
        report_to_logger(cfg, run_dir, config, metrics, columns)
        print(format_table(columns, title=f"{cfg.split}: {results.done} images"))
        log.info("mIoU %.4f on %s; outputs in %s", metrics[MIOU], cfg.split, run_dir)
    return float(metrics[MIOU])


def evaluate_images(
    cfg: DictConfig, model: DSRGSegmenter, reader: Any, results: _Results, fabric: Fabric
) -> None:
    """Predict every image of ``reader`` (optionally with the dense CRF, in
    ``crf_workers`` processes while the network works on the next batch) and add
    each to ``results``."""
    dataset = SegmentationDataset(reader, EvalTransform(None), targets="gt", seed=cfg.seed)
    loader = DataLoader(
        dataset,
        batch_size=int(cfg.batch_size),
        shuffle=False,
        collate_fn=pad_collate,
        num_workers=int(cfg.num_workers),
    )
    show = bool(cfg.progress) and fabric.is_global_zero
    crf = inference.TestCRF(bool(cfg.crf), cfg.crf_workers, int(cfg.batch_size))
    with crf, tqdm(total=len(dataset), desc="evaluate", disable=not show) as bar:
        for batch in loader:
            images = batch["image"].to(fabric.device)
            # trainer.precision, as in training
            probs = inference.image_probs(model, images, cfg.scales, cfg.flip, fabric.autocast)
            for i, image_id in enumerate(batch["id"]):
                h, w = (int(v) for v in batch["size"][i])
                p = probs[i, :, :h, :w].numpy()
                gt = batch["target"][i, :h, :w].numpy()
                image = denormalize(batch["image"][i, :, :h, :w])
                crf.submit((image_id, image, gt, p.argmax(axis=0)), image, p)
            for item, labels in crf.ready():
                results.add(*item, labels)
            bar.update(len(batch["id"]))
        for item, labels in crf.ready(wait=True):
            results.add(*item, labels)


def _metrics(
    cfg: DictConfig, results: _Results, data_cfg: Any, processes: int
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """metrics.json's content and the per-class IoU columns of the table."""
    miou_net, iou_net = miou_from_confusion(results.cm_net)
    metrics: dict[str, Any] = {
        "stage": "evaluate",
        "checkpoint": str(cfg.segmenter.ckpt),
        "data_root": str(data_cfg.root),
        "split": cfg.split,
        "images": results.done,
        "processes": processes,
        "scales": [float(s) for s in cfg.scales],
        "flip": bool(cfg.flip),
        "crf": bool(cfg.crf),
        MIOU_NO_CRF: miou_net,
        PER_CLASS_IOU_NO_CRF: _by_name(iou_net),
        "predictions": str(results.pred_dir) if results.pred_dir else None,
        "overlays": str(results.overlay_dir) if results.overlay_dir else None,
    }
    columns = {"no CRF": iou_net}
    if cfg.crf:
        miou_crf, iou_crf = miou_from_confusion(results.cm_crf)
        metrics.update({MIOU_CRF: miou_crf, PER_CLASS_IOU_CRF: _by_name(iou_crf)})
        metrics.update({MIOU: miou_crf, PER_CLASS_IOU: _by_name(iou_crf)})
        columns["CRF"] = iou_crf
    else:
        metrics.update({MIOU: miou_net, PER_CLASS_IOU: _by_name(iou_net)})
    return metrics, columns


def report_to_logger(
    cfg: DictConfig,
    run_dir: Path,
    config: dict[str, Any],
    metrics: dict[str, Any],
    columns: dict[str, np.ndarray],
) -> None:
    """The mIoU with and without CRF, and the per-class IoU table, to the logger."""
    split = cfg.split
    logger = build_logger(cfg.logger, run_dir, run_name(cfg, run_dir), config)
    try:
        rows = [
            [name, *(None if not np.isfinite(v[c]) else float(v[c]) for v in columns.values())]
            for c, name in enumerate(CLASS_NAMES)
        ]
        log_results(
            logger,
            {
                f"{split}/{MIOU}": metrics[MIOU],
                f"{split}/{MIOU_NO_CRF}": metrics[MIOU_NO_CRF],
                f"{split}/{MIOU_CRF}": metrics.get(MIOU_CRF),
            },
            {f"{split}/per_class_iou": Table(["class", *columns], rows)},
            run_dir,
        )
    finally:
        close_logger(logger)


def _by_name(iou: np.ndarray) -> dict[str, float]:
    return {name: float(v) for name, v in zip(CLASS_NAMES, iou, strict=False)}


def format_table(columns: dict[str, np.ndarray], title: str = "") -> str:
    """Per-class IoU (%) with one column per variant, and the mean row."""
    names = list(columns)
    lines = [title] if title else []
    lines.append(f"{'class':<14}" + "".join(f"{n:>10}" for n in names))
    for c, cls in enumerate(CLASS_NAMES):
        cells = "".join(_pct(columns[n][c]) for n in names)
        lines.append(f"{cls:<14}{cells}")
    means = [np.nanmean(v) if np.isfinite(v).any() else np.nan for v in columns.values()]
    lines.append(f"{'mIoU':<14}" + "".join(_pct(m) for m in means))
    return "\n".join(lines)


def _pct(value: float) -> str:
    return f"{'-':>10}" if not np.isfinite(value) else f"{100 * value:>10.1f}"


main = stage_main("evaluate", run_evaluate)


if __name__ == "__main__":
    main()
