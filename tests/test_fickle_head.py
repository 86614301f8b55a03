"""FickleHead against the literal feature-map expansion (docs/design.md, "Contracts")."""

import pytest
import torch
import torch.nn.functional as F

from ficklenet.models.fickle import FickleHead, expand
from ficklenet.reference import fickle_head_literal


def _head(c=6, k=4, s=3, p=0.5, dropout="fickle", scale_centre=True):
    torch.manual_seed(0)
    head = FickleHead(c, k, kernel_size=s, p=p, dropout=dropout, scale_centre=scale_centre)
    head = head.double()
    with torch.no_grad():
        head.classifier.weight.normal_()
        head.classifier.bias.normal_()
    return head


def test_expand_blocks_hold_centred_windows():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 4, 5)
    s, r = 3, 1
    e = expand(x, s)
    assert e.shape == (2, 3, 12, 15)
    for i in range(4):
        for j in range(5):
            for a in range(s):
                for b in range(s):
                    u, v = i + a - r, j + b - r
                    want = x[:, :, u, v] if 0 <= u < 4 and 0 <= v < 5 else torch.zeros(2, 3)
                    torch.testing.assert_close(e[:, :, i * s + a, j * s + b], want)


def test_unmasked_expansion_equals_ordinary_conv():
    # Without dropout, conv(s, stride s) over the expansion == s×s conv over x.
    head = _head(s=5, p=0.0)
    x = torch.randn(2, 6, 7, 6, dtype=torch.double)
    want = F.conv2d(x, head.classifier.weight, head.classifier.bias, padding=2).mean((2, 3))
    torch.testing.assert_close(fickle_head_literal(head, x), want)
    head.eval()
    torch.testing.assert_close(head(x), want)


