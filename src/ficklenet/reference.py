"""Literal, slow implementations of the project's contracts, for tests and benchmarks.

Each follows its definition word for word, with none of the production code's
shortcuts, so the fast versions can be checked against them:

- :func:`fickle_head_literal`: FickleNet's head through the materialised feature map
  expansion (``docs/design.md``, "Contracts"), against
  :class:`~ficklenet.models.fickle.FickleHead`'s expansion-free autograd function;
- :func:`grow_reference`: DSRG's seeded region growing (``docs/method.md``, "One
  training step") as a per-image flood fill, against the batched
  :func:`~ficklenet.dsrg.growing.grow`.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ficklenet.data.classes import IGNORE_INDEX
from ficklenet.models.fickle import FickleHead

__all__ = ["fickle_head_literal", "grow_reference"]


def fickle_head_literal(head: FickleHead, x: Tensor, mask: Tensor | None = None) -> Tensor:
    """``GAP(conv_{s×s, stride s}(t ⊙ mask ⊙ expand(x)))`` with the expansion built.

    ``mask`` is the keep-mask in the expanded layout (None: the expectation, every
    off-centre tap weighing 1); the centre of every block is always kept and weighs
    1/(1-p) or 1 as ``head.scale_centre`` says. Memory grows with s².
    """
    s, r = head.kernel_size, head.kernel_size // 2
    e = head.expand(x)
    scale = torch.ones_like(e[:1])
    if mask is not None:
        keep = mask.clone()
        keep[:, :, r::s, r::s] = True
        e = e * keep
        scale /= 1.0 - head.p
    scale[:, :, r::s, r::s] = 1.0 / (1.0 - head.p) if head.scale_centre else 1.0
    out = F.conv2d(e * scale, head.classifier.weight, head.classifier.bias, stride=s)
    return out.mean(dim=(2, 3))


def grow_reference(
    probs: np.ndarray | Tensor,
    seeds: np.ndarray | Tensor,
    present: np.ndarray | Tensor,
    fg_thresh: float = 0.85,
    bg_thresh: float = 0.99,
) -> np.ndarray:
    """The same rule as :func:`grow`, written plainly: per image, per pixel, BFS.

    Slow; meant for tests and benchmarks. Accepts numpy arrays or tensors and
    returns a numpy int64 array (B, h, w).
    """
    probs = _as_numpy(probs)
    seeds = _as_numpy(seeds).astype(np.int64)
    present = _as_numpy(present).astype(bool)
    batch, _, height, width = probs.shape
    out = seeds.copy()
    for i in range(batch):
        classes = [c for c in range(probs.shape[1]) if c == 0 or present[i, c]]

        label_map = seeds[i].copy()
        for y in range(height):
            for x in range(width):
                best = max(classes, key=lambda c, y=y, x=x: probs[i, c, y, x])
                value = probs[i, best, y, x]
                threshold = bg_thresh if best == 0 else fg_thresh
                if value > threshold:
                    label_map[y, x] = best

        for c in classes:
            visited = np.zeros((height, width), dtype=bool)
            queue = deque(
                (y, x)
                for y in range(height)
                for x in range(width)
                if seeds[i, y, x] == c and label_map[y, x] == c
            )
            for y, x in queue:
                visited[y, x] = True
            while queue:
                y, x = queue.popleft()
                if seeds[i, y, x] == IGNORE_INDEX:
                    out[i, y, x] = c
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = y + dy, x + dx
                        if (
                            0 <= ny < height
                            and 0 <= nx < width
                            and not visited[ny, nx]
                            and label_map[ny, nx] == c
                        ):
                            visited[ny, nx] = True
                            queue.append((ny, nx))
    return out


def _as_numpy(x: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)
