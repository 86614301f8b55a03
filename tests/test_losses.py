"""DSRG losses (ficklenet.dsrg.losses) against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from ficklenet.data.classes import IGNORE_INDEX as U
from ficklenet.dsrg.losses import balanced_seed_loss, boundary_loss, floored_softmax


def probs_to_log(pixels: list[list[list[float]]]) -> torch.Tensor:
    """(B, h*w, K+1) nested lists of per-pixel probabilities → (B, K+1, 2, 2) log-probs."""
    p = torch.tensor(pixels, dtype=torch.float64)  # (B, 4, K+1)
    return p.log().permute(0, 2, 1).reshape(p.shape[0], p.shape[2], 2, 2)


def test_balanced_seed_loss_by_hand() -> None:
    log_probs = probs_to_log(
        [
            # image 0: background seed, class-1 seed, class-2 seed, one unlabelled pixel
            [[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.2, 0.2, 0.6], [0.8, 0.1, 0.1]],
            # image 1: one class-1 seed, no background seed
            [[0.3, 0.4, 0.3], [0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.1, 0.1, 0.8]],
        ]
    )
    seeds = torch.tensor([[[0, 1], [2, U]], [[1, U], [U, U]]])
    # background term: image 0 has one bg seed (p = 0.5); image 1 has none → 0,
    # and the mean is over both images.
    bg = (-math.log(0.5) + 0.0) / 2
    # foreground term: image 0 has two fg seeds (p = 0.5 and 0.6), image 1 one (0.4).
    fg = (-(math.log(0.5) + math.log(0.6)) / 2 + -math.log(0.4)) / 2
    loss = balanced_seed_loss(log_probs, seeds)
    assert loss.item() == pytest.approx(bg + fg, rel=1e-12)


def test_balanced_seed_loss_balances_counts() -> None:
    # 3 background seeds and 1 foreground seed: each kind is averaged on its own.
    log_probs = probs_to_log([[[0.5, 0.5], [0.25, 0.75], [0.8, 0.2], [0.1, 0.9]]])
    seeds = torch.tensor([[[0, 0], [0, 1]]])
    expected = -(math.log(0.5) + math.log(0.25) + math.log(0.8)) / 3 - math.log(0.9)
    assert balanced_seed_loss(log_probs, seeds).item() == pytest.approx(expected, rel=1e-12)


def test_balanced_seed_loss_without_seeds_is_zero_not_nan() -> None:
    log_probs = torch.randn(2, 3, 2, 2, requires_grad=True).log_softmax(dim=1)
    loss = balanced_seed_loss(log_probs, torch.full((2, 2, 2), U))
    assert loss.item() == 0.0
    loss.backward()


def test_balanced_seed_loss_gradient_only_at_seeds() -> None:
    logits = torch.randn(1, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    seeds = torch.tensor([[[0, U], [2, U]]])
    balanced_seed_loss(logits.log_softmax(dim=1), seeds).backward()
    assert logits.grad is not None
    assert torch.all(logits.grad[0, :, 0, 1] == 0) and torch.all(logits.grad[0, :, 1, 1] == 0)
    assert torch.any(logits.grad[0, :, 0, 0] != 0) and torch.any(logits.grad[0, :, 1, 0] != 0)


def test_boundary_loss_by_hand_and_q_is_constant() -> None:
    # Two pixels, two classes. Pixel a: ratios Q/p = 1.6 and 0.4 (inside the clip).
    # Pixel b: ratios 0.0101 and 99, clipped to 0.05 and 20.
    probs = torch.tensor([[[[0.5, 0.99]], [[0.5, 0.01]]]], dtype=torch.float64)
    probs.requires_grad_(True)
    q = torch.tensor([[[[0.8, 0.01]], [[0.2, 0.99]]]], dtype=torch.float64, requires_grad=True)
    pixel_a = 0.8 * math.log(1.6) + 0.2 * math.log(0.4)
    pixel_b = 0.01 * math.log(0.05) + 0.99 * math.log(20.0)
    loss = boundary_loss(probs, q)
    assert loss.item() == pytest.approx((pixel_a + pixel_b) / 2, rel=1e-12)

    loss.backward()
    assert q.grad is None  # no gradient into Q
    # d/dp of Q·log(Q/p) is −Q/p, over 2 pixels; zero where the ratio is clipped.
    expected = torch.tensor([[[[-0.8 / 0.5 / 2, 0.0]], [[-0.2 / 0.5 / 2, 0.0]]]])
    assert probs.grad is not None
    torch.testing.assert_close(probs.grad, expected.double())


def test_boundary_loss_zero_when_q_equals_p() -> None:
    p = torch.softmax(torch.randn(2, 4, 3, 3), dim=1)
    assert boundary_loss(p, p.clone()).abs().item() < 1e-6


def test_floored_softmax() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)]])
    expected = torch.tensor([[0.25 + 1e-4, 0.75 + 1e-4]]) / (1 + 2e-4)
    torch.testing.assert_close(floored_softmax(logits), expected)