@pytest.mark.parametrize("scale_centre", [True, False])
@pytest.mark.parametrize("s,h,w", [(3, 6, 5), (9, 11, 10)])
def test_forward_and_gradients_match_literal_expansion(s, h, w, scale_centre):
    head = _head(c=5, k=3, s=s, p=0.7, scale_centre=scale_centre)
    x = torch.randn(3, 5, h, w, dtype=torch.double, requires_grad=True)
    gen = torch.Generator().manual_seed(3)
    mask = torch.rand(3, 5, h * s, w * s, generator=gen) >= 0.7
    out = head(x, mask)
    ref = fickle_head_literal(head, x, mask)
    torch.testing.assert_close(out, ref)

    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, head.classifier.weight, head.classifier.bias], g)
    refs = torch.autograd.grad(ref, [x, head.classifier.weight, head.classifier.bias], g)
    for got, want in zip(grads, refs, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("scale_centre", [True, False])
def test_centre_of_every_block_is_always_kept(scale_centre):
    head = _head(s=3, p=0.5, scale_centre=scale_centre)
    x = torch.randn(2, 6, 4, 4, dtype=torch.double)
    mask = torch.rand(2, 6, 12, 12) >= 0.5
    no_centre = mask.clone()
    no_centre[:, :, 1::3, 1::3] = False
    torch.testing.assert_close(head(x, no_centre), head(x, mask | _centres(mask)))
    # all dropped except centres: only the 1×1 centre tap of the kernel acts,
    # scaled by 1/(1-p) = 2 or not at all.
    none = torch.zeros_like(mask)
    centre_w = head.classifier.weight[:, :, 1:2, 1:2]
    centre_scale = 2.0 if scale_centre else 1.0
    want = F.conv2d(x * centre_scale, centre_w, head.classifier.bias).mean((2, 3))
    torch.testing.assert_close(head(x, none), want)


def _centres(mask):
    c = torch.zeros_like(mask)
    c[:, :, 1::3, 1::3] = True
    return c


def test_sampled_mask_is_reproducible_and_matches_sample_mask():
    head = _head(s=3, p=0.9)
    head.train()
    x = torch.randn(2, 6, 5, 5, dtype=torch.double, requires_grad=True)
    out = head(x, seed=123)
    mask = head.sample_mask(x, torch.Generator().manual_seed(123))
    assert mask[:, :, 1::3, 1::3].all()
    kept = mask.double().mean().item()
    assert 0.1 < kept < 0.3  # 1/9 always kept + 8/9 of elements at 0.1
    torch.testing.assert_close(out, fickle_head_literal(head, x, mask))
    # gradients re-derive the mask from the seed in backward
    (gx,) = torch.autograd.grad(out.sum(), x)
    (gref,) = torch.autograd.grad(fickle_head_literal(head, x, mask).sum(), x)
    torch.testing.assert_close(gx, gref)


def test_new_mask_every_training_pass_and_repeatable_by_global_seed():
    head = _head(s=3, p=0.5)
    head.train()
    x = torch.randn(2, 6, 5, 5, dtype=torch.double)
    torch.manual_seed(7)
    a, b = head(x), head(x)
    assert not torch.allclose(a, b)
    torch.manual_seed(7)
    torch.testing.assert_close(head(x), a)


def test_eval_is_deterministic_unless_stochastic_inference():
    head = _head(s=3, p=0.5)
    head.eval()
    x = torch.randn(1, 6, 5, 5, dtype=torch.double)
    torch.testing.assert_close(head(x), head(x))
    head.stochastic_inference = True
    assert not torch.allclose(head(x), head(x))


@pytest.mark.parametrize("scale_centre", [True, False])
@pytest.mark.parametrize("s,p", [(3, 0.5), (3, 0.9), (5, 0.3), (5, 0.7)])
def test_eval_output_is_the_expectation_of_training_outputs(s, p, scale_centre):
    """Monte-Carlo mean of training-mode outputs (fresh masks) against the eval output,
    within 4 standard errors of the mean, class by class."""
    head = _head(c=4, k=3, s=s, p=p, scale_centre=scale_centre)
    x = torch.randn(2, 4, 6, 7, dtype=torch.double)
    head.eval()
    expected = head(x)
    # The eval score map pools to the eval score (CAM's map is the expectation too).
    torch.testing.assert_close(head.score_map(x).mean((2, 3)), expected)
    head.train()
    n = 3000
    with torch.no_grad():
        samples = torch.stack([head(x, seed=i) for i in range(n)])
    mean, sem = samples.mean(0), samples.std(0) / n**0.5
    assert (sem > 0).all()
    assert ((mean - expected).abs() <= 4 * sem).all(), (mean - expected) / sem
    # The old eval (every tap kept and scaled by 1/(1-p)) is far outside that band.
    all_kept = fickle_head_literal(head, x, torch.ones(1, 4, 6 * s, 7 * s, dtype=torch.bool))
    assert ((mean - all_kept).abs() > 4 * sem).any()


def test_batch_one_mask_broadcasts():
    head = _head(s=3, p=0.5)
    x = torch.randn(3, 6, 4, 4, dtype=torch.double)
    mask = torch.rand(1, 6, 12, 12) >= 0.5
    torch.testing.assert_close(
        head(x, mask), fickle_head_literal(head, x, mask.expand(3, -1, -1, -1))
    )


def test_general_dropout_drops_x_itself_without_centre():
    head = _head(s=3, p=0.5, dropout="general")
    x = torch.randn(2, 6, 5, 5, dtype=torch.double)
    mask = torch.rand(2, 6, 5, 5) >= 0.5
    want = F.conv2d(x * mask / 0.5, head.classifier.weight, head.classifier.bias, padding=1)
    torch.testing.assert_close(head(x, mask), want.mean((2, 3)))
    head.eval()
    plain = F.conv2d(x, head.classifier.weight, head.classifier.bias, padding=1).mean((2, 3))
    torch.testing.assert_close(head(x), plain)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(p=1.0), r"\[0, 1\)"),
        (dict(p=-0.1), r"\[0, 1\)"),
        (dict(kernel_size=4), "odd"),
        (dict(dropout="spatial"), "fickle"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FickleHead(8, 20, **kwargs)


def test_wrong_mask_shape_is_an_error():
    head = _head(s=3)
    with pytest.raises(ValueError, match="mask has shape"):
        head(torch.randn(1, 6, 4, 4, dtype=torch.double), torch.ones(1, 6, 4, 4, dtype=torch.bool))
