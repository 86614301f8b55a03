"""Seeded region growing, DSRG's seed-update step (Huang et al., CVPR 2018, Sec. 3.2).

Every training step DSRG grows the *original* localization seeds into the pixels
that the segmentation network (after a dense CRF) labels with high confidence.
The rule below is the one of the official release (``UpdateSeedLayer3`` →
``generate_seed_step`` in ``pylayers/pylayers.py``, called with ``th1: 0.99``,
``th2: 0.85`` in ``train-s.prototxt``):

1. Per pixel, ``c*`` = argmax of the refined probabilities ``Q`` over the classes
   present in the image (background always present) and ``v`` its value.
2. A label map starts as the original seeds (255 = unlabelled); a pixel is then
   relabelled ``c*`` when ``c*`` is a foreground class and ``v > fg_thresh``
   (0.85), or when ``c*`` is background and ``v > bg_thresh`` (0.99). A seed pixel
   the network confidently assigns to another class is thus relabelled in this
   map (it then joins that class's regions, see 4.).
3. For every present class ``c``, each 8-connected component of
   ``label_map == c`` that contains an original seed of ``c`` (a pixel with
   ``seeds == c`` still labelled ``c`` in the map) grows: its pixels are labelled
   ``c``.
4. Pixels that were seeded keep their original label whatever the growth (the
   official layer marks them ``-1`` before copying components back), but they
   still connect regions; original seeds of absent classes stay as they are.

Because the label map starts from the seeds, a seed pixel is the starting point
of growth even where the network is not yet confident about it — "region
growing from the seeds" as the paper describes it: a confident region touching
a seed (8-neighbourhood) grows, a confident region touching none does not.

:func:`grow` does this for a whole batch on the tensor's device. Connected
components are found by propagating reachability from the seed pixels with a
3×3 binary dilation (the same as 3×3 max pooling: a 3×3 window is exactly the
8-neighbourhood), masked to the class region, until nothing changes — no Python
loop over pixels; the number of steps is the longest path from a seed inside a
region (about 10–20 on 41×41 maps). Only the
classes present in each image are propagated (the per-image present classes
are packed into the first channels), so the cost follows the number of present
classes, not the size of the label set. :func:`ficklenet.reference.grow_reference` is a plain
per-image flood fill used by the tests and the benchmark.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ficklenet.data.classes import IGNORE_INDEX

# Steps of propagation between two convergence checks: a check synchronises a CUDA
# stream, and extra steps after convergence change nothing.
_STEPS_PER_CHECK = 4


def _dilate(mask: Tensor) -> Tensor:
    """3×3 binary dilation of a bool (..., h, w) tensor: a pixel becomes true when it
    or one of its 8 neighbours is. Separable (rows, then columns) ORs of shifted
    copies; on a CPU this is an order of magnitude faster than ``max_pool2d`` on floats."""
    rows = mask.clone()
    rows[..., 1:] |= mask[..., :-1]
    rows[..., :-1] |= mask[..., 1:]
    out = rows.clone()
    out[..., 1:, :] |= rows[..., :-1, :]
    out[..., :-1, :] |= rows[..., 1:, :]
    return out


def _check_inputs(probs: Tensor, seeds: Tensor, present: Tensor) -> None:
    if probs.ndim != 4:
        raise ValueError(f"probs must be (B, K+1, h, w), got shape {tuple(probs.shape)}")
    b, k, h, w = probs.shape
    if tuple(seeds.shape) != (b, h, w):
        raise ValueError(f"seeds must be (B, h, w) = {(b, h, w)}, got {tuple(seeds.shape)}")
    if tuple(present.shape) != (b, k):
        raise ValueError(f"present must be (B, K+1) = {(b, k)}, got {tuple(present.shape)}")


@torch.no_grad()
def grow(
    probs: Tensor,
    seeds: Tensor,
    present: Tensor,
    fg_thresh: float = 0.85,
    bg_thresh: float = 0.99,
) -> Tensor:
    """Grow the original seeds into confidently predicted, connected regions.

    Args:
        probs: (B, K+1, h, w) class probabilities, already refined by the dense
            CRF; channel 0 is background.
        seeds: (B, h, w) int64 original seeds, ``255`` = unlabelled.
        present: (B, K+1) bool, the classes in each image; background (index 0)
            is always treated as present.
        fg_thresh: a pixel whose best present class is foreground is labelled
            when its probability exceeds this (DSRG: 0.85).
        bg_thresh: likewise for background (DSRG: 0.99).

    Returns:
        (B, h, w) int64 grown seeds on ``probs``' device: the original seeds plus
        every pixel of an 8-connected confident region that touches a seed of
        its class (module docstring gives the exact rule). Ties in the argmax go
        to the lower class index.
    """
    _check_inputs(probs, seeds, present)
    b, _, h, w = probs.shape
    device = probs.device
    seeds = seeds.to(device=device, dtype=torch.long)
    present = present.to(device=device, dtype=torch.bool).clone()
    present[:, 0] = True

    masked = probs.masked_fill(~present[:, :, None, None], float("-inf"))
    value, best = masked.max(dim=1)
    confident = torch.where(best == 0, value > bg_thresh, value > fg_thresh)
    label_map = torch.where(confident, best, seeds)

    # Pack each image's present classes into the first `n` channels (stable sort
    # keeps them in increasing class order); channels past an image's count are
    # padding and never match (class id -1).
    n = int(present.sum(dim=1).max())
    order = torch.argsort((~present).to(torch.uint8), dim=1, stable=True)[:, :n]
    valid = torch.gather(present, 1, order)
    classes = torch.where(valid, order, torch.full_like(order, -1))  # (B, n)

    region = label_map[:, None] == classes[:, :, None, None]  # (B, n, h, w)
    reached = region & (seeds[:, None] == classes[:, :, None, None])
    while True:
        before = reached
        for _ in range(_STEPS_PER_CHECK):
            reached = _dilate(reached) & region
        if torch.equal(reached, before):
            break

    # Regions of different classes are disjoint (one label per pixel), so a pixel
    # is reached by at most one channel.
    grown_any = reached.any(dim=1)
    channel = reached.to(torch.uint8).argmax(dim=1)
    grown_class = torch.gather(classes, 1, channel.flatten(1)).view(b, h, w)
    grown = torch.where(grown_any, grown_class, torch.full_like(seeds, IGNORE_INDEX))
    return torch.where(seeds != IGNORE_INDEX, seeds, grown)
