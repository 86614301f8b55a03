"""Joint image + label-map transforms for the classifier and the segmenter.

Both stages see the same augmentation as the official code (docs/method.md, "The DSRG
segmenter": random crops and horizontal flips; DeepLab-style random scaling): the image
is resized bilinearly and every label map (ground truth, seeds) with nearest
neighbour, so label values are never blended into values that do not exist.

Padding convention: the image is normalised with the ImageNet mean/std *before*
padding and padded with 0, which is exactly the mean colour (DeepLab pads with the
mean pixel for the same reason: the padding carries no signal).  Label maps are padded
with 255, which every loss and metric ignores.

All randomness comes from the ``numpy.random.Generator`` passed in, so a transform is
a pure function of its inputs and the generator state (see
:mod:`ficklenet.data.datasets` for how the generator is derived per item).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ficklenet.data.classes import IGNORE_INDEX

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EvalTransform",
    "TrainTransform",
    "denormalize",
    "denormalize_batch",
    "normalize",
]

#: torchvision's ImageNet statistics, which the pretrained VGG16 / ResNet101 expect.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def normalize(
    image: np.ndarray,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """uint8 ``(H, W, 3)`` RGB -> float32 ``(3, H, W)`` with ``(x / 255 - mean) / std``."""
    x = image.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def denormalize(
    image: torch.Tensor | np.ndarray,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """Inverse of :func:`normalize`: ``(3, H, W)`` float -> uint8 ``(H, W, 3)``.

    Handy for the dense CRF and for overlays, which want the pixels the network saw.
    """
    batch = torch.as_tensor(image).detach()[None]
    return denormalize_batch(batch, mean, std)[0].cpu().numpy()


def denormalize_batch(
    images: torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Inverse of :func:`normalize` for a batch, on its device: ``(B, 3, H, W)``
    float -> uint8 ``(B, H, W, 3)``, rounded to the nearest level and clipped to
    [0, 255] (what the dense CRF and the overlays see)."""
    x = images.detach().float().permute(0, 2, 3, 1)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device)
    sd = torch.tensor(std, dtype=torch.float32, device=x.device)
    return (x * sd + m).mul_(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        h = w = size
    else:
        h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"crop size must be positive, got {size!r}")
    return h, w


def _check_inputs(image: np.ndarray, label_maps: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape} "
            "(VOCReader.image returns this form)"
        )
    out = []
    for lab in label_maps:
        lab = np.asarray(lab)
        if lab.shape != image.shape[:2]:
            raise ValueError(f"label map shape {lab.shape} differs from image {image.shape[:2]}")
        if not np.issubdtype(lab.dtype, np.integer) and lab.dtype != np.bool_:
            raise TypeError(f"label maps must hold integer class indices, got dtype {lab.dtype}")
        if lab.dtype != np.uint8:
            if lab.size and (lab.min() < 0 or lab.max() > 255):
                raise ValueError("label map values must lie in 0..255 (255 = ignore)")
            lab = lab.astype(np.uint8)
        out.append(lab)
    return out


def _resize(image: np.ndarray, labels: list[np.ndarray], h: int, w: int):
    if image.shape[:2] == (h, w):
        return image, labels
    image = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))
    labels = [
        np.asarray(Image.fromarray(lab).resize((w, h), Image.Resampling.NEAREST)) for lab in labels
    ]
    return image, labels


def _place(arr: np.ndarray, out_h: int, out_w: int, off_y: int, off_x: int, fill) -> np.ndarray:
    """Crop and/or pad the last two axes of ``arr`` to ``(out_h, out_w)``.

    Along an axis where ``arr`` is larger, ``off`` is where the crop starts; where it is
    smaller, ``off`` is where ``arr`` lands inside the padded output.
    """
    h, w = arr.shape[-2:]
    out = np.full((*arr.shape[:-2], out_h, out_w), fill, dtype=arr.dtype)
    if h >= out_h:
        src_y, dst_y, n_y = off_y, 0, out_h
    else:
        src_y, dst_y, n_y = 0, off_y, h
    if w >= out_w:
        src_x, dst_x, n_x = off_x, 0, out_w
    else:
        src_x, dst_x, n_x = 0, off_x, w
    out[..., dst_y : dst_y + n_y, dst_x : dst_x + n_x] = arr[
        ..., src_y : src_y + n_y, src_x : src_x + n_x
    ]
    return out


