"""Time DSRG's per-step seed growing: batched ``grow`` vs the per-image BFS reference.

The setting of one DSRG training step (Huang et al., CVPR 2018; official
``train-s.prototxt``): a batch of 20 maps at 41×41 (321×321 input, output stride
8), 21 classes. Probabilities are a softmax of smoothed random logits in which
each image has 1–3 present foreground classes; seeds label 20–40 % of the pixels
(the class that the smoothed logits favour, plus 2 % noise). ``grow`` is checked
equal to ``grow_reference`` before timing. With ``--crf`` it also times
``dense_crf_batch`` with the training preset on 20 random 41×41 images, serial
in-process vs ``--workers`` processes (the pool is started before timing, as in
training where it is reused every step).

    python experiments/benchmarks/bench_growing.py                      # CPU
    python experiments/benchmarks/bench_growing.py --crf --workers 2
    python experiments/benchmarks/bench_growing.py --device cuda

Each timing is the median of ``--repeats`` runs after one warm-up run. torch
uses ``--threads`` CPU threads (default 1: on a machine shared with other jobs,
intra-op threads that wait for a busy core make each small op take a scheduler
time slice, and timings swing by 100×).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from ficklenet.analysis.timing import median_seconds
from ficklenet.data.classes import IGNORE_INDEX
from ficklenet.dsrg.crf import TRAIN_CRF, dense_crf_batch, shutdown_pools
from ficklenet.dsrg.growing import grow
from ficklenet.reference import grow_reference


def make_batch(
    batch: int, classes: int, size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    present = torch.zeros(batch, classes, dtype=torch.bool)
    present[:, 0] = True
    for i in range(batch):
        count = int(torch.randint(1, 4, (1,), generator=g))
        present[i, 1 + torch.randperm(classes - 1, generator=g)[:count]] = True
    coarse = torch.randn(batch, classes, size // 5 + 1, size // 5 + 1, generator=g) * 4
    # Absent classes score far lower, as in a trained network; background a little higher.
    coarse = coarse + present[:, :, None, None] * 10.0
    coarse[:, 0] += 1.0
    logits = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    probs = logits.softmax(dim=1)

    best = logits.masked_fill(~present[:, :, None, None], float("-inf"))
    top2 = best.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    seeds = torch.full((batch, size, size), IGNORE_INDEX, dtype=torch.long)
    for i in range(batch):
        fraction = 0.2 + 0.2 * float(torch.rand(1, generator=g))
        cut = torch.quantile(margin[i].flatten(), 1 - fraction)
        chosen = margin[i] >= cut
        seeds[i][chosen] = best[i].argmax(dim=0)[chosen]
    noise = torch.rand(batch, size, size, generator=g) < 0.02
    seeds[noise] = torch.randint(0, classes, (int(noise.sum()),), generator=g)
    return probs, seeds, present


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--size", type=int, default=41)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--crf", action="store_true", help="also time dense_crf_batch")
    parser.add_argument("--workers", type=int, default=2, help="processes for --crf")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; 1 keeps timings stable on a shared machine, where "
        "intra-op threads wait on busy cores",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    probs, seeds, present = make_batch(args.batch, args.classes, args.size, seed=0)
    labelled = (seeds != IGNORE_INDEX).float().mean().item()
    out = grow(probs.to(args.device), seeds.to(args.device), present.to(args.device)).cpu()
    ref = torch.from_numpy(grow_reference(probs, seeds, present))
    assert torch.equal(out, ref), "grow and grow_reference disagree"
    grown = (out != IGNORE_INDEX).float().mean().item()
    print(
        f"batch {args.batch}×{args.size}×{args.size}, {args.classes} classes, "
        f"device {args.device}, torch threads {torch.get_num_threads()}: "
        f"seeds label {labelled:.1%} of pixels, {grown:.1%} after growing"
    )

    dev = (probs.to(args.device), seeds.to(args.device), present.to(args.device))
    t_grow = median_seconds(lambda: grow(*dev), args.repeats, device=args.device)
    t_ref = median_seconds(lambda: grow_reference(probs, seeds, present), args.repeats)
    print(f"grow            {t_grow * 1e3:9.2f} ms")
    print(f"grow_reference  {t_ref * 1e3:9.2f} ms")
    print(f"speed-up        {t_ref / t_grow:9.1f}×")

    if args.crf:
        # Smooth colour fields (a few regions per image) rather than per-pixel noise.
        colours = torch.rand(args.batch, 3, 6, 6, generator=torch.Generator().manual_seed(1))
        fields = F.interpolate(colours, size=(args.size, args.size), mode="bilinear")
        images = (fields * 255).round().byte().permute(0, 2, 3, 1).contiguous().numpy()
        crf_probs = probs.numpy()
        t_serial = median_seconds(
            lambda: dense_crf_batch(images, crf_probs, TRAIN_CRF, workers=0), args.repeats
        )
        t_parallel = median_seconds(
            lambda: dense_crf_batch(images, crf_probs, TRAIN_CRF, workers=args.workers),
            args.repeats,
        )
        shutdown_pools()
        print(f"dense_crf_batch serial          {t_serial * 1e3:9.2f} ms")
        print(f"dense_crf_batch {args.workers} workers       {t_parallel * 1e3:9.2f} ms")
        print(f"speed-up                        {t_serial / t_parallel:9.2f}×")


if __name__ == "__main__":
    main()
