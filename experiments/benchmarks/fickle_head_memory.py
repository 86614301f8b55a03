"""Peak memory of one FickleHead training step: ours vs the literal expansion.

A training step = forward with a freshly sampled centre-preserving mask,
multi-label soft-margin loss, backward to x and to the classifier weights.
"Extra" is the step's peak memory above what was allocated before it (x, the
weights): on CUDA from the caching allocator's peak counter, on CPU from the
process's peak resident set (VmHWM, reset through /proc/self/clear_refs) with a
fixed glibc mmap threshold so freed buffers go back to the system.

    python experiments/benchmarks/fickle_head_memory.py                # CPU, batch 2
    python experiments/benchmarks/fickle_head_memory.py --device cuda --batch 20

One warm-up step runs first. Each (s, implementation) runs in a fresh
subprocess so one cannot inflate the other's peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(s: int, impl: str, batch: int, channels: int, size: int, device: str) -> dict:
    import torch
    import torch.nn.functional as F

    from ficklenet.models.fickle import FickleHead
    from ficklenet.reference import fickle_head_literal

    torch.manual_seed(0)
    head = FickleHead(channels, 20, kernel_size=s, p=0.9).to(device).train()
    x = torch.randn(batch, channels, size, size, device=device, requires_grad=True)
    target = (torch.rand(batch, 20, device=device) < 0.1).float()

    def step() -> None:
        if impl == "ours":
            scores = head(x)
        else:
            mask = head.sample_mask(x)
            scores = fickle_head_literal(head, x, mask)
        loss = F.multilabel_soft_margin_loss(scores, target)
        loss.backward()

    step()  # warm-up: one-off allocations (thread pools, kernels) are not the head's
    x.grad = None
    head.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - before
    else:
        before = _rss_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        step()
        extra = (_rss_kib("VmHWM") - before) * 1024
    x_bytes = x.numel() * x.element_size()
    return {
        "s": s,
        "impl": impl,
        "batch": batch,
        "x_mb": x_bytes / 2**20,
        "extra_mb": extra / 2**20,
        "extra_over_x": extra / x_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--size", type=int, default=41, help="feature map side (41 = VGG16 at 321)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        s, impl = args.one.split(":")
        print(json.dumps(measure(int(s), impl, args.batch, args.channels, args.size, args.device)))
        return
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="2")
    print(
        f"device={args.device} batch={args.batch} x=({args.batch}, {args.channels}, "
        f"{args.size}, {args.size}) float32, p=0.9, K=20"
    )
    print("| s | implementation | x (MB) | step peak above x (MB) | peak / size of x |")
    print("|---|---|---|---|---|")
    for s in (3, 9):
        for impl in ("ours", "literal"):
            cmd = [
                sys.executable,
                __file__,
                "--one",
                f"{s}:{impl}",
                "--batch",
                str(args.batch),
                "--channels",
                str(args.channels),
                "--size",
                str(args.size),
                "--device",
                args.device,
            ]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"| {s} | {impl} | {r['x_mb']:.1f} | {r['extra_mb']:.1f} | "
                f"{r['extra_over_x']:.2f}x |"
            )


if __name__ == "__main__":
    main()
