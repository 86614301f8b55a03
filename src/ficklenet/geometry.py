"""Where the cells of a feature grid sit on the image, and moving maps between the two.

Every backbone here follows DeepLab's convention (Chen et al., TPAMI 2018; the
official DSRG test script relies on it): a network of output stride ``r`` puts
feature cell ``(i, j)`` on input pixel ``(r·i, r·j)``, so a 321-pixel crop gives a
41-cell grid whose last cell sits on pixel 320. Two things follow:

- a map on the grid reaches the input by bilinear interpolation with
  ``align_corners=True`` onto ``r·(h-1)+1`` pixels, then a crop or an edge
  extension to the input's size (:func:`grid_to_image`);
- labels or images reach the grid by sampling pixel ``r·i`` (:func:`image_to_grid`).

When the input was the image resized (multi-scale inference) and/or flipped, the map
is first brought to that input, then flipped back, then resized to the image the
way the image itself was resized (:func:`resize`, ``align_corners=False``), which
inverts it. Localization (every scale and flip), the classifier's CAM panels, DSRG
training and evaluation all go through these functions, so a map and the image it
describes never drift apart by part of a cell. ``docs/design.md`` ("Geometry")
explains the choice.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["grid_to_image", "image_to_grid", "resize", "scaled_size"]


def scaled_size(size: Sequence[int], scale: float, minimum: int = 1) -> tuple[int, int]:
    """``size`` (H, W) times ``scale``, rounded, at least ``minimum`` pixels a side."""
    h, w = (int(s) for s in size)
    return max(minimum, round(h * scale)), max(minimum, round(w * scale))


def resize(x: Tensor, size: Sequence[int], mode: str = "bilinear") -> Tensor:
    """Resize the last two axes of ``x`` (any leading axes) to ``size``.

    ``bilinear`` uses ``align_corners=False`` (pixel centres scale with the size),
    the resize applied to images for multi-scale inference; ``nearest`` picks the
    pixel whose centre is nearest under the same mapping (``nearest-exact``).
    """
    size = tuple(int(s) for s in size)
    if tuple(x.shape[-2:]) == size:
        return x
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, *x.shape[-2:])
    if mode == "bilinear":
        out = F.interpolate(flat.float(), size=size, mode="bilinear", align_corners=False)
        out = out.to(x.dtype) if x.is_floating_point() else out
    elif mode == "nearest":
        out = F.interpolate(flat.float(), size=size, mode="nearest-exact").to(x.dtype)
    else:
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    return out.reshape(*lead, *size)


def grid_to_image(
    maps: Tensor,
    size: Sequence[int],
    stride: int,
    input_size: Sequence[int] | None = None,
    flipped: bool = False,
    mode: str = "bilinear",
) -> Tensor:
    """Bring ``maps`` (..., h, w) on a feature grid to the image, (..., H, W) = ``size``.

    Args:
        maps: scores, logits or labels on the grid of the network's input.
        size: the image's (H, W).
        stride: the network's output stride ``r`` (cell ``i`` on input pixel ``r·i``).
        input_size: the (H', W') of the input the network saw, when it was the image
            resized (default: ``size``).
        flipped: the input was the horizontally flipped (resized) image.
        mode: ``bilinear`` for scores, ``nearest`` for labels (input pixel ``y`` takes
            cell ``round(y / r)``).
    """
    input_size = tuple(int(s) for s in (input_size or size))
    out = _grid_to_input(maps, input_size, int(stride), mode)
    if flipped:
        out = out.flip(-1)
    return resize(out, size, mode)


def _grid_to_input(maps: Tensor, input_size: tuple[int, int], stride: int, mode: str) -> Tensor:
    height, width = input_size
    h, w = maps.shape[-2:]
    if mode == "nearest":
        ys = torch.div(
            torch.arange(height, device=maps.device) + stride // 2, stride, rounding_mode="floor"
        ).clamp(max=h - 1)
        xs = torch.div(
            torch.arange(width, device=maps.device) + stride // 2, stride, rounding_mode="floor"
        ).clamp(max=w - 1)
        return maps[..., ys[:, None], xs[None, :]]
    if mode != "bilinear":
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    full = (stride * (h - 1) + 1, stride * (w - 1) + 1)
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, h, w)
    dtype = maps.dtype if maps.is_floating_point() else torch.float32
    out = F.interpolate(flat.to(dtype), size=full, mode="bilinear", align_corners=True)
    out = out[..., : min(height, full[0]), : min(width, full[1])]
    pad_h, pad_w = height - out.shape[-2], width - out.shape[-1]
    if pad_h > 0 or pad_w > 0:
        out = F.pad(out, (0, max(pad_w, 0), 0, max(pad_h, 0)), mode="replicate")
    return out.reshape(*lead, height, width)


def image_to_grid(x: Tensor, grid_size: Sequence[int], stride: int) -> Tensor:
    """Sample the last two axes of ``x`` at the pixels ``stride·i`` the grid's cells
    sit on, giving ``grid_size`` (h, w). Nearest sampling, so label values never mix;
    for 321 → 41 at stride 8 this is what the official ``ndimage.zoom(order=1)`` of
    the image gives (integer positions)."""
    h, w = (int(s) for s in grid_size)
    height, width = x.shape[-2:]
    ys = (torch.arange(h, device=x.device) * stride).clamp(max=height - 1)
    xs = (torch.arange(w, device=x.device) * stride).clamp(max=width - 1)
    return x[..., ys[:, None], xs[None, :]]
