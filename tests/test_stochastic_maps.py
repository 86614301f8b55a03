"""Closed-form stochastic maps against autograd through FickleHead (docs/design.md),
and the sampler behind ``sample_maps``: its bits, its reproducibility, its maps."""

import math

import pytest
import torch

import ficklenet.localization.closed_form as closed_form_mod
import ficklenet.localization.keep_bits as keep_bits_mod
from ficklenet.localization import normalize_maps, sample_maps, sample_maps_many, stochastic_maps
from ficklenet.localization.maps import keep_bits_table, sample_keep_bits
from ficklenet.models.fickle import FickleHead
from tests.conftest import gpu_only


def _head(c=4, k=5, s=3, p=0.6, dropout="fickle", scale_centre=True):
    torch.manual_seed(0)
    head = FickleHead(c, k, kernel_size=s, p=p, dropout=dropout, scale_centre=scale_centre)
    head = head.double()
    with torch.no_grad():
        head.classifier.weight.normal_()
        head.classifier.bias.normal_()
    return head


def _features(c, h, w, seed=1):
    """Signed features with some exact zeros (ReLU-like sparsity)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, c, h, w, generator=gen, dtype=torch.double)
    x[torch.rand(x.shape, generator=gen) < 0.3] = 0
    return x


def autograd_maps(head, x, classes, masks, formula):
    """The literal definition: one forward + backward per mask and class."""
    out = []
    for n in range(masks.shape[0]):
        leaf = x.clone().requires_grad_(True)
        scores = head(leaf, masks[n : n + 1])
        row = []
        for c in classes:
            (grad,) = torch.autograd.grad(scores[0, c], leaf, retain_graph=True)
            if formula == "grad_x_act":
                m = (grad * leaf).sum(1)[0]
            else:
                m = (grad.mean((2, 3), keepdim=True) * leaf).sum(1)[0]
            row.append(m.clamp_min(0))
        out.append(torch.stack(row))
    return torch.stack(out).detach()


@pytest.mark.parametrize("formula", ["grad_x_act", "gradcam"])
@pytest.mark.parametrize(
    "dropout,scale_centre", [("fickle", True), ("fickle", False), ("general", True)]
)
@pytest.mark.parametrize("s,h,w", [(3, 6, 5), (9, 7, 6)])
def test_closed_form_equals_autograd(formula, dropout, scale_centre, s, h, w):
    head = _head(c=4, k=5, s=s, p=0.6, dropout=dropout, scale_centre=scale_centre)
    x = _features(4, h, w)
    gen = torch.Generator().manual_seed(2)
    masks = torch.rand(3, *head.mask_shape(x)[1:], generator=gen) >= 0.6
    classes = [4, 0, 2]
    got = stochastic_maps(head, x, classes, masks, formula)
    want = autograd_maps(head, x, classes, masks, formula)
    assert got.shape == (3, 3, h, w) and got.dtype == torch.double
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert want.amax() > 0  # not vacuous


def test_maps_change_with_the_mask_and_chunking_does_not_matter():
    head = _head(s=3)
    x = _features(4, 5, 5)
    gen = torch.Generator().manual_seed(3)
    masks = torch.rand(5, *head.mask_shape(x)[1:], generator=gen) >= 0.6
    one = stochastic_maps(head, x, [1], masks, chunk=1)
    torch.testing.assert_close(one, stochastic_maps(head, x, [1], masks, chunk=16))
    assert not torch.allclose(one[0], one[1])


def test_centre_is_kept_whatever_the_mask_says():
    head = _head(s=3)
    x = _features(4, 5, 5)
    none = torch.zeros(1, *head.mask_shape(x)[1:], dtype=torch.bool)
    got = stochastic_maps(head, x, [0, 3], none)
    torch.testing.assert_close(got, autograd_maps(head, x, [0, 3], none, "grad_x_act"))
    assert got.amax() > 0


def test_bad_arguments_are_clear_errors():
    head = _head(s=3)
    x = _features(4, 5, 5)
    good = torch.ones(1, *head.mask_shape(x)[1:], dtype=torch.bool)
    with pytest.raises(ValueError, match="masks must be"):
        stochastic_maps(head, x, [0], torch.ones(1, 4, 5, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        stochastic_maps(head, x, [0], good.double())
    with pytest.raises(ValueError, match="formula"):
        stochastic_maps(head, x, [0], good, formula="cam")
    with pytest.raises(ValueError, match="head outputs"):
        stochastic_maps(head, x, [5], good)
    with pytest.raises(ValueError, match=r"\(1, C, h, w\)"):
        stochastic_maps(head, x.expand(2, -1, -1, -1), [0], good)


# ----------------------------------------------------------------- the bits


def _reference_alias(u, table):
    """sample_keep_bits written as the alias method reads: column, then a coin."""
    out = []
    for value, entry in zip(u.tolist(), table[u & 0xFFFF].tolist(), strict=True):
        column, w = value & 0xFFFF, value >> 16  # Python's >> is arithmetic
        thr, alias = entry >> 16, entry & 0xFFFF
        out.append(column if w < thr else alias)
    return out


def test_alias_sampler_matches_its_definition():
    table = keep_bits_table(0.1)
    gen = torch.Generator().manual_seed(4)
    u = torch.randint(-(2**31), 2**31, (5000,), dtype=torch.int64, generator=gen).int()
    want = _reference_alias(u, table)
    assert sample_keep_bits(u.clone(), table).tolist() == want


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.7])
def test_alias_table_gives_the_exact_pattern_distribution(keep):
    # Probability of each 16-bit pattern as the table encodes it, exactly.
    table = keep_bits_table(keep).long()
    thr = (table >> 16) + 2**15
    alias = table & 0xFFFF
    prob = thr.double() / 2**16
    prob = prob.index_add(0, alias, (2**16 - thr).double() / 2**16) / 2**16
    popcount = torch.tensor([bin(v).count("1") for v in range(2**16)])
    exact = keep**popcount * (1 - keep) ** (16 - popcount)
    assert (prob - exact).abs().sum() < 2**-16  # total variation < 2^-17
    bits = ((torch.arange(2**16)[:, None] >> torch.arange(16)) & 1).double()
    marginals = prob @ bits
    torch.testing.assert_close(marginals, torch.full_like(marginals, keep), rtol=0, atol=2**-17)


def test_drawn_words_are_independent_bernoulli_bits():
    table = keep_bits_table(0.1)
    gen = torch.Generator().manual_seed(5)
    words = keep_bits_mod._draw_keep_words(table, (200, 1001), gen)
    assert words.shape == (200, 1001) and words.min() >= 0 and words.max() < 2**16
    bits = ((words.reshape(-1, 1) >> torch.arange(16)) & 1).double()
    n = bits.shape[0]
    assert (bits.mean(0) - 0.1).abs().max() < 5 * math.sqrt(0.09 / n)
    # popcount of each word is Binomial(16, 0.1): chi-square on 0..5 and >=6.
    counts = torch.bincount(bits.sum(1).long(), minlength=17).double()
    expected = torch.tensor([math.comb(16, k) * 0.1**k * 0.9 ** (16 - k) for k in range(17)]) * n
    obs = torch.cat([counts[:6], counts[6:].sum(0, keepdim=True)])
    exp = torch.cat([expected[:6], expected[6:].sum(0, keepdim=True)])
    assert ((obs - exp) ** 2 / exp).sum() < 24  # 6 dof: p < 0.001
    # neighbouring bits are independent: P(both kept) = 0.01.
    both = (bits[:, :-1] * bits[:, 1:]).mean()
    assert abs(both - 0.01) < 5 * math.sqrt(0.01 / (n * 15))


# ----------------------------------------------------------------- sample_maps


def _record(monkeypatch, name):
    calls = []
    original = getattr(keep_bits_mod, name)

    def wrapper(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append(out.clone())
        return out

    monkeypatch.setattr(keep_bits_mod, name, wrapper)
    return calls


def _record_blocks(monkeypatch):
    """Record, for every unit of keep words, its entries (channel, pixel) and words."""
    calls = []
    original = closed_form_mod._add_block

    def wrapper(plan, blk, keep, acc):
        first = blk is plan.blocks[0]
        calls.append(
            (first, plan.channel[blk.lo : blk.hi], plan.pixel[blk.lo : blk.hi], keep.clone())
        )
        return original(plan, blk, keep, acc)

    monkeypatch.setattr(closed_form_mod, "_add_block", wrapper)
    return calls


def _masks_from_words(head, x, calls):
    """Expanded-layout masks whose bits are the recorded keep words: bit t of word
    p of an entry is offset 16p+t (row-major, centre skipped) at its pixel."""
    s, r = head.kernel_size, head.kernel_size // 2
    _, c, h, w = x.shape
    offsets = [(a, b) for a in range(s) for b in range(s) if (a, b) != (r, r)]
    samples = []
    for first, channels, pixels, keep in calls:
        assert keep.shape[0] == 1  # CPU: one mask per unit
        if first:
            samples.append(torch.zeros(c, s * h, s * w, dtype=torch.bool))
        for ch, q, word in zip(channels.tolist(), pixels.tolist(), keep[0].tolist(), strict=True):
            u, v = divmod(q, w)
            for o, (a, b) in enumerate(offsets):
                i, j = u - (a - r), v - (b - r)
                if 0 <= i < h and 0 <= j < w:
                    samples[-1][ch, i * s + a, j * s + b] = (word[o // 16] >> (o % 16)) & 1 == 1
    return torch.stack(samples)


@pytest.mark.parametrize("s,scale_centre", [(3, True), (3, False), (9, True)])
def test_sampled_maps_are_the_maps_of_the_drawn_masks(monkeypatch, s, scale_centre):
    head = _head(c=3, k=4, s=s, p=0.7, scale_centre=scale_centre)
    x = _features(3, 6, 5)
    calls = _record_blocks(monkeypatch)
    monkeypatch.setattr(closed_form_mod, "_UNIT_CPU", 40)  # several blocks per mask
    gen = torch.Generator().manual_seed(6)
    agg, every = sample_maps(head, x, [3, 1], 5, gen, chunk=2, return_all=True)
    assert len(calls) > 5
    masks = _masks_from_words(head, x, calls)
    assert masks.shape[0] == 5
    want = normalize_maps(autograd_maps(head, x, [3, 1], masks, "grad_x_act"))
    torch.testing.assert_close(every, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(agg, want.amax(0))


@pytest.mark.parametrize("scale_centre", [True, False])
def test_sampled_gradcam_uses_binomial_counts_of_kept_windows(monkeypatch, scale_centre):
    head = _head(c=3, k=4, s=3, p=0.7, scale_centre=scale_centre)
    x = _features(3, 5, 4)
    calls = _record(monkeypatch, "_draw_counts")
    gen = torch.Generator().manual_seed(7)
    _, every = sample_maps(head, x, [0, 2], 3, gen, formula="gradcam", return_all=True)
    counts = torch.cat(calls).long()  # (N, C, s²-1)
    # A mask with exactly these counts: keep the first `count` windows in range.
    s, r, (_, c, h, w) = 3, 1, x.shape
    offsets = [(a, b) for a in range(s) for b in range(s) if (a, b) != (r, r)]
    masks = torch.zeros(3, c, s * h, s * w, dtype=torch.bool)
    for o, (a, b) in enumerate(offsets):
        da, db = a - r, b - r
        rows = range(max(0, -da), min(h, h - da))
        cols = range(max(0, -db), min(w, w - db))
        windows = [(i, j) for i in rows for j in cols]
        assert counts[..., o].max() <= len(windows)
        for n in range(3):
            for ch in range(c):
                for i, j in windows[: counts[n, ch, o]]:
                    masks[n, ch, i * s + a, j * s + b] = True
    want = normalize_maps(autograd_maps(head, x, [0, 2], masks, "gradcam"))
    torch.testing.assert_close(every, want, rtol=1e-10, atol=1e-12)


def test_gradcam_counts_have_binomial_moments():
    trials = torch.tensor([30, 1600])
    expected = trials.double()
    gen = torch.Generator().manual_seed(8)
    counts = keep_bits_mod._draw_counts(trials, 0.1, (4000, 2), gen).double()
    torch.testing.assert_close(counts.mean(0), expected * 0.1, rtol=0.02, atol=0.0)
    torch.testing.assert_close(counts.var(0), expected * 0.09, rtol=0.1, atol=0.0)


def test_sampled_general_dropout_maps_are_the_maps_of_the_drawn_masks(monkeypatch):
    head = _head(c=3, k=4, s=3, p=0.5, dropout="general")
    x = _features(3, 5, 6)
    calls = _record(monkeypatch, "_draw_bits")
    gen = torch.Generator().manual_seed(9)
    agg, every = sample_maps(head, x, [1, 2], 4, gen, chunk=3, aggregate="mean", return_all=True)
    masks = torch.cat(calls)
    assert masks.shape == (4, 3, 5, 6) and 0.3 < masks.double().mean() < 0.7
    want = normalize_maps(autograd_maps(head, x, [1, 2], masks, "grad_x_act"))
    torch.testing.assert_close(every, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(agg, want.mean(0))


@pytest.mark.parametrize("formula", ["grad_x_act", "gradcam"])
def test_same_seed_same_maps_bit_for_bit(formula):
    head = FickleHead(16, 6, kernel_size=5, p=0.9)
    x = torch.randn(1, 16, 9, 8).relu()
    a = sample_maps(head, x, [2, 5], 12, torch.Generator().manual_seed(10), formula, chunk=5)
    b = sample_maps(head, x, [2, 5], 12, torch.Generator().manual_seed(10), formula, chunk=5)
    c = sample_maps(head, x, [2, 5], 12, torch.Generator().manual_seed(11), formula, chunk=5)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == (2, 9, 8) and a.amax() == 1.0


def test_without_dropout_every_pass_is_the_deterministic_map():
    head = _head(c=3, k=4, s=3, p=0.0)
    x = _features(3, 5, 5)
    all_kept = torch.ones(1, *head.mask_shape(x)[1:], dtype=torch.bool)
    want = normalize_maps(stochastic_maps(head, x, [1], all_kept))[0]
    _, every = sample_maps(head, x, [1], 4, torch.Generator().manual_seed(0), return_all=True)
    torch.testing.assert_close(every, want.expand(4, -1, -1, -1))


def test_sample_maps_edge_cases():
    head = _head(c=3, k=4, s=3)
    x = _features(3, 5, 5)
    gen = torch.Generator().manual_seed(0)
    assert sample_maps(head, x, [], 3, gen).shape == (0, 5, 5)
    assert sample_maps(head, torch.zeros_like(x), [0], 3, gen).abs().sum() == 0
    with pytest.raises(ValueError, match="aggregate"):
        sample_maps(head, x, [0], 3, gen, aggregate="union")
    with pytest.raises(ValueError, match="n must be"):
        sample_maps(head, x, [0], 0, gen)


_SHAPES = [(6, 5), (7, 7), (6, 5), (4, 6)]
_CLASSES = [[4, 0], [1], [], [2, 3, 0]]


def _images():
    return [_features(4, h, w, seed=i) for i, (h, w) in enumerate(_SHAPES)]


def _gens():
    return [torch.Generator().manual_seed(20 + i) for i in range(len(_SHAPES))]


@pytest.mark.parametrize("formula", ["grad_x_act", "gradcam"])
@pytest.mark.parametrize("dropout", ["fickle", "general"])
@pytest.mark.parametrize("aggregate", ["max", "mean"])
def test_many_images_give_each_image_its_own_maps(formula, dropout, aggregate):
    """Images of other sizes and class counts (one without classes) batched
    together: each gets what sample_maps gives it alone with its generator."""
    head = _head(c=4, k=5, s=3, p=0.6, dropout=dropout)
    xs = _images()
    kw = dict(formula=formula, chunk=3, aggregate=aggregate)
    want = [
        sample_maps(head, x, c, 7, g, **kw) for x, c, g in zip(xs, _CLASSES, _gens(), strict=True)
    ]
    got = sample_maps_many(head, xs, _CLASSES, 7, _gens(), **kw)
    for g, w, (h, wd), c in zip(got, want, _SHAPES, _CLASSES, strict=True):
        assert g.shape == w.shape == (len(c), h, wd)
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    assert all(float(g.amax()) > 0 for g in got if g.numel())  # not vacuous


@pytest.mark.parametrize("aggregate", ["max", "mean"])
def test_gradcam_all_at_once_and_chunk_by_chunk_draw_the_same_masks(aggregate):
    """A budget too small for one image's N maps makes them chunk by chunk, from
    the same draws: the maps agree to rounding (other draws would not)."""
    head = _head(c=4, k=5, s=3, p=0.6)
    x = _features(4, 6, 5)
    kw = dict(formula="gradcam", chunk=3, aggregate=aggregate, return_all=True)
    agg, every = sample_maps(head, x, [4, 1], 8, torch.Generator().manual_seed(3), **kw)
    tiny = sample_maps(head, x, [4, 1], 8, torch.Generator().manual_seed(3), memory_mb=1e-6, **kw)
    torch.testing.assert_close(every, tiny[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(agg, tiny[0], rtol=1e-12, atol=1e-12)


def test_memory_budget_bounds_every_batched_call(monkeypatch):
    """The budget holds two of these images' N gradcam maps: they go two by two;
    with a budget below one image's, each goes chunk by chunk (``chunk`` maps per
    call); the maps are the same either way."""
    from ficklenet.localization import maps as maps_mod

    head = _head(c=4, k=5, s=3, p=0.6)
    xs = [_features(4, 6, 5, seed=i) for i in range(4)]
    classes = [[0, 1]] * 4
    seen = []
    original = closed_form_mod._gradcam_stacked

    def spy(sts, counts):
        seen.append((len(sts), counts.shape[1], maps_mod._together_bytes(sts, counts.shape[1])))
        return original(sts, counts)

    monkeypatch.setattr(closed_form_mod, "_gradcam_stacked", spy)
    one = maps_mod._together_bytes([closed_form_mod._setup(head, xs[0], [0, 1])], 8)
    per_mask = closed_form_mod.gradcam_bytes_per_mask(4, 8, 2, 30)
    assert one == 8 * 4 * (4 * 4 * 8 + 2 * 2 * 4 + 4 * 2 * 30) == 8 * per_mask
    kw = dict(formula="gradcam", chunk=3)
    budget = 2.5 * one / 2**20
    pairs = sample_maps_many(head, xs, classes, 8, _gens(), memory_mb=budget, **kw)
    assert [(i, b) for i, b, _ in seen] == [(2, 8), (2, 8)]
    assert all(used <= budget * 2**20 for *_, used in seen)
    seen.clear()
    alone = sample_maps_many(head, xs, classes, 8, _gens(), memory_mb=0.5 * one / 2**20, **kw)
    assert [(i, b) for i, b, _ in seen] == [(1, 3), (1, 3), (1, 2)] * 4
    for a, b in zip(pairs, alone, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_many_images_refuse_mismatched_lists():
    head = _head()
    with pytest.raises(ValueError, match="one of each per image"):
        sample_maps_many(head, _images(), _CLASSES[:2], 3, _gens())
    with pytest.raises(ValueError, match="memory_mb"):
        sample_maps(head, _images()[0], [0], 3, memory_mb=0)


def test_grad_x_act_work_unit_follows_the_budget():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert closed_form_mod._unit(cuda, 32, 2**30) == (32, 2**26)
    assert closed_form_mod._unit(cuda, 32, 2**20) == (32, 2**16)
    assert closed_form_mod._unit(cpu, 32, 2**30) == (1, closed_form_mod._UNIT_CPU)
    assert closed_form_mod._unit(cpu, 32, 2**20) == (1, 2**16)


@gpu_only
def test_cuda_uses_the_device_generator_and_matches_cpu_formula():
    head = _head(c=8, k=4, s=3, p=0.7).cuda()
    x = _features(8, 9, 9).cuda()
    gen = torch.Generator(device="cuda").manual_seed(1)
    a = sample_maps(head, x, [1, 3], 20, gen, chunk=7)
    b = sample_maps(head, x, [1, 3], 20, torch.Generator(device="cuda").manual_seed(1), chunk=7)
    assert a.is_cuda and torch.equal(a, b)
    masks = torch.rand(3, *head.mask_shape(x)[1:], device="cuda") >= 0.7
    torch.testing.assert_close(
        stochastic_maps(head, x, [1, 3], masks).cpu(),
        stochastic_maps(head.cpu(), x.cpu(), [1, 3], masks.cpu()),
    )


@gpu_only
@pytest.mark.parametrize("formula", ["grad_x_act", "gradcam"])
def test_cuda_many_images_are_reproducible_and_match_one_at_a_time(formula):
    head = _head(c=4, k=5, s=3, p=0.6).cuda()
    xs = [x.cuda() for x in _images()]

    def gens():
        return [torch.Generator(device="cuda").manual_seed(20 + i) for i in range(len(xs))]

    a = sample_maps_many(head, xs, _CLASSES, 9, gens(), formula, chunk=4)
    b = sample_maps_many(head, xs, _CLASSES, 9, gens(), formula, chunk=4)
    alone = [
        sample_maps(head, x, c, 9, g, formula, chunk=4)
        for x, c, g in zip(xs, _CLASSES, gens(), strict=True)
    ]
    for u, v, w in zip(a, b, alone, strict=True):
        assert u.is_cuda and torch.equal(u, v)
        torch.testing.assert_close(u, w)


@gpu_only
def test_cuda_gradcam_batches_stay_within_the_memory_budget():
    """VOC-like features (512×41×41, s=9, N=200, 3 classes): the peak memory the
    batched maps allocate stays within the budget (plus 10 % for the allocator's
    rounding), for a budget of two images and of a quarter of one."""
    head = FickleHead(512, 20, kernel_size=9, p=0.9).cuda()
    xs = [torch.randn(1, 512, 41, 41, device="cuda").relu() for _ in range(4)]
    classes = [[0, 5, 7]] * 4
    from ficklenet.localization import maps as maps_mod

    one = maps_mod._together_bytes([closed_form_mod._setup(head, xs[0], classes[0])], 200)
    for budget in (2.2 * one, 0.25 * one):
        gens = [torch.Generator(device="cuda").manual_seed(i) for i in range(4)]
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        sample_maps_many(head, xs, classes, 200, gens, "gradcam", memory_mb=budget / 2**20)
        torch.cuda.synchronize()
        assert torch.cuda.max_memory_allocated() - base <= 1.1 * budget
