"""The dense CRF's share of a DSRG training step (Huang et al., CVPR 2018).

DSRG runs a dense CRF on every image of every training batch, at the network's
output resolution (official release: ``CRFLayer`` / ``UpdateSeedLayer3`` in
``pylayers/pylayers.py``), on the CPU. This times whole training steps of
:class:`ficklenet.lit.segmenter.DSRGSegmenter` (forward, CRF, region growing,
losses, backward, optimiser step) and the CRF inside them, for a setting:

* ``--setting toy``: the toy defaults of ``conf/segment.yaml`` (small backbone,
  batch 16, 96×96 crops → 12×12 maps);
* ``--setting paper``: a batch of 20 at 321×321 → 41×41 maps (DSRG's), on
  ``--backbone`` (small by default; vgg16 is the paper's but slow on a CPU).

Images are smooth random colour fields with a few flat objects; seeds label
part of each object and of the background. Each figure is the median over
``--steps`` steps after one warm-up step; ``--workers`` is
``segmenter.crf_workers`` (0 = in the training process); ``--backend torch`` runs
the training CRF on the model's device instead (``segmenter.crf_backend``), and
``--device`` puts the model there.

    python experiments/benchmarks/crf_share.py --setting toy --workers 0
    python experiments/benchmarks/crf_share.py --setting toy --workers 2
    python experiments/benchmarks/crf_share.py --setting paper --workers 0
    python experiments/benchmarks/crf_share.py --setting paper --workers 2
    python experiments/benchmarks/crf_share.py --setting paper --backbone vgg16 --steps 2
    python experiments/benchmarks/crf_share.py --setting paper --backend torch
    python experiments/benchmarks/crf_share.py --setting paper --backbone vgg16 --device cuda \
        --backend torch
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from ficklenet.analysis.timing import median_seconds
from ficklenet.config import compose_app
from ficklenet.data.classes import IGNORE_INDEX
from ficklenet.dsrg.crf import shutdown_pools
from ficklenet.lit.segmenter import DSRGSegmenter


def make_batch(batch: int, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 6, 6, generator=g) * 2 - 1
    images = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    targets = torch.full((batch, size, size), IGNORE_INDEX, dtype=torch.long)
    labels = torch.zeros(batch, 20)
    for i in range(batch):
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            cls = int(torch.randint(1, 21, (1,), generator=g))
            side = size // 4
            y, x = (int(v) for v in torch.randint(0, size - side, (2,), generator=g))
            images[i, :, y : y + side, x : x + side] = torch.rand(3, 1, 1, generator=g) * 4 - 2
            c = side // 4
            targets[i, y + c : y + side - c, x + c : x + side - c] = cls
            labels[i, cls - 1] = 1
        targets[i, : size // 8, : size // 8] = 0
        targets[i, -size // 8 :, -size // 8 :] = 0
    return {"image": images, "target": targets, "labels": labels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=["toy", "paper"], default="toy")
    parser.add_argument("--backbone", default="small", help="small | vgg16 | resnet101")
    parser.add_argument("--workers", type=int, default=0, help="segmenter.crf_workers")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--backend", choices=["pydensecrf", "torch"], default="pydensecrf")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    overrides = [
        "seeds=unused",
        f"segmenter.crf_workers={args.workers}",
        f"segmenter.crf_backend={args.backend}",
        f"backbone={args.backbone}",
        "backbone.pretrained=false",
    ]
    if args.setting == "paper":
        overrides += ["data.crop_size=321", "data.batch_size=20"]
    cfg = compose_app("segment", overrides)
    device = torch.device(args.device)
    model = DSRGSegmenter(cfg).to(device).train()
    batch = {
        k: v.to(device)
        for k, v in make_batch(int(cfg.data.batch_size), int(cfg.data.crop_size)).items()
    }
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    outs, crfs = [], []

    def train_step() -> None:
        out = model.dsrg_step(batch["image"], batch["target"], batch["labels"])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        outs[:] = [out]
        crfs.append(model.crf_seconds)

    # The first step warms up (and starts the CRF pool); its CRF time is left out too.
    step = median_seconds(train_step, args.steps, device)
    crf = statistics.median(crfs[1:])
    out = outs[0]
    shutdown_pools()
    h, w = out.logits.shape[-2:]
    print(
        f"setting {args.setting}: backbone {args.backbone}, batch {len(out.logits)} at "
        f"{cfg.data.crop_size}x{cfg.data.crop_size} -> {h}x{w} maps, CRF {args.backend}"
        f"{f' ({args.workers} workers)' if args.backend == 'pydensecrf' else ''} on {device}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"training step  {step * 1e3:9.1f} ms")
    print(f"dense CRF      {crf * 1e3:9.1f} ms")
    print(f"CRF share      {crf / step:9.1%}")


if __name__ == "__main__":
    main()
