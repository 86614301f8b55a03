"""Seeded region growing (ficklenet.dsrg.growing) against hand-worked cases and a BFS."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ficklenet.data.classes import IGNORE_INDEX as U
from ficklenet.dsrg.growing import grow
from ficklenet.reference import grow_reference
from tests.conftest import gpu_only

# (background, class 1, class 2, class 3); class 2 is absent from the image.
DEFAULT = (0.5, 0.2, 0.1, 0.2)  # nothing confident
C1 = {
    0.84: (0.1, 0.84, 0.03, 0.03),
    0.86: (0.1, 0.86, 0.02, 0.02),
    0.9: (0.05, 0.9, 0.03, 0.02),
    0.95: (0.02, 0.95, 0.02, 0.01),
}
C2_095 = (0.02, 0.02, 0.95, 0.01)
C3_09 = (0.05, 0.03, 0.02, 0.9)
BG = {0.985: (0.985, 0.005, 0.005, 0.005), 0.995: (0.995, 0.002, 0.002, 0.001)}
BG_0999 = (0.999, 0.0005, 0.0003, 0.0002)

PIXELS = {
    (0, 1): C1[0.86],  # next to the class-1 seed at (0, 0): grows (0.86 > 0.85)
    (1, 1): C1[0.9],  # grows
    (0, 2): C1[0.84],  # next to (0, 1) but 0.84 < 0.85: stays unlabelled
    (2, 2): C1[0.9],  # touches (1, 1) only diagonally: grows (8-connectivity)
    (0, 4): C1[0.95],  # confident island that touches no seed: does not grow
    (0, 5): C1[0.95],
    (3, 3): C1[0.9],  # seeded class 3 but confidently class 1: keeps its seed 3 ...
    (4, 4): C1[0.9],  # ... yet still connects (2, 2) to (4, 4), which grows (official rule)
    (3, 4): C3_09,  # class 3 next to the class-3 seed at (3, 3), which the map now calls
    #                 class 1: no class-3 seed in its component, does not grow
    (4, 0): C2_095,  # absent class 2, next to a class-2 seed: absent classes never grow
    (5, 2): BG[0.985],  # next to the background seed but 0.985 < 0.99: stays unlabelled
    (5, 4): BG[0.995],  # grows
    (5, 5): BG_0999,  # grows through (5, 4)
}
SEEDS = {(0, 0): 1, (3, 3): 3, (3, 0): 2, (5, 3): 0}
EXPECTED = [
    [1, 1, U, U, U, U],
    [U, 1, U, U, U, U],
    [U, U, 1, U, U, U],
    [2, U, U, 3, U, U],
    [U, U, U, U, 1, U],
    [U, U, U, 0, 0, 0],
]


def hand_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    probs = torch.tensor(DEFAULT)[:, None, None].repeat(1, 6, 6)
    for (y, x), p in PIXELS.items():
        probs[:, y, x] = torch.tensor(p)
    seeds = torch.full((6, 6), U, dtype=torch.long)
    for (y, x), c in SEEDS.items():
        seeds[y, x] = c
    present = torch.tensor([True, True, False, True])
    assert torch.allclose(probs.sum(0), torch.ones(6, 6))
    return probs[None], seeds[None], present[None], torch.tensor(EXPECTED)[None]


def test_hand_worked_example() -> None:
    probs, seeds, present, expected = hand_case()
    out = grow(probs, seeds, present)
    assert out.dtype == torch.long
    assert torch.equal(out, expected)
    assert torch.equal(torch.from_numpy(grow_reference(probs, seeds, present)), expected)


def test_background_present_even_if_flag_false() -> None:
    probs, seeds, present, expected = hand_case()
    present[:, 0] = False
    assert torch.equal(grow(probs, seeds, present), expected)


def test_argmax_over_present_classes_only() -> None:
    # Unnormalised scores make the point: the absent class 2 scores highest at (0, 1),
    # yet the pixel's best present class 1 is confident and grows from the seed.
    probs = torch.tensor([[0.01, 0.01, 0.01], [0.2, 0.9, 0.2], [0.1, 0.95, 0.1]])[None, :, None]
    seeds = torch.tensor([[[1, U, U]]])
    present = torch.tensor([[True, True, False]])
    expected = torch.tensor([[[1, 1, U]]])
    assert torch.equal(grow(probs, seeds, present), expected)
    assert torch.equal(torch.from_numpy(grow_reference(probs, seeds, present)), expected)
    present[0, 2] = True  # now class 2 wins the pixel and, having no seed, does not grow
    assert torch.equal(grow(probs, seeds, present), torch.tensor([[[1, U, U]]]))


def test_thresholds_are_parameters() -> None:
    probs, seeds, present, _ = hand_case()
    out = grow(probs, seeds, present, fg_thresh=0.8, bg_thresh=0.98)
    assert out[0, 0, 2] == 1 and out[0, 5, 2] == 0


def test_thresholds_of_one_never_grow() -> None:
    probs, seeds, present, _ = hand_case()
    certain = torch.zeros_like(probs)
    certain[:, 1] = 1.0  # even a probability of exactly 1 does not exceed 1
    for p in (probs, certain):
        torch.testing.assert_close(grow(p, seeds, present, fg_thresh=1.0, bg_thresh=1.0), seeds)


def random_case(
    batch: int, classes: int, size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Smooth random probabilities, a few present classes, seeds ~25 % of pixels."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, size // 6 + 1, size // 6 + 1, generator=g) * 6
    logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
    present = torch.rand(batch, classes, generator=g) < 0.25
    present[:, 0] = True
    probs = logits.softmax(dim=1)
    seeds = torch.full((batch, size, size), U, dtype=torch.long)
    best = logits.masked_fill(~present[:, :, None, None], -1e9).argmax(dim=1)
    chosen = torch.rand(batch, size, size, generator=g) < 0.25
    seeds[chosen] = best[chosen]
    noise = torch.rand(batch, size, size, generator=g) < 0.02  # some wrong / absent seeds
    seeds[noise] = torch.randint(0, classes, (int(noise.sum()),), generator=g)
    return probs, seeds, present


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_on_random_batches(seed: int) -> None:
    probs, seeds, present = random_case(batch=4, classes=21, size=41, seed=seed)
    out = grow(probs, seeds, present)
    ref = torch.from_numpy(grow_reference(probs, seeds, present))
    assert torch.equal(out, ref)
    grown = (out != U).sum() - (seeds != U).sum()
    assert grown > 50  # the case exercises growth
    assert torch.equal(out[seeds != U], seeds[seeds != U])


@gpu_only
def test_cuda_matches_cpu() -> None:
    probs, seeds, present = random_case(batch=20, classes=21, size=41, seed=3)
    cpu = grow(probs, seeds, present)
    gpu = grow(probs.cuda(), seeds.cuda(), present.cuda())
    assert gpu.is_cuda
    assert torch.equal(gpu.cpu(), cpu)


def test_rejects_bad_shapes() -> None:
    probs, seeds, present, _ = hand_case()
    with pytest.raises(ValueError):
        grow(probs, seeds[0], present)
    with pytest.raises(ValueError):
        grow(probs, seeds, present[:, :3])
