"""Speed of FickleNet's map generation: closed form (ours) vs the literal method.

FickleNet (Lee et al., CVPR 2019, Sec. 3.3) localizes with N stochastic passes
(N = 200 [recalled]). Done literally, each pass is a forward pass of backbone +
head with a fresh dropout mask and one backward pass per present class to the
feature map. Ours runs the backbone once and computes the N maps in closed
form (:func:`ficklenet.localization.sample_maps`). On the same machine, in one
run, this times:

(a) one VGG16 backbone forward pass (DeepLab-LargeFOV, output stride 8; random
    weights — the speed does not depend on them; 321×321 → 41×41×512);
(b) ours, stochastic part: N maps of the present classes from the backbone's
    feature map (draw, closed form, normalise, aggregate), s=9, p=0.9;
(c) the literal method: N × (backbone forward + sampled mask + head forward +
    one backward per class), timed over ``--literal-passes`` passes and
    extrapolated linearly to N (marked as such);
(d) for reference, the literal head alone (backbone once, N × head forward +
    backward), likewise extrapolated.

Targets (the issue): (b) ≤ 2 × (a); whole map generation (a)+(b) ≥ 50× faster
than (c).

    python experiments/benchmarks/localization_speed.py --threads 1      # CPU
    python experiments/benchmarks/localization_speed.py --device cuda --literal-passes 200

On a CPU shared with other busy processes, pass ``--threads 1``: with more
threads than free cores, OpenMP's spin-waiting slows both (a) and (b) by
10-100× and the numbers mean nothing (``OMP_WAIT_POLICY=PASSIVE`` also avoids it).

Result (2-core AMD EPYC VM, AVX-512; both cores also busy with two other jobs,
so absolute times vary by ±30 % between runs, the ratio (b)/(a) less)::

    device=cpu threads=1 load(1 min)=4.08 torch=2.15.0+cu132
    image 321×321 → x 512×41×41 (nonzero 58%), N=200, classes=2, s=9, p=0.9
    formula=grad_x_act; Bernoulli draws: literal 1.38e+10, ours ≤ 8.02e+09 (nonzero x only)
    | step | seconds |
    |---|---|
    | (a) backbone forward | 1.326 |
    | (b) ours, stochastic part (N maps, closed form) | 7.583 |
    | (a)+(b) ours, whole map generation | 8.909 |
    | (c) literal, N × (backbone + head fwd/bwd) [extrapolated from 5 passes] | 582.5 |
    | (d) literal head only, backbone once [extrapolated from 5 passes] | 430.6 |
    (b)/(a) = 5.72 (target ≤ 2: not met); (c)/((a)+(b)) = 65× (target ≥ 50×: met); (d)/(b) = 57×

(b) is bound by drawing the random bits: even at 2 random bits per Bernoulli
draw it needs N·(entries)·(s²-1)/16 ≈ 5e8 random 32-bit words from mt19937
(about one backbone pass by itself), then the alias passes and 1e9 table
look-ups, all single-threaded here. On CUDA the same code runs ``chunk`` masks
per call (not measured here: no GPU was available).
"""

from __future__ import annotations

import argparse
import os

import torch