def _to_tensors(image: np.ndarray, labels: list[np.ndarray]) -> tuple[torch.Tensor, ...]:
    return (
        torch.from_numpy(np.ascontiguousarray(image)),
        *(torch.from_numpy(lab.astype(np.int64)) for lab in labels),
    )


class TrainTransform:
    """Random scale -> random horizontal flip -> normalise -> random crop/pad.

    Args:
        crop_size: output ``(H, W)`` (an int for a square); images smaller than the
            crop after scaling are padded at a random position (mean colour / 255).
        scale_range: the resize factor is drawn uniformly from this range; ``None``
            or ``(1, 1)`` disables scaling.
        flip: flip horizontally with probability 1/2.
        mean, std: normalisation statistics (ImageNet by default).

    ``t(image, *label_maps, rng=rng)`` takes a uint8 ``(H, W, 3)`` image and any number of
    integer ``(H, W)`` label maps and returns ``(image float32 (3, h, w), *labels int64
    (h, w))``.  The generator is consumed in a fixed order (scale, flip, crop), so the
    same generator state gives the same output.
    """

    def __init__(
        self,
        crop_size: int | Sequence[int],
        scale_range: Sequence[float] | None = (0.7, 1.3),
        flip: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.crop_size = _pair(crop_size)
        if scale_range is not None:
            lo, hi = (float(s) for s in scale_range)
            if not 0 < lo <= hi:
                raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
            scale_range = (lo, hi)
        self.scale_range = scale_range
        self.flip = flip
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __repr__(self) -> str:
        return (
            f"TrainTransform(crop_size={self.crop_size}, scale_range={self.scale_range}, "
            f"flip={self.flip})"
        )

    def __call__(
        self, image: np.ndarray, *label_maps: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, ...]:
        labels = _check_inputs(image, label_maps)
        h, w = image.shape[:2]
        if self.scale_range is not None:
            scale = rng.uniform(*self.scale_range)
            image, labels = _resize(
                image, labels, max(1, round(h * scale)), max(1, round(w * scale))
            )
        if self.flip and rng.random() < 0.5:
            image = image[:, ::-1]
            labels = [lab[:, ::-1] for lab in labels]
        x = normalize(image, self.mean, self.std)
        ch, cw = self.crop_size
        h, w = x.shape[-2:]
        off_y = int(rng.integers(0, abs(h - ch) + 1))
        off_x = int(rng.integers(0, abs(w - cw) + 1))
        x = _place(x, ch, cw, off_y, off_x, 0.0)
        labels = [_place(lab, ch, cw, off_y, off_x, IGNORE_INDEX) for lab in labels]
        return _to_tensors(x, labels)


class EvalTransform:
    """Deterministic: normalise, then (optionally) centre pad/crop.

    Args:
        crop_size: ``None`` keeps the full image (batch size 1 or a collate that pads);
            an int or ``(H, W)`` centre-pads/crops every image to that size so a batch
            stacks (padding as in :class:`TrainTransform`: mean colour, labels 255).
        mean, std: normalisation statistics (ImageNet by default).

    Called like :class:`TrainTransform`; ``rng`` is accepted and ignored.
    """

    def __init__(
        self,
        crop_size: int | Sequence[int] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.crop_size = None if crop_size is None else _pair(crop_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __repr__(self) -> str:
        return f"EvalTransform(crop_size={self.crop_size})"

    def __call__(
        self,
        image: np.ndarray,
        *label_maps: np.ndarray,
        rng: np.random.Generator | None = None,
    ) -> tuple[torch.Tensor, ...]:
        labels = _check_inputs(image, label_maps)
        x = normalize(image, self.mean, self.std)
        if self.crop_size is not None:
            ch, cw = self.crop_size
            h, w = x.shape[-2:]
            off_y, off_x = abs(h - ch) // 2, abs(w - cw) // 2
            x = _place(x, ch, cw, off_y, off_x, 0.0)
            labels = [_place(lab, ch, cw, off_y, off_x, IGNORE_INDEX) for lab in labels]
        return _to_tensors(x, labels)
