"""Feature grid ↔ image geometry (ficklenet.geometry) on every path that uses it.

Convention: a network of output stride r puts cell i on input pixel r·i. The checks:
a single hot cell lands on the pixel it describes after every scale and flip; a
linear ramp sampled on the grid comes back unchanged through localization's and
evaluation's multi-scale paths; seeds made from perfect maps are near perfect.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ficklenet.data.voc import VOCReader
from ficklenet.geometry import grid_to_image, image_to_grid, resize, scaled_size
from ficklenet.inference import predict_probs
from ficklenet.localization import combine_scales, make_seeds
from ficklenet.metrics import (
    confusion_counts,
    miou_from_confusion,
    seed_counts,
    seed_scores_from_counts,
)

STRIDE = 8


def expected_position(cell: int, stride: int, image: int, scaled: int, flipped: bool) -> float:
    """Continuous image coordinate of a cell computed on the resized (and flipped)
    image: pixel r·i of the input, unflipped, then the resize's inverse map
    (pixel centres scale: y' + 0.5 = (y + 0.5)·scaled/image)."""
    y = stride * cell
    if flipped:
        y = scaled - 1 - y
    return (y + 0.5) * image / scaled - 0.5


@pytest.mark.parametrize("scale", [0.5, 0.75, 1.0, 1.25, 1.5])
@pytest.mark.parametrize("flipped", [False, True])
def test_a_hot_cell_lands_on_its_pixel(scale: float, flipped: bool) -> None:
    size = (97, 113)
    input_size = scaled_size(size, scale)
    grid = (-(-input_size[0] // STRIDE), -(-input_size[1] // STRIDE))
    for i, j in [(0, 0), (2, 5), (grid[0] - 2, grid[1] - 2)]:
        maps = torch.zeros(1, *grid)
        maps[0, i, j] = 1.0
        out = grid_to_image(maps, size, STRIDE, input_size=input_size, flipped=flipped)[0]
        assert out.shape == size
        y, x = divmod(int(out.argmax()), size[1])
        ey = expected_position(i, STRIDE, size[0], input_size[0], False)
        ex = expected_position(j, STRIDE, size[1], input_size[1], flipped)
        # Bilinear interpolation peaks within a pixel of the cell's position (at the
        # border the resize clamps, so the nearest pixel may tie with its neighbour).
        assert abs(y - ey) <= 1 and abs(x - ex) <= 1, (i, j, y, x, ey, ex)


def test_grid_and_image_round_trip_at_stride_multiples() -> None:
    # Output pixel i sits on input pixel 8i: a 321 crop gives 41x41 and back.
    x = torch.arange(321.0)[None, None, None, :].expand(1, 1, 321, 321)
    grid = image_to_grid(x, (41, 41), STRIDE)
    assert torch.equal(grid[0, 0, 0], torch.arange(0, 321, 8.0))
    torch.testing.assert_close(grid_to_image(grid, (321, 321), STRIDE), x)


def ramp(size: tuple[int, int]) -> torch.Tensor:
    """(2, H, W): channel 0 rises along x, channel 1 along y."""
    h, w = size
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    return torch.stack([xs / w, ys / h])


def interior(t: torch.Tensor, margin: int) -> torch.Tensor:
    return t[..., margin:-margin, margin:-margin]


def test_localization_scales_and_flips_keep_a_ramp_in_place() -> None:
    size = (90, 110)
    truth = ramp(size)
    maps, sizes, flips = [], [], []
    for scale in (0.75, 1.0, 1.25):
        input_size = scaled_size(size, scale)
        scaled = resize(truth, input_size)
        grid = (-(-input_size[0] // STRIDE), -(-input_size[1] // STRIDE))
        for flipped in (False, True):
            seen = scaled.flip(-1) if flipped else scaled
            maps.append(image_to_grid(seen, grid, STRIDE))
            sizes.append(input_size)
            flips.append(flipped)
    out = combine_scales(maps, size, STRIDE, sizes, flips, how="mean")
    # Bilinear paths reproduce a linear function exactly away from the borders
    # (where grid cells stop and the edge is extended).
    torch.testing.assert_close(interior(out, 12), interior(truth, 12), atol=1e-5, rtol=0)


class _GridSampler(torch.nn.Module):
    """A 'network' of output stride 8 whose logits are its input sampled on the grid."""

    output_stride = STRIDE

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        return image_to_grid(images, (-(-h // STRIDE), -(-w // STRIDE)), STRIDE)


def test_evaluation_scales_and_flips_keep_logits_in_place() -> None:
    size = (90, 110)
    logits = ramp(size)[None] * 4  # (1, 2, H, W)
    probs = predict_probs(_GridSampler(), logits, scales=[0.75, 1.0, 1.25], flip=True)
    # Six passes of the same logits summed: softmax(6 · logits).
    expected = torch.softmax(6 * logits, dim=1)
    torch.testing.assert_close(interior(probs, 12), interior(expected, 12), atol=1e-4, rtol=0)


@pytest.mark.parametrize("scale", [1.0, 1.5])
@pytest.mark.parametrize("flipped", [False, True])
def test_seeds_from_perfect_maps_are_near_perfect(toy_root, scale, flipped) -> None:
    """Maps that are the ground truth sampled on the grid of one pass (a resized,
    maybe flipped image) give seeds that match the ground truth on nearly every
    labelled pixel (64-pixel toy images, 8×8 grids at scale 1: 0.95 here, 0.71 with
    the maps resized as plain images)."""
    reader = VOCReader(toy_root, "train")
    cm = torch.zeros(21, 21, dtype=torch.long)
    counts = np.zeros(3, np.int64)
    for image_id in reader.ids:
        mask = reader.mask(image_id)
        classes = [int(c) for c in reader.labels(image_id)]
        onehot = torch.from_numpy(np.stack([mask == c for c in classes]).astype(np.float32))
        input_size = scaled_size(mask.shape, scale, minimum=8)
        seen = resize(onehot, input_size)
        seen = seen.flip(-1) if flipped else seen
        grid = (-(-input_size[0] // STRIDE), -(-input_size[1] // STRIDE))
        maps = [image_to_grid(seen, grid, STRIDE)]
        combined = combine_scales(maps, mask.shape, STRIDE, [input_size], [flipped])
        seeds = make_seeds(combined, classes, fg_threshold=0.6, bg_threshold=0.05)
        cm += confusion_counts(torch.from_numpy(seeds), torch.from_numpy(mask.copy()), 21)
        counts += seed_counts(seeds, mask)
    miou, _ = miou_from_confusion(cm)
    scores = seed_scores_from_counts(counts)
    assert miou >= 0.93, miou
    assert scores.precision >= 0.99 and scores.labelled >= 0.85, scores
