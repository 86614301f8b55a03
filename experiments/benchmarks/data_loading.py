"""Does data loading starve the classifier? Real loading vs the same batches from memory.

Issue 6 ("data loading never starves the model"). For each ``--workers`` value this
times ``--epochs`` training epochs of the FickleNet classifier (pipeline stage 1) fed by the
real loader, :meth:`ficklenet.data.datamodule.VOCDataModule.train_dataloader`
(JPEG decode, random scale/flip/crop, collate; ``data.num_workers`` worker
processes, persistent, with ``data.pin_memory`` as ``loader_kwargs`` applies it),
and the same number of steps fed from batches collected beforehand from that loader
(same config, ``num_workers=0``) and held in host memory, collated (and pinned, when
it pins) as the loader delivers them. Both loops run the same plain step:
host-to-device copy, forward, ``multilabel_soft_margin_loss``, backward, optimiser
step (``optim`` from the config, no scheduler), on one
:class:`ficklenet.lit.classifier.FickleClassifier` built from the composed
``conf/classify.yaml`` (random weights: ``backbone.pretrained=false``; the speed
does not depend on them).

Reported per row: images/s of both loops, their ratio real / in-memory (1.0: loading
costs nothing; below 1: the model waits for data), the share of the real epoch spent
blocked in ``next(loader)`` (on CUDA only indicative, as kernels run asynchronously),
and the time from the first ``iter(loader)`` to its first batch (with workers: their
start-up).

Warm-up, not timed: for each row, a whole epoch of the real loader (epoch 0), of
which the first ``--warmup`` batches are trained on and the rest only read (this
starts the persistent workers: their start-up is reported separately, never in the
images/s), then ``--warmup`` steps from memory. The timed real epochs then start
from a fresh ``iter(loader)`` on the already running workers, so they include
refilling the prefetch queue at the start of each epoch, as every epoch of a
multi-epoch run does. Images are counted from the batches (``drop_last`` applies).

Data: a synthetic toy VOC (``ficklenet.data.toy``; ``--images`` train_aug images
of ``--toy-size`` pixels a side) written to a temporary folder, or ``--root`` (a toy
set or a real VOC2012 + SBD root, read with ``data=voc``). The in-memory batches take
epochs × images × 3 × crop² float32s: VOC train_aug at 321 is 13 GB an epoch, so at
that scale pass ``--epochs 1 --split train`` (1464 images, 1.8 GB).

    OMP_NUM_THREADS=1 python experiments/benchmarks/data_loading.py --threads 1   # CPU, toy
    python experiments/benchmarks/data_loading.py --device cuda --backbone vgg16 \\
        --crop-size 321 --batch-size 20 --workers 0 2 4 8 --epochs 1 --split train \\
        --root /path/VOCdevkit/VOC2012

With ``--workers`` > 0 on a CPU the worker processes share the cores with the
training process, so on a small or busy machine more workers can be slower; the
load average is printed to show whether the machine was shared.
Results: ``experiments/benchmarks/data_loading.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from ficklenet.analysis.timing import synchronize
from ficklenet.config import compose_app
from ficklenet.data.datamodule import VOCDataModule, loader_kwargs
from ficklenet.data.toy import is_toy_voc, write_toy_voc
from ficklenet.lit.classifier import FickleClassifier
from ficklenet.lit.optim import build_optimizer


class _Trainer:
    """The plain training step both loops run, on one model and optimiser."""

    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        config = OmegaConf.to_container(cfg, resolve=True)
        self.device = device
        self.model = FickleClassifier(config).to(device).train()
        # The schedule is left out: it costs nothing and poly would reach lr 0.
        self.optimizer = build_optimizer(
            cfg.optim,
            pretrained=list(self.model.backbone.parameters()),
            new=list(self.model.head.parameters()),
            pretrained_is_new=not self.model.backbone.is_pretrained,
            total_steps=10**9,
        )["optimizer"]
        self.last_loss = float("nan")

    def run(self, batches: Iterable[dict[str, Any]], max_steps: int | None = None) -> dict:
        """Train on ``batches`` (``iter()`` included in the time); seconds, images, wait."""
        device = self.device
        non_blocking = device.type == "cuda"
        steps = images = 0
        wait = 0.0
        synchronize(device)
        start = time.perf_counter()
        it = iter(batches)
        while max_steps is None or steps < max_steps:
            t = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            wait += time.perf_counter() - t
            x = batch["image"].to(device, non_blocking=non_blocking)
            y = batch["labels"].to(device, non_blocking=non_blocking)
            loss = F.multilabel_soft_margin_loss(self.model(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            steps += 1
            images += len(x)
        synchronize(device)
        seconds = time.perf_counter() - start
        if steps:
            self.last_loss = float(loss.detach())
        return {"seconds": seconds, "steps": steps, "images": images, "wait_s": wait}


def _first_batch_seconds(loader: Iterable) -> tuple[float, Any]:
    """Time from ``iter(loader)`` to its first batch (worker start-up), and the iterator."""
    start = time.perf_counter()
    it = iter(loader)
    first = next(it)
    return time.perf_counter() - start, (first, it)


def _warm_up(trainer: _Trainer, loader: Iterable, steps: int) -> float:
    """``steps`` training steps from ``loader``, then the rest of its epoch read without
    training, so no batch is still in flight when the timed epoch starts (PyTorch would
    wait for those when it resets the persistent workers). Returns the workers' start-up
    seconds."""
    startup, (first, it) = _first_batch_seconds(loader)
    trainer.run([first])
    if steps > 1:
        trainer.run(it, max_steps=steps - 1)
    for _ in it:
        pass
    return startup


def _cpu_name() -> str:
    name = platform.processor()
    if name and name != platform.machine():
        return name
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name or platform.machine()


def _set_epoch(loader: Any, epoch: int) -> None:
    """What Lightning does at an epoch start: the dataset's augmentation stream and the
    sampler's order."""
    for part in (loader.dataset, loader.sampler):
        if hasattr(part, "set_epoch"):
            part.set_epoch(epoch)


