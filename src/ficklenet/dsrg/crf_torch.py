"""The training CRF's mean field in torch, on the training device, with exact kernels.

The model is the one :mod:`ficklenet.dsrg.crf` builds in pydensecrf (Krähenbühl &
Koltun, NIPS 2011; DSRG's ``CRFLayer`` in the official release): a unary energy U
from the probabilities, Potts compatibilities, and two kernels, a Gaussian on
position (σxy, weight w_g) and a bilateral on position and colour (σxy, σrgb, weight
w_b). Each kernel matrix K is normalised symmetrically, D^-1/2 K D^-1/2 with D its
row sums (the self term included), as pydensecrf's default ``NORMALIZE_SYMMETRIC``
does. Mean field starts from Q = softmax(-U) and repeats
``Q = softmax(-U + w_g K̃_g Q + w_b K̃_b Q)``.

pydensecrf filters with the permutohedral lattice, an approximation of the Gaussian
sums; here the kernels are dense matrices, so the sums are exact, and the two
implementations differ by the lattice's error (label agreement of 93–98 % on noisy
reference cases, more on clean ones; ``tests/test_crf_torch.py``). Dense kernels
cost memory quadratic in the number of cells, which suits the training CRF on
DeepLab's output map (41×41 = 1,681 cells on VOC: two 11 MB kernels per image) and
not the test-time CRF on full images, which stays with pydensecrf
(``segmenter.crf_backend`` picks the training CRF's implementation). Maps of more
than :data:`MAX_CELLS` cells are refused.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ficklenet.choices import Unary
from ficklenet.dsrg.crf import TRAIN_CRF, CRFParams, kernel_scale

#: Largest map (h·w cells) the dense kernels are built for: 64×64, 4,096 cells,
#: 67 MB per kernel per image in float32.
MAX_CELLS = 64 * 64


def _normalised(kernel: Tensor) -> Tensor:
    """D^-1/2 K D^-1/2 over the last two dimensions."""
    scale = torch.rsqrt(kernel.sum(-1) + 1e-20)
    return scale.unsqueeze(-1) * kernel * scale.unsqueeze(-2)


def dense_crf_torch(images: Tensor, probs: Tensor, params: CRFParams = TRAIN_CRF) -> Tensor:
    """Dense-CRF marginals of a batch, on ``probs``' device.

    Args:
        images: (B, h, w, 3) colours in [0, 255] (uint8 or float), any device.
        probs: (B, K, h, w) probabilities summing to 1 over K.
        params: the CRF (:data:`~ficklenet.dsrg.crf.TRAIN_CRF` by default); its σxy
            scale with the map as in :func:`~ficklenet.dsrg.crf.dense_crf`.

    Returns:
        Q, float32 (B, K, h, w), the mean-field marginals. The whole mean field runs
        in float32, also inside an autocast region (long kernel sums).
    """
    with torch.autocast(probs.device.type, enabled=False):
        return _mean_field(images, probs, params)


def _mean_field(images: Tensor, probs: Tensor, params: CRFParams) -> Tensor:
    if images.dim() != 4 or images.shape[-1] != 3 or probs.dim() != 4:
        raise ValueError(
            f"need images (B, h, w, 3) and probs (B, K, h, w), got "
            f"{tuple(images.shape)} and {tuple(probs.shape)}"
        )
    b, k, h, w = probs.shape
    if tuple(images.shape[:3]) != (b, h, w):
        raise ValueError(f"images {tuple(images.shape)} do not match probs {tuple(probs.shape)}")
    if h * w > MAX_CELLS:
        raise ValueError(
            f"segmenter.crf_backend=torch builds dense kernels and takes maps of at most "
            f"{MAX_CELLS} cells; this map is {h}×{w}. Use segmenter.crf_backend=pydensecrf."
        )
    device = probs.device
    p = probs.detach().float().clamp_min(params.min_prob).reshape(b, k, h * w)
    unary = -torch.log(p) if Unary.parse(params.unary, "unary") == Unary.neg_log_prob else -p
    factor = kernel_scale(params, h, w)

    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    pos = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)
    dist2 = (pos[:, None, :] - pos[None, :, :]).square().sum(-1)  # (N, N)
    rgb = images.to(device=device, dtype=torch.float32).reshape(b, h * w, 3)
    colour2 = torch.zeros(b, h * w, h * w, device=device)
    for channel in range(3):  # (B, N, N) without a (B, N, N, 3) intermediate
        values = rgb[:, :, channel]
        colour2 += (values[:, :, None] - values[:, None, :]).square()
    gauss = _normalised(torch.exp(-dist2 / (2 * (params.gauss_sxy * factor) ** 2)))
    bilateral = _normalised(
        torch.exp(
            -dist2 / (2 * (params.bilateral_sxy * factor) ** 2)
            - colour2 / (2 * params.bilateral_srgb**2)
        )
    )
    del colour2

    q = torch.softmax(-unary, dim=1)
    for _ in range(params.iterations):
        # The kernels are symmetric: Q K̃ sums over the other cells for every cell.
        message = params.gauss_compat * (q @ gauss) + params.bilateral_compat * torch.bmm(
            q, bilateral
        )
        q = torch.softmax(-unary + message, dim=1)
    if params.out_min_prob is not None:
        q = q.clamp_min(params.out_min_prob)
        q = q / q.sum(1, keepdim=True)
    return q.reshape(b, k, h, w)


__all__ = ["MAX_CELLS", "dense_crf_torch"]
