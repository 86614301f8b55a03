"""The performance suite: localization, training steps, mixed precision, memory.

    python experiments/benchmarks/suite.py --device cuda --size voc     # the GPU figures
    python experiments/benchmarks/suite.py --device cpu --size small    # CI keeps it alive

Each figure is a median over repeats after a warm-up, on one device, in one run:

1. **Localization** (FickleNet Sec. 3.3): images/s of whole map generation for a
   group of images as ``ficklenet-localize`` does it (``Localizer.group_maps``:
   backbone once per image, batched, N stochastic passes in closed form through
   :func:`ficklenet.localization.sample_maps_many`, maps brought to image size),
   both formulas, and of plain one-pass CAM (backbone + the head's score map,
   brought to image size) on the same images; their ratio; in float32 and under
   mixed-precision autocast. VOC size: VGG16 (random weights: the speed does not
   depend on them), groups of 8 images of 321×321 → 41×41×512, s=9, p=0.9, N=200,
   two classes per image.
2. **Training steps**: classifier (backbone + FickleHead, soft-margin loss) and DSRG
   segmenter (forward, training CRF in worker processes, growing, both losses,
   backward, optimiser step; and the same with the training CRF on the device,
   ``segmenter.crf_backend=torch``) step time and images/s, with the CRF's share, in float32
   and in mixed precision (bf16 where the device has it, else fp16), and the
   mixed-precision speed-up. VOC size: batch 20 of 321×321 on VGG16.
3. **Peak memory** of each: ``torch.cuda.max_memory_allocated`` on a GPU (reset per
   figure); the process's peak resident memory on a CPU (a high-water mark over the
   whole run, so it only bounds each figure).

``--size small`` uses the toy's small backbone, 96×96, N=20, batch 8: minutes on a
laptop CPU, which is what the test suite runs (tests/test_benchmarks.py). Data loading
has its own benchmark (``data_loading.py``, real loader vs batches in memory).
Prints a Markdown table and the exact command; ``--out`` writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from ficklenet.analysis.timing import median_seconds
from ficklenet.config import compose_app
from ficklenet.config.schema import LocalizeOptions
from ficklenet.data.classes import IGNORE_INDEX
from ficklenet.dsrg.crf import shutdown_pools
from ficklenet.geometry import grid_to_image
from ficklenet.lit.classifier import FickleClassifier
from ficklenet.lit.localizer import Localizer
from ficklenet.lit.segmenter import DSRGSegmenter

SIZES: dict[str, dict[str, Any]] = {
    "voc": dict(backbone="vgg16", crop=321, s=9, n=200, batch=20, images=8),
    "small": dict(backbone="small", crop=96, s=3, n=20, batch=8, images=4),
}


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def mixed_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _compose(stage: str, size: dict[str, Any], extra: list[str] | None = None) -> dict[str, Any]:
    overrides = [
        f"backbone={size['backbone']}",
        "backbone.pretrained=false",
        f"model.kernel_size={size['s']}"
        if stage == "classify"
        else f"data.crop_size={size['crop']}",
        *(extra or []),
    ]
    return OmegaConf.to_container(compose_app(stage, overrides), resolve=True)


def images(batch: int, crop: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(batch, 3, 8, 8, generator=g) * 2 - 1
    return F.interpolate(coarse, size=(crop, crop), mode="bilinear").to(device)


def _localizer(size: dict[str, Any], device: torch.device, formula: str) -> Localizer:
    """The localize stage's module (its group_maps is what ``ficklenet-localize``
    runs per group of images) on a VGG16 or small classifier, p=0.9."""
    model = FickleClassifier(_compose("classify", size), load_pretrained=False).to(device).eval()
    model.head.p = 0.9
    settings = OmegaConf.structured(LocalizeOptions(n=size["n"], formula=formula))
    return Localizer(model, settings, Path("unused"), None, seed=0, overlay_ids=set()).to(device)


def bench_localization(size: dict[str, Any], device: torch.device, repeats: int) -> list[dict]:
    """Images/s of one-pass CAM and of N-pass maps on a group of ``images`` images
    (the localize stage's ``batch_size``), both through the backbone together and
    brought to image size; in float32 and under mixed-precision autocast."""
    batch = images(size["images"], size["crop"], device)
    ids = [f"image{k}" for k in range(len(batch))]
    classes = [[3, 11]] * len(batch)
    rows: list[dict] = []
    fp32_rate: dict[str, float] = {}

    def add(kind: str, precision: str, seconds: float, cam_rate: float | None) -> float:
        rate = len(batch) / seconds
        row = {"figure": f"localization, {kind}, {precision}", "images_per_s": rate}
        if cam_rate is not None:
            row["vs_cam"] = cam_rate / rate
        if precision == "mixed":
            row["speed_up_vs_fp32"] = rate / fp32_rate[kind]
        fp32_rate.setdefault(kind, rate)
        rows.append({**row, "peak_mb": peak_memory_mb(device)})
        return rate

    for precision in ("fp32", "mixed"):
        dtype = mixed_dtype(device) if precision == "mixed" else None
        loc = _localizer(size, device, "gradcam")

        @torch.no_grad()
        def cam(loc: Localizer = loc, dtype: torch.dtype | None = dtype) -> None:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                maps = loc.classifier.head.score_map(loc.classifier.features(batch))
            stride = loc.classifier.backbone.output_stride
            for m in maps[:, [3, 11]].float().clamp_min(0):
                grid_to_image(m, tuple(batch.shape[2:]), stride).cpu()

        reset_peak(device)
        cam_rate = add("one-pass CAM", precision, median_seconds(cam, repeats, device), None)
        for formula in ("gradcam", "grad_x_act"):
            loc = _localizer(size, device, formula)

            @torch.no_grad()
            def maps(loc: Localizer = loc, dtype: torch.dtype | None = dtype) -> None:
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    loc.group_maps(list(batch), ids, classes)

            reset_peak(device)
            add(
                f"N={size['n']} {formula}",
                precision,
                median_seconds(maps, repeats, device),
                cam_rate,
            )
    return rows


def _train_step(
    model: Any, step: Callable[[], torch.Tensor], dtype: torch.dtype | None, device: torch.device
) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = step()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return run


def bench_training(
    size: dict[str, Any], device: torch.device, repeats: int, crf_workers: int
) -> list[dict]:
    rows = []
    batch = images(size["batch"], size["crop"], device)
    labels = torch.zeros(size["batch"], 20, device=device)
    labels[:, [3, 11]] = 1
    targets = torch.full((size["batch"], size["crop"], size["crop"]), IGNORE_INDEX, device=device)
    targets[:, : size["crop"] // 4] = 0
    targets[:, size["crop"] // 2 :, size["crop"] // 2 :] = 4
    cls = FickleClassifier(_compose("classify", size), load_pretrained=False).to(device).train()
    seg_cfg = _compose("segment", size, [f"segmenter.crf_workers={crf_workers}"])
    seg = DSRGSegmenter(seg_cfg, load_pretrained=False).to(device).train()
    on_device = _compose("segment", size, ["segmenter.crf_backend=torch"])
    seg_dev = DSRGSegmenter(on_device, load_pretrained=False).to(device).train()
    steps = [
        ("classifier step", cls, lambda: F.multilabel_soft_margin_loss(cls(batch).float(), labels)),
        ("DSRG segmenter step", seg, lambda: seg.dsrg_step(batch, targets.long(), labels).loss),
        (
            "DSRG segmenter step, CRF on the device",
            seg_dev,
            lambda: seg_dev.dsrg_step(batch, targets.long(), labels).loss,
        ),
    ]
    if importlib.util.find_spec("pydensecrf") is None:
        print("pydensecrf is not installed: no rows for the pydensecrf training CRF")
        steps.pop(1)
    for name, model, step in steps:
        fp32 = None
        for label, dtype in (("float32", None), ("mixed", mixed_dtype(device))):
            run = _train_step(model, step, dtype, device)
            reset_peak(device)
            seconds = median_seconds(run, repeats, device)
            row = {
                "figure": f"{name}, {label}" + (f" ({dtype})" if dtype else ""),
                "step_s": seconds,
                "images_per_s": size["batch"] / seconds,
                "peak_mb": peak_memory_mb(device),
            }
            if isinstance(model, DSRGSegmenter):
                row["crf_share"] = model.crf_seconds / seconds
            if fp32 is None:
                fp32 = seconds
            else:
                row["speed_up_vs_fp32"] = fp32 / seconds
            rows.append(row)
    shutdown_pools()
    return rows


def table(rows: list[dict]) -> str:
    keys = ["images_per_s", "step_s", "vs_cam", "crf_share", "speed_up_vs_fp32", "peak_mb"]
    lines = ["| figure | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for row in rows:
        cells = [("–" if row.get(k) is None else f"{row[k]:.3g}") for k in keys]
        lines.append(f"| {row['figure']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--crf-workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    size = SIZES[args.size]
    rows = bench_localization(size, device, args.repeats)
    rows += bench_training(size, device, args.repeats, args.crf_workers)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"$ python {' '.join(sys.argv)}")
    print(f"device: {name}; torch {torch.__version__}; size={args.size} {size}\n")
    print(table(rows))
    if args.out:
        args.out.write_text(json.dumps({"device": name, "size": size, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