from ficklenet.analysis.timing import median_seconds
from ficklenet.localization import sample_maps
from ficklenet.models.backbones import build_backbone
from ficklenet.models.fickle import FickleHead


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=200, help="stochastic passes N (paper: 200)")
    parser.add_argument("--size", type=int, default=321, help="image side (321 → 41×41 map)")
    parser.add_argument("--classes", type=int, default=2, help="present classes mapped")
    parser.add_argument("--kernel-size", type=int, default=9, help="s (paper: 9 [recalled])")
    parser.add_argument("--p", type=float, default=0.9, help="dropout rate (paper's best: 0.9)")
    parser.add_argument("--formula", default="grad_x_act", choices=["grad_x_act", "gradcam"])
    parser.add_argument("--chunk", type=int, default=None, help="masks per batch (None: default)")
    parser.add_argument(
        "--literal-passes",
        type=int,
        default=None,
        help="literal passes actually timed, then extrapolated to N (default: 5 on CPU, N on CUDA)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of (a) and (b); median")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    literal_passes = args.literal_passes or (args.n if device.type == "cuda" else 5)
    literal_passes = min(literal_passes, args.n)
    torch.manual_seed(0)
    backbone = build_backbone("vgg16").to(device).eval()
    head = FickleHead(backbone.out_channels, 20, kernel_size=args.kernel_size, p=args.p)
    head = head.to(device).eval()
    classes = list(range(args.classes))
    image = torch.randn(1, 3, args.size, args.size, device=device)
    gen = torch.Generator(device=device)

    # (a) backbone forward
    with torch.no_grad():
        x = backbone(image)  # also the warm-up
        t_backbone = median_seconds(lambda: backbone(image), args.repeats, device, warmup=0)

    # (b) ours: the stochastic part from the feature map
    def ours() -> None:
        gen.manual_seed(1)
        sample_maps(head, x, classes, args.n, gen, args.formula, chunk=args.chunk)

    with torch.no_grad():  # one warm-up call: one-off allocations, alias table
        t_ours = median_seconds(ours, args.repeats, device)

    # (c) literal: backbone + head forward, one backward per class, per pass
    def literal_pass(feats: torch.Tensor | None) -> None:
        if feats is None:
            with torch.no_grad():
                feats = backbone(image)
        leaf = feats.detach().requires_grad_(True)
        mask = head.sample_mask(leaf, gen)
        scores = head(leaf, mask)
        for c in classes:
            (grad,) = torch.autograd.grad(scores[0, c], leaf, retain_graph=True)
            (grad * leaf).sum(1).clamp_min(0)

    # One pass warms up (c) and (d); each is then timed once (literal_passes passes).
    literal_pass(None)
    t_literal_k = median_seconds(
        lambda: [literal_pass(None) for _ in range(literal_passes)], 1, device, warmup=0
    )
    t_literal = t_literal_k / literal_passes * args.n
    t_head_k = median_seconds(
        lambda: [literal_pass(x) for _ in range(literal_passes)], 1, device, warmup=0
    )
    t_head = t_head_k / literal_passes * args.n

    _, c, h, w = x.shape
    draws = args.n * c * (args.kernel_size**2 - 1) * h * w
    if args.formula == "grad_x_act":
        ours_draws = f"ours ≤ {draws * float(x.ne(0).float().mean()):.2e} (nonzero x only)"
    else:
        ours_draws = f"ours {args.n * c * (args.kernel_size**2 - 1):.2e} binomial counts"
    extrapolated = literal_passes < args.n
    how = f"extrapolated from {literal_passes} passes" if extrapolated else "measured"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"device={device} threads={torch.get_num_threads()} load(1 min)={load:.2f} "
        f"torch={torch.__version__}"
    )
    print(
        f"image {args.size}×{args.size} → x {c}×{h}×{w} (nonzero {x.ne(0).float().mean():.0%}), "
        f"N={args.n}, classes={len(classes)}, s={args.kernel_size}, p={args.p}"
    )
    print(f"formula={args.formula}; Bernoulli draws: literal {draws:.2e}, {ours_draws}")
    print("| step | seconds |")
    print("|---|---|")
    print(f"| (a) backbone forward | {t_backbone:.3f} |")
    print(f"| (b) ours, stochastic part (N maps, closed form) | {t_ours:.3f} |")
    print(f"| (a)+(b) ours, whole map generation | {t_backbone + t_ours:.3f} |")
    print(f"| (c) literal, N × (backbone + head fwd/bwd) [{how}] | {t_literal:.1f} |")
    print(f"| (d) literal head only, backbone once [{how}] | {t_head:.1f} |")
    ratio = t_ours / t_backbone
    speedup = t_literal / (t_backbone + t_ours)
    print(
        f"(b)/(a) = {ratio:.2f} (target ≤ 2: {'met' if ratio <= 2 else 'not met'}); "
        f"(c)/((a)+(b)) = {speedup:.0f}× (target ≥ 50×: {'met' if speedup >= 50 else 'not met'}); "
        f"(d)/(b) = {t_head / t_ours:.0f}×"
    )


if __name__ == "__main__":
    main()
