"""Mixed precision: FickleHead and the closed-form maps under bf16 autocast on CPU
stay within a stated tolerance of float32 (the head computes in float32 under
autocast; the maps sum half-precision features in float32)."""

from __future__ import annotations

import pytest
import torch

from ficklenet.choices import Dropout
from ficklenet.localization import sample_maps, sample_maps_many, stochastic_maps
from ficklenet.models.fickle import FickleHead

# bf16 keeps 8 bits of mantissa: features rounded to bf16 move each product by up to
# 2^-8 relative; the sums stay within 2 % of the float32 ones (max error / max value).
REL = 2e-2


def _head_and_x(p: float = 0.9, s: int = 3) -> tuple[FickleHead, torch.Tensor]:
    torch.manual_seed(0)
    head = FickleHead(32, 20, kernel_size=s, p=p)
    with torch.no_grad():
        head.classifier.weight.normal_(std=0.05)
    x = torch.relu(torch.randn(2, 32, 12, 12))
    return head, x


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = b.float().abs().max().clamp_min(1e-12)
    assert ((a.float() - b.float()).abs().max() / scale).item() <= REL


@pytest.mark.parametrize("dropout", ["fickle", "general"])
def test_head_scores_and_gradients_under_bf16_autocast(dropout):
    head, x = _head_and_x()
    head.dropout = Dropout(dropout)
    head.train()
    x32 = x.clone().requires_grad_(True)
    ref = head(x32, seed=7)
    (gx32,) = torch.autograd.grad(ref.sum(), x32)
    gw32 = torch.autograd.grad(head(x.clone(), seed=7).sum(), head.classifier.weight)[0]
    xb = x.to(torch.bfloat16).requires_grad_(True)  # what a bf16 backbone hands over
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(xb, seed=7)
        gw = torch.autograd.grad(head(xb, seed=7).sum(), head.classifier.weight)[0]
    assert out.dtype == torch.float32  # computed in float32 under autocast
    (gxb,) = torch.autograd.grad(out.sum(), xb)
    assert gxb.dtype == torch.bfloat16
    _close(out, ref)
    _close(gxb, gx32)
    _close(gw, gw32)


@pytest.mark.parametrize("formula", ["gradcam", "grad_x_act"])
def test_closed_form_maps_of_bf16_features(formula):
    head, x = _head_and_x()
    x1 = x[:1]
    gen = torch.Generator().manual_seed(1)
    masks = torch.rand(4, *head.mask_shape(x1)[1:], generator=gen) >= head.p
    ref = stochastic_maps(head, x1, [0, 3], masks, formula)
    got = stochastic_maps(head, x1.to(torch.bfloat16), [0, 3], masks, formula)
    assert got.dtype == torch.float32
    # The bf16 features are x rounded: exactly the float32 maps of those features.
    exact = stochastic_maps(head, x1.to(torch.bfloat16).float(), [0, 3], masks, formula)
    torch.testing.assert_close(got, exact)
    _close(got, ref)
    agg, agg32 = (
        sample_maps(head, f, [0, 3], 8, torch.Generator().manual_seed(2), formula=formula)
        for f in (x1.to(torch.bfloat16), x1.to(torch.bfloat16).float())
    )
    torch.testing.assert_close(agg, agg32)


@pytest.mark.parametrize("formula", ["gradcam", "grad_x_act"])
def test_maps_made_inside_an_autocast_region_are_float32_maps(formula):
    """The localize stage calls the map arithmetic inside the precision plugin's
    autocast; it must not lower it (CPU autocast would make embedding_bag's table
    bf16): the maps equal the float32 maps of the same features, bit for bit."""
    head, x = _head_and_x()
    xs = [x[:1], x[1:2, :, :5]]

    def maps():
        one = sample_maps(head, xs[0], [0, 3], 8, torch.Generator().manual_seed(2), formula)
        gens = [torch.Generator().manual_seed(3 + i) for i in range(2)]
        return [one, *sample_maps_many(head, xs, [[1], [0, 2]], 8, gens, formula)]

    want = maps()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = maps()
    for g, w in zip(got, want, strict=True):
        assert g.dtype == torch.float32
        assert torch.equal(g, w)


def test_mask_sampling_on_the_device_is_deterministic_per_seed():
    """The same generator seed on x's device draws the same masks, hence the same
    maps; another seed draws others (CPU here; the CUDA twin is in
    test_stochastic_maps, skipped without a GPU)."""
    head, x = _head_and_x()
    x1 = x[:1]
    a, b, c = (
        sample_maps(head, x1, [1, 2], 16, torch.Generator().manual_seed(s), formula="grad_x_act")
        for s in (5, 5, 6)
    )
    assert torch.equal(a, b) and not torch.equal(a, c)