def _load_avg() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def machine_info(device: torch.device, load_before: list[float] | None) -> dict[str, Any]:
    """What the numbers were measured on; the load average before and after the run
    (this run's own processes add up to 1 + the largest ``--workers`` to the latter)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "usable_cores": cores,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_avg_before": load_before,
        "load_avg": _load_avg(),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="data.num_workers values, one row each (toy config: 0, voc: 4)",
    )
    parser.add_argument(
        "--backbone",
        default="small",
        choices=["small", "vgg16", "resnet101"],
        help="small: the toy CPU net; vgg16: the paper's (slow on a CPU)",
    )
    parser.add_argument(
        "--crop-size", type=int, default=96, help="data.crop_size (toy 96, paper 321)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=16, help="data.batch_size (toy 16, paper 20)"
    )
    parser.add_argument(
        "--images",
        type=int,
        default=640,
        help="train_aug images of the toy set (>= 20); with batch 16: 40 steps an epoch",
    )
    parser.add_argument(
        "--toy-size",
        type=int,
        default=96,
        help="toy image side (toy config 96; ~500 resembles VOC's 500x375 JPEGs)",
    )
    parser.add_argument("--root", help="an existing toy or VOC2012 root (default: a temp toy)")
    parser.add_argument(
        "--split", default=None, help="data.train_split (default: the config's, train_aug)"
    )
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per row")
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed steps per row and loop (>= 1)"
    )
    parser.add_argument(
        "--pin-memory",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="data.pin_memory (default: the config's; only has an effect with CUDA)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the result: .json, or markdown otherwise")
    return parser


def _overrides(args: argparse.Namespace, root: Path, workers: int) -> list[str]:
    overrides = [
        f"data={'toy' if is_toy_voc(root) else 'voc'}",
        f"data.root={root}",
        "data.make_toy_if_missing=false",
        "data.saliency_dir=null",  # the classifier reads no saliency (none is written)
        f"data.crop_size={args.crop_size}",
        f"data.batch_size={args.batch_size}",
        f"data.num_workers={workers}",
        f"backbone={args.backbone}",
        "backbone.pretrained=false",
        f"seed={args.seed}",
    ]
    if args.split is not None:
        overrides.append(f"data.train_split={args.split}")
    if args.pin_memory is not None:
        overrides.append(f"data.pin_memory={args.pin_memory}")
    return overrides


def measure(
    args: argparse.Namespace, root: Path, device: torch.device, load_before: list[float] | None
) -> dict[str, Any]:
    """All rows on one model: the result dict :func:`main` returns."""
    torch.manual_seed(args.seed)
    base = compose_app("classify", _overrides(args, root, 0))
    trainer = _Trainer(base, device)

    # The in-memory batches: the timed epochs' batches, collated and pinned as the loader does.
    dm = VOCDataModule(base.data, rng_seed=args.seed)
    dm.setup("fit")
    assert dm.train_set is not None
    train_images = len(dm.train_set)
    memory: list[dict[str, Any]] = []
    loader = dm.train_dataloader()
    for epoch in range(1, args.epochs + 1):
        _set_epoch(loader, epoch)
        memory.extend(loader)

    rows = []
    for workers in args.workers:
        cfg = compose_app("classify", _overrides(args, root, workers))
        dm = VOCDataModule(cfg.data, rng_seed=args.seed)
        dm.setup("fit")
        loader = dm.train_dataloader()
        _set_epoch(loader, 0)
        startup = _warm_up(trainer, loader, args.warmup)
        real = {"seconds": 0.0, "steps": 0, "images": 0, "wait_s": 0.0}
        for epoch in range(1, args.epochs + 1):
            _set_epoch(loader, epoch)
            for key, value in trainer.run(loader).items():
                real[key] += value
        del loader, dm  # stop the persistent workers before the in-memory loop
        gc.collect()
        trainer.run(memory, max_steps=args.warmup)
        mem = trainer.run(memory)
        real_rate = real["images"] / real["seconds"]
        mem_rate = mem["images"] / mem["seconds"]
        rows.append(
            {
                "num_workers": workers,
                "pin_memory": loader_kwargs(cfg.data)["pin_memory"],
                "steps": real["steps"],
                "images": real["images"],
                "memory_images": mem["images"],
                "real_seconds": real["seconds"],
                "memory_seconds": mem["seconds"],
                "real_images_per_s": real_rate,
                "memory_images_per_s": mem_rate,
                "ratio": real_rate / mem_rate,
                "data_wait_fraction": real["wait_s"] / real["seconds"],
                "startup_seconds": startup,
            }
        )
    return {
        "machine": machine_info(device, load_before),
        "settings": {
            "root": str(root),
            "data": "toy" if is_toy_voc(root) else "voc",
            "train_split": str(base.data.train_split),
            "train_images": train_images,
            "toy_size": args.toy_size if args.root is None else None,
            "backbone": args.backbone,
            "crop_size": args.crop_size,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "warmup_steps": args.warmup,
            "optim": str(base.optim.name),
        },
        "final_loss": trainer.last_loss,
        "rows": rows,
    }


def format_result(result: dict[str, Any]) -> str:
    """The header lines and the markdown table."""
    m, s = result["machine"], result["settings"]

    def loads(values: list[float] | None) -> str:
        return "/".join(f"{v:.2f}" for v in values) if values else "n/a"

    device = m["device"] + (f" ({m['gpu']})" if m["gpu"] else "")
    lines = [
        f"device={device} cpu={m['cpu']} cores={m['usable_cores']}/{m['cpu_count']} "
        f"threads={m['threads']} torch={m['torch']}",
        f"load average (1/5/15 min): before {loads(m['load_avg_before'])}, "
        f"after {loads(m['load_avg'])}",
        f"data={s['data']} ({s['train_split']}: {s['train_images']} images"
        + (f", toy {s['toy_size']}px" if s["toy_size"] else "")
        + f") backbone={s['backbone']} crop={s['crop_size']} batch={s['batch_size']} "
        f"optim={s['optim']} epochs={s['epochs']} warm-up={s['warmup_steps']} steps",
        "",
        "| num_workers | pin_memory | steps | images | real (img/s) | in-memory (img/s) "
        "| real / in-memory | waiting for data | first batch (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['num_workers']} | {r['pin_memory']} | {r['steps']} | {r['images']} "
            f"| {r['real_images_per_s']:.1f} | {r['memory_images_per_s']:.1f} "
            f"| {r['ratio']:.2f} | {r['data_wait_fraction']:.0%} "
            f"| {r['startup_seconds']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    load_before = _load_avg()
    if args.warmup < 1:
        raise SystemExit("--warmup must be >= 1 (the first steps start the workers)")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="ficklenet-data-loading-") as tmp:
        if args.root is not None:
            root = Path(args.root).expanduser()
        else:
            root = write_toy_voc(
                Path(tmp) / "voc",
                seed=args.seed,
                n_train_aug=args.images,
                n_train=min(20, args.images),
                n_val=20,
                size=args.toy_size,
                saliency="none",
            )
        result = measure(args, root, device, load_before)
    text = format_result(result)
    print(text)
    if args.out:
        out = Path(args.out)
        if out.suffix == ".json":
            out.write_text(json.dumps(result, indent=2) + "\n")
        else:
            out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
