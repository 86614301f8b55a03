"""Aggregating FickleNet's N stochastic localization maps, and maps across scales.

FickleNet (Lee et al., CVPR 2019, Sec. 3.3) normalises each of the N maps of a
class by its own maximum and takes their union, i.e. the pixel-wise maximum;
the mean is offered for comparison (``docs/method.md``, "Localization maps and
seeds"). At test time maps may also be computed at several image scales and on
the flipped image; :func:`combine_scales` brings those (already aggregated per
scale by the caller) to the image with :func:`ficklenet.geometry.grid_to_image`
and combines them.

Every function is pure: tensors in, new tensors out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ficklenet.choices import Aggregate
from ficklenet.geometry import grid_to_image

AGGREGATES: tuple[str, ...] = tuple(Aggregate.names())

__all__ = ["AGGREGATES", "Aggregate", "combine_maps", "combine_scales", "normalize_maps"]


def normalize_maps(maps: Tensor) -> Tensor:
    """Each map (last two dimensions) divided by its own maximum.

    Maps are expected non-negative (after ReLU); a map whose maximum is not
    positive (all zero) is returned as zeros rather than divided by zero.
    """
    peak = maps.amax(dim=(-2, -1), keepdim=True)
    safe = torch.where(peak > 0, peak, torch.ones_like(peak))
    return torch.where(peak > 0, maps / safe, torch.zeros_like(maps))


def combine_maps(maps: Tensor, how: Aggregate = "max", dim: int = 0) -> Tensor:
    """Combine maps along ``dim`` by their pixel-wise ``max`` (union) or ``mean``."""
    _check(how)
    return maps.amax(dim=dim) if how == "max" else maps.mean(dim=dim)


def combine_scales(
    maps: Sequence[Tensor],
    size: tuple[int, int],
    stride: int,
    input_sizes: Sequence[tuple[int, int]] | None = None,
    flipped: Sequence[bool] | None = None,
    how: Aggregate = "max",
) -> Tensor:
    """Maps of several scales (and flips) brought to the image and combined.

    Args:
        maps: one (K, h_i, w_i) feature-grid map per pass, each already aggregated
            over its N stochastic maps; the classes (K) are the same for every pass.
        size: (H, W) of the image.
        stride: the backbone's output stride (cell ``i`` on input pixel ``stride·i``).
        input_sizes: for each pass, the (H', W') of the resized image it ran on
            (default: ``size``).
        flipped: for each pass, whether it ran on the horizontally flipped image.
        how: ``max`` or ``mean`` over the passes.

    Each map goes through :func:`ficklenet.geometry.grid_to_image`, so a cell lands on
    the image pixel it describes whatever the scale and flip.

    Returns:
        (K, H, W). Not renormalised: seeds (:func:`~ficklenet.localization.seeds.make_seeds`)
        threshold relative to each class's maximum.
    """
    _check(how)
    if not maps:
        raise ValueError("combine_scales needs at least one map")
    flipped = list(flipped) if flipped is not None else [False] * len(maps)
    input_sizes = list(input_sizes) if input_sizes is not None else [tuple(size)] * len(maps)
    if not len(flipped) == len(input_sizes) == len(maps):
        raise ValueError(
            f"{len(maps)} maps but {len(input_sizes)} input sizes and {len(flipped)} flip flags"
        )
    resized = []
    for m, input_size, flip in zip(maps, input_sizes, flipped, strict=True):
        if m.dim() != 3:
            raise ValueError(f"each map must be (K, h, w), got {tuple(m.shape)}")
        resized.append(grid_to_image(m, size, stride, input_size=input_size, flipped=flip))
    return combine_maps(torch.stack(resized), how)


def _check(how: str) -> None:
    Aggregate.parse(how, "aggregation")
