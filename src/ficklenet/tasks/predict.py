"""``ficklenet-predict``: segment images that have no labels with a trained segmenter.

    ficklenet-predict segmenter.ckpt=runs/segment/<time>/checkpoints/last.ckpt input=photos/
    ficklenet-predict segmenter.ckpt=... input=test data=voc data.root=/path/VOC2012 \\
        scales=[0.75,1.0,1.25] flip=true crf=true voc_submission=true
    ficklenet-predict segmenter.ckpt=... input=photos/ trainer=ddp trainer.devices=4

``input`` is a folder of images (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``; other files are
ignored and named in the log) or the name of a split of the dataset (the checkpoint's,
or ``data=...``), such as VOC's ``test``, which needs no ground truth. Inference is
:mod:`ficklenet.inference`, the one ``ficklenet-evaluate`` runs (the summed logits of
``scales`` and flips, softmax, then optionally the dense CRF with DSRG's test
parameters scaled to each image, in a pool of processes, as many as the CPUs
available, at most 8), so its predictions equal evaluate's on the same images.
Each image gets ``predictions/<id>.png``: a palette PNG (VOC's
``SegmentationClass`` format) at the image's own size, written atomically; a rerun
skips images already written. In several processes image ``i`` goes to rank
``i mod world``, so each image is written once.

A file that cannot be decoded (a corrupt or truncated JPEG, a text file named
``.jpg``) is skipped and named in the log and in ``metrics.json`` (``skipped``), or
stops the run when ``on_bad_input=stop``; an empty input stops at once.
``voc_submission=true`` also lays the predictions out as the VOC evaluation server
wants them, ``results/VOC2012/Segmentation/comp6_test_cls/<id>.png``, and packs that
tree into ``results.tar.gz``, ready to upload.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from ficklenet import inference
from ficklenet.data.classes import save_palette_png
from ficklenet.data.datamodule import ensure_dataset, make_reader
from ficklenet.data.transforms import EvalTransform
from ficklenet.data.voc import VOCDataError, read_rgb_image
from ficklenet.errors import UserValueError
from ficklenet.files import atomic_path
from ficklenet.lit.processes import launch_fabric
from ficklenet.tasks.entry_point import stage_main
from ficklenet.tasks.run_dir import RunDir, open_run_dir
from ficklenet.tasks.run_record import DependsOn, checkpoint_input

log = logging.getLogger(__name__)

PREDICT_DEPENDS_ON = DependsOn(
    inputs=checkpoint_input("segmenter"),
    outputs=("predictions", "results", "results.tar.gz", "metrics.json"),
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
#: Where the VOC evaluation server wants segmentation results (competition 6:
#: trained on any data), relative to the archive's root.
VOC_RESULTS = Path("results/VOC2012/Segmentation/comp6_test_cls")


def validate_predict(cfg: DictConfig) -> None:
    if not cfg.scales or any(s <= 0 for s in cfg.scales):
        raise UserValueError(f"scales={list(cfg.scales)}: give one or more positive scales")


def list_inputs(cfg: DictConfig, data_cfg: Any) -> list[tuple[str, Path]]:
    """(id, image path) for every image of ``input``: a folder or a split name."""
    source = Path(str(cfg.input)).expanduser()
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file())
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        others = [p.name for p in files if p not in images]
        if others:
            log.info(
                "input=%s: ignoring %d files that are not images: %s",
                source,
                len(others),
                ", ".join(others[:10]) + (" ..." if len(others) > 10 else ""),
            )
        if not images:
            raise VOCDataError(
                f"input={source}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder. "
                "Point input= at a folder of images, or name a split of the dataset."
            )
        stems = [p.stem for p in images]
        twins = sorted({s for s in stems if stems.count(s) > 1})
        if twins:
            raise VOCDataError(
                f"input={source}: several images share a name ({twins[:5]}), so their "
                "predictions would overwrite each other; rename them."
            )
        return [(p.stem, p) for p in images]
    if "/" in str(cfg.input) or source.suffix:
        raise VOCDataError(f"input={source}: no such folder (nor a split name).")
    ensure_dataset(data_cfg)
    reader = make_reader(data_cfg, str(cfg.input))
    if not len(reader):
        raise VOCDataError(f"input={cfg.input}: the split {reader.split_file} lists no ids.")
    return [(image_id, reader.image_path(image_id)) for image_id in reader.ids]


def run_predict(cfg: DictConfig, run_dir: Path | None = None) -> int:
    """Write a palette PNG prediction per input image; return how many were written."""
    validate_predict(cfg)
    model = inference.load_segmenter(cfg.segmenter.ckpt)
    # The checkpoint's data settings with the data.<key>=... given, or data=toy|voc's:
    # what runs, and so what config.yaml and the run record show.
    cfg.data = inference.data_settings(cfg.data, model.cfg.data)
    fabric = launch_fabric(cfg.trainer)
    # Rank 0 checks (no mixing predictions of two settings), locks and records first.
    writer = fabric.is_global_zero
    with open_run_dir("predict", cfg, PREDICT_DEPENDS_ON, run_dir, writer) as run:
        if fabric.broadcast(run.finished is not None, src=0):
            return 0  # nothing written now
        return _predict(cfg, run, model, fabric)


def _predict(cfg: DictConfig, run: RunDir, model: Any, fabric: Any) -> int:
    run_dir = run.path
    data_cfg = cfg.data
    items = list_inputs(cfg, data_cfg)
    mine = items[fabric.global_rank :: fabric.world_size]
    out_dir = run_dir / "predictions"
    device = fabric.device
    model = inference.on_device(model, device, cfg.trainer)
    transform = EvalTransform(None)
    skipped: list[dict[str, str]] = []
    start = time.perf_counter()
    show = bool(cfg.progress) and fabric.is_global_zero
    with inference.TestCRF(bool(cfg.crf)) as crf:
        written = 0

        def write(wait: bool = False) -> None:
            nonlocal written
            for (target, net), labels in crf.ready(wait):
                with atomic_path(target) as tmp:
                    save_palette_png((net if labels is None else labels).astype(np.uint8), tmp)
                written += 1

        for image_id, path in tqdm(mine, desc="predict", disable=not show):
            target = out_dir / f"{image_id}.png"
            if target.is_file():
                continue  # written by an earlier, interrupted run
            try:
                image = read_rgb_image(path)
            except VOCDataError as err:
                if cfg.on_bad_input == "stop":
                    write(wait=True)  # the images before it, as they would be without a pool
                    msg = f"{err} (on_bad_input=stop; =skip goes on without it)"
                    raise VOCDataError(msg) from err
                log.warning("skipped: %s", err)
                skipped.append({"id": image_id, "file": str(path), "error": str(err)})
                continue
            (tensor,) = transform(image)
            # trainer.precision, as in training
            probs = inference.image_probs(
                model, tensor[None].to(device), cfg.scales, cfg.flip, fabric.autocast
            )[0].numpy()
            crf.submit((target, probs.argmax(axis=0)), image, probs)
            write()
        write(wait=True)
    skipped = _gather(fabric, skipped)
    written = sum(_gather(fabric, [written]))
    if fabric.is_global_zero:
        metrics: dict[str, Any] = {
            "stage": "predict",
            "checkpoint": str(cfg.segmenter.ckpt),
            "input": str(cfg.input),
            "images": len(items),
            "written_now": written,
            "skipped": skipped,
            "processes": fabric.world_size,
            "scales": [float(s) for s in cfg.scales],
            "flip": bool(cfg.flip),
            "crf": bool(cfg.crf),
            "seconds": time.perf_counter() - start,
            "predictions": str(out_dir),
        }
        if cfg.voc_submission:
            metrics["voc_submission"] = str(voc_submission(run_dir, [i for i, _ in items]))
        run.write_metrics(metrics)
        log.info(
            "%d predictions in %s (%d skipped)", len(items) - len(skipped), out_dir, len(skipped)
        )
    return written


def _gather(fabric: Any, values: list) -> list:
    """Every rank's list, concatenated (one process: unchanged)."""
    if fabric.world_size == 1:
        return values
    import torch.distributed as dist

    parts: list[list] = [[] for _ in range(fabric.world_size)]
    dist.all_gather_object(parts, values)
    return [v for part in parts for v in part]


def voc_submission(run_dir: Path, ids: list[str]) -> Path:
    """``results/VOC2012/Segmentation/comp6_test_cls/<id>.png`` for every prediction,
    and ``results.tar.gz`` holding that tree (written atomically)."""
    layout = run_dir / VOC_RESULTS
    layout.mkdir(parents=True, exist_ok=True)
    done = [i for i in ids if (run_dir / "predictions" / f"{i}.png").is_file()]
    for image_id in done:
        shutil.copyfile(run_dir / "predictions" / f"{image_id}.png", layout / f"{image_id}.png")
    archive = run_dir / "results.tar.gz"
    with atomic_path(archive) as tmp, tarfile.open(tmp, "w:gz") as tar:
        for image_id in done:
            tar.add(layout / f"{image_id}.png", arcname=str(VOC_RESULTS / f"{image_id}.png"))
    return archive


main = stage_main("predict", run_predict)


if __name__ == "__main__":
    main()
