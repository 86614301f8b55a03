"""DSRG's training losses: balanced seeding loss and boundary loss.

Huang et al., "Deep Seeded Region Growing", CVPR 2018, Sec. 3.1 (seeding loss,
Eq. 1) and Sec. 3.3 (boundary loss, Eq. 4); the official release implements
them as ``SeedLossLayer3`` and ``ConstrainLossLayer`` in ``pylayers/pylayers.py``.
The network's softmax there is ``SoftmaxLayer``: softmax plus 1e-4, renormalised
(:func:`floored_softmax`), so that no log-probability is below about log 1e-4.

Balanced seeding loss. With ``S_bg`` the background seeds and ``S_fg`` the
foreground seeds (all classes) of one image, the image's loss is

    −Σ_{u∈S_bg} log p_{u,0} / |S_bg|  −  Σ_{c≥1} Σ_{u∈S_c} log p_{u,c} / |S_fg|

and the batch loss is the mean of each term over the images of the batch.
Reading for an image with no background (or no foreground) seeds: as in
``SeedLossLayer3``, which divides by ``max(count, 1e-4)``, such an image
contributes 0 to that term and still counts in the batch mean (the mean is over
all B images, not over the images that have such seeds).

Boundary loss: ``mean_{b,u} Σ_c Q_{u,c} log clip(Q_{u,c} / p_{u,c}, 0.05, 20)``,
the KL divergence from the network's output ``p`` to its dense-CRF refinement
``Q``, with the ratio clipped as in ``ConstrainLossLayer``. ``Q`` is treated as a
constant here (detached), as the paper writes it; the official Caffe graph also
passed a heuristic gradient ``(1 − Q)·∂L/∂log Q`` back through its CRF layer,
which is not reproduced.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ficklenet.data.classes import IGNORE_INDEX


def floored_softmax(logits: Tensor, min_prob: float = 1e-4, dim: int = 1) -> Tensor:
    """Softmax plus ``min_prob``, renormalised (the official ``SoftmaxLayer``)."""
    probs = torch.softmax(logits, dim=dim) + min_prob
    return probs / probs.sum(dim=dim, keepdim=True)


def balanced_seed_loss(
    log_probs: Tensor, seeds: Tensor, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """DSRG's balanced seeding loss.

    Args:
        log_probs: (B, K+1, h, w) log-probabilities at the output resolution
            (channel 0 = background), e.g. ``log_softmax`` of the logits or the
            log of :func:`floored_softmax`.
        seeds: (B, h, w) int64 seed labels in [0, K], ``ignore_index`` = unlabelled.
        ignore_index: the unlabelled value.

    Returns:
        Scalar: mean over the batch of the background term plus mean over the
        batch of the foreground term (module docstring; images without seeds of
        a kind contribute 0 to that term).
    """
    if log_probs.ndim != 4 or seeds.shape != (log_probs.shape[0], *log_probs.shape[2:]):
        raise ValueError(
            f"need log_probs (B, K+1, h, w) and seeds (B, h, w), got "
            f"{tuple(log_probs.shape)} and {tuple(seeds.shape)}"
        )
    seeds = seeds.to(device=log_probs.device, dtype=torch.long)
    labelled = seeds != ignore_index
    index = torch.where(labelled, seeds, torch.zeros_like(seeds))
    seed_log_prob = log_probs.gather(1, index.unsqueeze(1)).squeeze(1)  # (B, h, w)
    background = labelled & (seeds == 0)
    foreground = labelled & (seeds != 0)
    zero = seed_log_prob.new_zeros(())

    def term(mask: Tensor) -> Tensor:
        total = torch.where(mask, seed_log_prob, zero).sum(dim=(1, 2))
        count = mask.sum(dim=(1, 2)).clamp(min=1).to(total.dtype)
        return -(total / count).mean()

    return term(background) + term(foreground)


def boundary_loss(
    probs: Tensor, crf_probs: Tensor, min_ratio: float = 0.05, max_ratio: float = 20.0
) -> Tensor:
    """DSRG's boundary (constrain-to-boundary) loss.

    Args:
        probs: (B, K+1, h, w) the network's probabilities.
        crf_probs: (B, K+1, h, w) ``Q``, the dense-CRF refinement of ``probs``;
            detached here, so no gradient flows into it.
        min_ratio, max_ratio: the clip on ``Q / p`` (official: 0.05 and 20).

    Returns:
        Scalar ``mean_{b,u} Σ_c Q log clip(Q / p, min_ratio, max_ratio)``.
    """
    if probs.shape != crf_probs.shape:
        raise ValueError(f"shapes differ: {tuple(probs.shape)} vs {tuple(crf_probs.shape)}")
    q = crf_probs.detach().to(device=probs.device, dtype=probs.dtype)
    ratio = (q / probs).clamp(min_ratio, max_ratio)
    return (q * torch.log(ratio)).sum(dim=1).mean()
