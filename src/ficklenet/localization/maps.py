"""FickleNet's localization maps from N stochastic passes, in closed form.

FickleNet (Lee et al., CVPR 2019, Sec. 3.3, "inference") localizes a class by
running the classifier N times with a fresh centre-preserving dropout mask each
time and taking one Grad-CAM-style map per pass, with respect to the feature
map ``x`` before the expansion; the N maps are then aggregated
(:mod:`ficklenet.localization.aggregation`). The backbone is deterministic, so
it runs once; the head (:class:`~ficklenet.models.fickle.FickleHead`) is linear
and followed by global average pooling, so the gradient of a score has a closed
form (``docs/method.md``, "The closed form"). With ``m_o`` the keep
mask of window offset ``o = (a, b)`` (``m_o[c, i, j] = mask[c, i·s+a, j·s+b]``),
``d_o = (a - r, b - r)`` and ``scale = 1 / (h·w·(1-p))``::

    dS_k/dx[c, q] = scale · Σ_o W[k, c, o] · m_o[c, q - d_o]

over the offsets whose window ``q - d_o`` lies inside the map; the centre
offset is always kept, and weighs ``scale`` or ``1 / (h·w)`` as the head's
``scale_centre`` says. Two map formulas (docs/design.md, "Contracts"):

``grad_x_act``
    ``ReLU(Σ_c x[c] ⊙ dS_k/dx[c])``: the per-location gradient, which is what
    changes from one mask to the next.
``gradcam``
    ``ReLU(Σ_c α[c] x[c])`` with ``α[c]`` the spatial mean of ``dS_k/dx[c]``,
    which only depends on how many windows of each (channel, offset) kept their
    element: ``α[k, c] = scale/(h·w) · Σ_o W[k, c, o] · count_o[c]``.

How the closed form is computed
-------------------------------
``grad_x_act`` at pixel ``q`` is a sum over (channel, offset) of
``x[c, q] · W[k, c, o] · bit`` with one independent mask bit per term; only
nonzero ``x[c, q]`` ("entries") and offsets whose window lies inside the map
need a bit. An entry's bits are packed 16 to a word (offsets row-major, centre
skipped), and a table ``T[c, g, byte, k]`` holds the sum of ``W[k, c, o]`` over
the set bits of byte ``g``: a map costs ``(s²-1)/8`` table look-ups per entry
instead of ``s²-1`` multiply-adds, whatever the number of classes. One
``embedding_bag`` call does the look-ups and the x-weighted sum over the
entries of each (mask, pixel). Entries are processed in blocks of whole
channels, so the table rows in use stay in cache.

Sampling (:func:`sample_maps`)
------------------------------
Drawing the masks dominates: N·C·(s²-1)·h·w Bernoulli draws done literally
(1.4e10 for N=200, C=512, 41×41, s=9). Three things make it cheap:

- Bits are drawn only where they change a map (above): zeros of ReLU features
  and windows outside the map draw nothing.
- One uniform 32-bit integer gives 16 keep bits at once: Walker's alias method
  over the 65,536 patterns of 16 independent Bernoulli(1-p) bits
  (:func:`keep_bits_table`, :func:`sample_keep_bits`) — 2 random bits per
  Bernoulli draw instead of 16-32, in a few branch-free integer passes. ``p``
  itself is not quantised; rounding the alias thresholds to 16 bits leaves the
  patterns' distribution exact up to a total variation below 2^-17 per word
  (comparing 16 random bits against ``round(p·2^16)`` per draw would be exact
  up to 2^-16 per bit, 16 times that per word).
- ``gradcam`` needs only the counts ``count_o[c]``, which are Binomial(number
  of windows inside the map, 1-p): they are drawn as such
  (``torch.binomial``), N·C·(s²-1) draws in all.

Random numbers come from ``generator`` (or the device's default generator) on
``x``'s device — torch's Philox on CUDA, mt19937 on CPU, never a copy between
the two — so the same seed, device and ``chunk`` give bit-identical maps.

Speed (``experiments/benchmarks/localization_speed.py``): on CPU the cost is
about 3-5 ns per word of keep bits (mt19937, the alias passes and the
look-ups, one thread), a few seconds for N=200 on a VGG16 41×41×512 map. On
CUDA ``chunk`` masks are processed per call; every step is a batched tensor
operation, with no Python loop over masks or offsets.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ficklenet.choices import Choice
from ficklenet.localization.aggregation import Aggregate, normalize_maps
from ficklenet.models.fickle import FickleHead


class Formula(Choice):
    """The map of one stochastic pass (module docstring): ``grad_x_act`` or ``gradcam``."""

    grad_x_act = "grad_x_act"
    gradcam = "gradcam"


FORMULAS: tuple[str, ...] = tuple(Formula.names())

__all__ = [
    "FORMULAS",
    "Formula",
    "keep_bits_table",
    "sample_keep_bits",
    "sample_maps",
    "stochastic_maps",
]

# Keep words (16 bits) per unit of work; each unit holds a few int32 tensors of
# this size. CPU: measured best of 2^16..2^20 on a 2-core AMD EPYC (2^18:
# 1 MB per tensor); CUDA: large enough to keep the GPU busy (about 1 GB of
# temporaries at 2^26).
_UNIT_CPU = 1 << 18
_UNIT_CUDA = 1 << 26
# Masks per batch when ``chunk`` is None.
_DEFAULT_CHUNK = {"cpu": 8, "cuda": 32}

# Keep bits drawn per random 32-bit integer (the alias method's pattern width).
_WORD = 16
_PATTERNS = 1 << _WORD

# Table rows per byte group: 256 values plus a spare row. With exactly 256 the
# rows of byte value 0 (the most frequent) of all groups lie a power of two apart
# and evict each other from the CPU caches; the spare row makes look-ups 2x faster.
_ROWS = 257

_BITS = torch.tensor([[(v >> t) & 1 for t in range(8)] for v in range(256)], dtype=torch.float64)


# --------------------------------------------------------------------------- keep bits


@functools.lru_cache(maxsize=16)
def _alias_table(keep: float) -> Tensor:
    popcount = np.array([bin(v).count("1") for v in range(_PATTERNS)])
    prob = keep**popcount * (1.0 - keep) ** (_WORD - popcount)
    scaled = prob * _PATTERNS / prob.sum()
    threshold = np.ones(_PATTERNS)
    alias = np.arange(_PATTERNS)
    small = [j for j in range(_PATTERNS) if scaled[j] < 1.0]
    large = [j for j in range(_PATTERNS) if scaled[j] >= 1.0]
    while small and large:
        lo, hi = small.pop(), large.pop()
        threshold[lo], alias[lo] = scaled[lo], hi
        scaled[hi] -= 1.0 - scaled[lo]
        (small if scaled[hi] < 1.0 else large).append(hi)
    # Columns left over hold probability 1 up to rounding; they keep themselves.
    for j in small + large:
        threshold[j], alias[j] = 1.0, j
    thr = np.minimum(np.rint(threshold * _PATTERNS), _PATTERNS - 1).astype(np.int64)
    packed = ((thr - _PATTERNS // 2) << _WORD) | alias
    return torch.from_numpy(packed.astype(np.int32))


def keep_bits_table(keep: float, device: torch.device | str | None = None) -> Tensor:
    """Walker alias table for 16 independent Bernoulli(``keep``) bits.

    65,536 int32 entries; entry ``j`` packs ``(thr_j - 2**15) << 16 | alias_j``:
    pattern ``j`` is accepted with probability ``thr_j / 2**16``, otherwise it
    becomes ``alias_j`` (see :func:`sample_keep_bits`). Rounding the thresholds
    to 16 bits moves at most 2^-33 of probability per column: the patterns'
    distribution is exact up to a total variation below 2^-17.
    """
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep probability must be in [0, 1], got {keep}")
    return _alias_table(float(keep)).to(device)


def sample_keep_bits(u: Tensor, table: Tensor) -> Tensor:
    """16 independent keep bits per element from uniform random int32 ``u``.

    The low 16 bits of ``u`` pick a column ``j``; the high 16 bits, as a signed
    number ``w``, accept it when ``w < thr_j - 2**15``, else the result is
    ``alias_j``. With ``e = table[j]`` (low half: the alias, ≤ 0xFFFF) that
    test is ``(u >> 1 | 0x7FFF) < (e >> 1)``, evaluated as the sign of the
    difference (no overflow: both lie in [-2^30, 2^30)): branch-free integer
    passes, several times faster than ``torch.where`` on CPU. Returns int32 in
    [0, 65536); ``u`` is overwritten.
    """
    column = u & 0xFFFF
    entry = table.index_select(0, column.view(-1)).view_as(u)
    half = torch.bitwise_right_shift(entry, 1)
    take = u.bitwise_right_shift_(1).bitwise_or_(0x7FFF).sub_(half).bitwise_right_shift_(31)
    alias = entry.bitwise_and_(0xFFFF)
    # take is -1 (all ones) where the column is accepted, 0 where its alias is.
    return column.bitwise_xor_(alias).bitwise_and_(take).bitwise_xor_(alias)


def _random_int32(shape: tuple[int, ...], generator: torch.Generator | None, device) -> Tensor:
    """Uniform int32 over all 2^32 values, from ``generator`` on ``device``."""
    numel = math.prod(shape)
    words = torch.empty((numel + 1) // 2, dtype=torch.int64, device=device)
    words.random_(-(2**63), None, generator=generator)  # the full 64-bit range
    return words.view(torch.int32)[:numel].view(shape)


def _draw_keep_words(
    table: Tensor, shape: tuple[int, ...], generator: torch.Generator | None
) -> Tensor:
    """Keep words (int32 in [0, 2^16), 16 independent bits each) of ``shape``."""
    return sample_keep_bits(_random_int32(shape, generator, table.device), table)


def _draw_counts(
    trials: Tensor, keep: float, shape: tuple[int, ...], generator: torch.Generator | None
) -> Tensor:
    """Kept windows per (mask, channel, offset): Binomial(trials[o], keep)."""
    count = trials.to(torch.float32).expand(shape).contiguous()
    prob = torch.full_like(count, keep)
    return torch.binomial(count, prob, generator=generator)


# --------------------------------------------------------------------------- set-up


@dataclass
class _Setup:
    """Everything about one (head, x, classes) that does not depend on the masks."""

    kind: str  # "fickle" or "general"
    x: Tensor  # (C, h, w)
    weight: Tensor  # (K', C, s, s), x's dtype
    s: int
    p: float
    scale: float  # 1 / (h·w·(1-p)) for fickle, 1 / (1-p) for general
    centre_scale: float  # the always-kept centre's: scale, or 1 / (h·w) (fickle)

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.x.shape
        return c, h, w

    @property
    def offsets(self) -> list[tuple[int, int]]:
        """Non-centre window offsets (a, b), row-major, as bits are packed."""
        r = self.s // 2
        return [(a, b) for a in range(self.s) for b in range(self.s) if (a, b) != (r, r)]


def _setup(head: FickleHead, x: Tensor, classes: Sequence[int]) -> _Setup:
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"x must be one image's feature map (1, C, h, w), got {tuple(x.shape)}")
    if x.shape[1] != head.in_channels:
        raise ValueError(f"x has {x.shape[1]} channels, the head expects {head.in_channels}")
    classes = [int(c) for c in classes]
    bad = [c for c in classes if not 0 <= c < head.num_classes]
    if bad:
        raise ValueError(f"classes {bad} are not head outputs (0..{head.num_classes - 1})")
    weight = head.classifier.weight.detach()[classes].to(device=x.device, dtype=x.dtype)
    _, _, h, w = x.shape
    p = float(head.p)
    general = head.dropout == "general"
    scale = 1.0 / (1.0 - p) if general else 1.0 / (h * w * (1.0 - p))
    centre_scale = scale if head.scale_centre else 1.0 / (h * w)
    return _Setup(
        "general" if general else "fickle",
        x.detach()[0],
        weight,
        head.kernel_size,
        p,
        scale,
        centre_scale,
    )


@dataclass
class _Block:
    """Entries lo:hi: the nonzero x of a run of channels, ordered (pixel, channel)."""

    lo: int
    hi: int
    pixels: Tensor  # (R,) int64: the pixels of the block, each once
    starts: Tensor  # (R,) int32: first word of each pixel's entries, from lo·P


@dataclass
class _Plan:
    """The nonzero elements ("entries") of x and their look-up data for
    ``grad_x_act``. Each entry's keep bits are P 16-bit words; word p holds
    offsets 16p..16p+15 (row-major, centre skipped), i.e. bytes 2p and 2p+1."""

    valid: Tensor  # (L, P) int32: bit set when that offset's window is inside the map
    base_lo: Tensor  # (L, P) int32: table row of (channel, byte 2p, value 0)
    base_hi: Tensor  # (L, P) int32: table row of (channel, byte 2p+1, value 0)
    weight: Tensor  # (L, P): the entry's x value, once per word
    table: Tensor  # (C·2P·_ROWS, K'): Σ of W[k, c, o] over the set bits of a byte
    centre: Tensor  # (K', h·w): Σ_c W[k, c, r, r] x[c, q], the always-kept centre
    blocks: list[_Block]
    channel: Tensor  # (L,) int64
    pixel: Tensor  # (L,) int64, q = u·w + v


def _plan(st: _Setup, words_per_unit: int) -> _Plan:
    """Entries in blocks of whole channels, about ``words_per_unit`` words each."""
    c, h, w = st.shape
    q = h * w
    s, r = st.s, st.s // 2
    dev, dt = st.x.device, st.x.dtype
    words = (len(st.offsets) + 15) // 16
    flat = st.x.reshape(c, q)
    nonzero = flat != 0
    per_channel = nonzero.sum(1)
    first = per_channel.cumsum(0) - per_channel
    block_of_channel = first // max(1, words_per_unit // words)
    channel, pixel = torch.nonzero(nonzero, as_tuple=True)
    order = torch.sort(block_of_channel[channel] * q + pixel, stable=True).indices
    channel, pixel = channel[order], pixel[order]
    key = block_of_channel[channel] * q + pixel
    run_key, run_len = torch.unique_consecutive(key, return_counts=True)
    run_start = run_len.cumsum(0) - run_len
    run_block = run_key // q
    _, runs_per_block = torch.unique_consecutive(run_block, return_counts=True)
    blocks, first_run = [], 0
    for n_runs in runs_per_block.tolist():
        last = first_run + n_runs
        lo = int(run_start[first_run])
        hi = int(run_start[last - 1] + run_len[last - 1])
        starts = ((run_start[first_run:last] - lo) * words).to(torch.int32)
        blocks.append(_Block(lo, hi, run_key[first_run:last] % q, starts))
        first_run = last
    value = flat[channel, pixel]
    p = torch.arange(words, device=dev, dtype=torch.int32)
    base_lo = (channel.to(torch.int32)[:, None] * (2 * words) + 2 * p) * _ROWS
    k = st.weight.shape[0]
    w_off = st.weight.reshape(k, c, s * s)[:, :, [a * s + b for a, b in st.offsets]]
    w_off = F.pad(w_off, (0, 16 * words - len(st.offsets)))  # odd byte count: a zero byte
    bits = _BITS.to(device=dev, dtype=dt)
    table = torch.einsum("vt,kcgt->cgvk", bits, w_off.reshape(k, c, 2 * words, 8))
    table = F.pad(table, (0, 0, 0, _ROWS - 256))  # (C, 2P, _ROWS, K'), spare rows unused
    return _Plan(
        valid=_valid_words(st).index_select(0, pixel),
        base_lo=base_lo,
        base_hi=base_lo + _ROWS,
        weight=value[:, None].expand(-1, words).contiguous(),
        table=table.reshape(-1, k),
        centre=st.weight[:, :, r, r] @ flat,
        blocks=blocks,
        channel=channel,
        pixel=pixel,
    )


def _valid_words(st: _Setup) -> Tensor:
    """(h·w, P) int32: bit t of word p set when offset 16p+t at pixel q reads
    from a window inside the map (window ``q - d_o``)."""
    _, h, w = st.shape
    r = st.s // 2
    dev = st.x.device
    da = torch.tensor([a - r for a, _ in st.offsets], device=dev)
    db = torch.tensor([b - r for _, b in st.offsets], device=dev)
    u = torch.arange(h, device=dev).repeat_interleave(w)[:, None]
    v = torch.arange(w, device=dev).repeat(h)[:, None]
    inside = (u - da >= 0) & (u - da < h) & (v - db >= 0) & (v - db < w)
    words = (len(st.offsets) + 15) // 16
    inside = F.pad(inside, (0, 16 * words - len(st.offsets)))
    weights = 1 << torch.arange(16, device=dev, dtype=torch.int32)
    return (inside.view(h * w, words, 16).to(torch.int32) * weights).sum(-1, dtype=torch.int32)


def _window_counts(st: _Setup) -> Tensor:
    """Windows whose read of offset o falls inside the map, (O,) int64."""
    _, h, w = st.shape
    r = st.s // 2
    return torch.tensor(
        [(h - abs(a - r)) * (w - abs(b - r)) for a, b in st.offsets], device=st.x.device
    )


# --------------------------------------------------------------------------- maps


def _add_block(plan: _Plan, blk: _Block, keep: Tensor, acc: Tensor) -> None:
    """acc[b, q] += Σ over the block's entries at q of x · (kept non-centre weights).

    ``keep`` (B, hi-lo, P) int32 keep words (overwritten); bits of windows
    outside the map are ignored. Each (mask, pixel) is one bag of
    ``embedding_bag``: look-ups of the low and high bytes of its entries' words,
    weighted by x. Pixels are distinct within a block, so the scatter into
    ``acc`` never adds twice to one place (deterministic on CUDA too).
    """
    b, n_ent, words = keep.shape
    keep.bitwise_and_(plan.valid[blk.lo : blk.hi])
    lo_bytes = torch.bitwise_and(keep, 0xFF).add_(plan.base_lo[blk.lo : blk.hi])
    hi_bytes = keep.bitwise_right_shift_(8).add_(plan.base_hi[blk.lo : blk.hi])
    weight = plan.weight[blk.lo : blk.hi].expand(b, n_ent, words).reshape(-1)
    starts = blk.starts
    if b > 1:
        shift = torch.arange(b, device=starts.device, dtype=torch.int32)[:, None] * (n_ent * words)
        starts = (starts + shift).view(-1)
    sums = F.embedding_bag(
        lo_bytes.view(-1), plan.table, starts, mode="sum", per_sample_weights=weight
    )
    sums += F.embedding_bag(
        hi_bytes.view(-1), plan.table, starts, mode="sum", per_sample_weights=weight
    )
    acc.index_add_(1, blk.pixels, sums.view(b, len(blk.pixels), -1))


def _finish_grad_x_act(st: _Setup, plan: _Plan, acc: Tensor) -> Tensor:
    """(B, h·w, K') sums → raw maps (B, K', h, w)."""
    _, h, w = st.shape
    maps = (acc.transpose(1, 2) * st.scale).add_(plan.centre, alpha=st.centre_scale).clamp_min_(0)
    return maps.view(acc.shape[0], -1, h, w)


def _gradcam_from_counts(st: _Setup, counts: Tensor) -> Tensor:
    """Raw gradcam maps (B, K', h, w) from kept-window counts (B, C, O)."""
    c, h, w = st.shape
    s, r = st.s, st.s // 2
    k = st.weight.shape[0]
    w_off = st.weight.reshape(k, c, s * s)[:, :, [a * s + b for a, b in st.offsets]]
    alpha = torch.einsum("kco,bco->bkc", w_off, counts.to(st.x.dtype))
    alpha = alpha * (st.scale / (h * w)) + st.weight[:, :, r, r] * st.centre_scale
    maps = torch.einsum("bkc,cq->bkq", alpha, st.x.reshape(c, h * w)).clamp_min_(0)
    return maps.view(-1, k, h, w)


def _general_maps(st: _Setup, masks: Tensor, formula: str) -> Tensor:
    """Raw maps (B, K', h, w) for general dropout, masks (B, C, h, w) bool.

    dS_k/dx = m/(1-p) ⊙ A_k, with A_k the adjoint of the s×s conv (zero
    padding) applied to the constant 1/(h·w) of the average pooling.
    """
    c, h, w = st.shape
    k = st.weight.shape[0]
    ones = torch.eye(k, dtype=st.x.dtype, device=st.x.device)[:, :, None, None] / (h * w)
    adjoint = F.conv_transpose2d(ones.expand(k, k, h, w), st.weight, padding=st.s // 2)
    grad = adjoint.reshape(k, c, h * w) * st.scale  # (K', C, q), still to be masked
    m = masks.reshape(-1, c, h * w).to(st.x.dtype)
    x = st.x.reshape(c, h * w)
    if formula == "grad_x_act":
        maps = torch.einsum("bcq,kcq->bkq", m, grad * x)
    else:
        alpha = torch.einsum("bcq,kcq->bkc", m, grad) / (h * w)
        maps = torch.einsum("bkc,cq->bkq", alpha, x)
    return maps.clamp_min_(0).view(-1, k, h, w)


def _unit(device: torch.device, chunk: int) -> tuple[int, int]:
    """(masks, keep words) per unit of work on ``device``.

    On CPU one mask at a time: the x weights of a block are then a slice, not
    a copy, and a unit stays in cache. On CUDA ``chunk`` masks at a time, so
    each kernel has enough work.
    """
    if device.type == "cuda":
        return chunk, _UNIT_CUDA
    return 1, _UNIT_CPU


def _check_formula(formula: str) -> None:
    Formula.parse(formula, "formula")


def stochastic_maps(
    head: FickleHead,
    x: Tensor,
    classes: Sequence[int],
    masks: Tensor,
    formula: Formula = "grad_x_act",
    chunk: int = 16,
) -> Tensor:
    """Raw localization maps for given dropout masks, in closed form.

    Args:
        head: the trained :class:`~ficklenet.models.fickle.FickleHead`.
        x: one image's feature map (1, C, h, w).
        classes: head outputs (0-based) to map.
        masks: bool keep-masks (N, ...) in the head's mask layout
            (:meth:`FickleHead.mask_shape` without its batch: (C, s·h, s·w) for
            ``fickle``, (C, h, w) for ``general`` dropout); the centre of every
            block counts as kept whatever the mask says.
        formula: ``grad_x_act`` or ``gradcam`` (module docstring).
        chunk: masks processed together (bounds memory).

    Returns:
        (N, len(classes), h, w) maps in x's dtype, not normalised; map n of
        class c is what autograd gives through ``head.forward(x, masks[n:n+1])``.
    """
    _check_formula(formula)
    st = _setup(head, x, classes)
    c, h, w = st.shape
    expected = tuple(head.mask_shape(x)[1:])
    if masks.dim() != 4 or tuple(masks.shape[1:]) != expected:
        raise ValueError(
            f"masks must be (N, {', '.join(map(str, expected))}), got {tuple(masks.shape)}"
        )
    if masks.dtype != torch.bool:
        raise TypeError(f"masks must be bool, got {masks.dtype}")
    masks = masks.to(x.device)
    n, k = masks.shape[0], len(st.weight)
    out = x.new_zeros(n, k, h, w)
    if n == 0 or k == 0:
        return out
    if st.kind == "general":
        for n0 in range(0, n, chunk):
            out[n0 : n0 + chunk] = _general_maps(st, masks[n0 : n0 + chunk], formula)
        return out
    s, r = st.s, st.s // 2
    if formula == "gradcam":
        for n0 in range(0, n, chunk):
            out[n0 : n0 + chunk] = _gradcam_from_counts(
                st, _mask_counts(st, masks[n0 : n0 + chunk])
            )
        return out
    plan = _plan(st, _unit(x.device, chunk)[1] // chunk)
    # Where each entry's bit of offset (a, b) sits in the expanded mask: window
    # (u - da, v - db), element (a, b) of its block.
    da = torch.tensor([a - r for a, _ in st.offsets], device=x.device)
    db = torch.tensor([b - r for _, b in st.offsets], device=x.device)
    u, v = (plan.pixel // w)[:, None], (plan.pixel % w)[:, None]
    i, j = (u - da).clamp(0, h - 1), (v - db).clamp(0, w - 1)
    where = plan.channel[:, None] * (s * h * s * w) + (i * s + da + r) * (s * w) + j * s + db + r
    words = plan.valid.shape[1]
    where = F.pad(where, (0, 16 * words - len(st.offsets)))  # padding bits: invalid anyway
    weights = 1 << torch.arange(16, device=x.device, dtype=torch.int32)
    for n0 in range(0, n, chunk):
        part = masks[n0 : n0 + chunk].reshape(-1, c * s * h * s * w)
        bits = part[:, where].view(part.shape[0], -1, words, 16).to(torch.int32)
        keep = (bits * weights).sum(-1, dtype=torch.int32)
        acc = x.new_zeros(part.shape[0], h * w, k)
        for blk in plan.blocks:
            _add_block(plan, blk, keep[:, blk.lo : blk.hi].contiguous(), acc)
        out[n0 : n0 + chunk] = _finish_grad_x_act(st, plan, acc)
    return out


def _mask_counts(st: _Setup, masks: Tensor) -> Tensor:
    """Kept windows per (mask, channel, offset) whose read is inside the map."""
    _, h, w = st.shape
    s, r = st.s, st.s // 2
    counts = []
    for a, b in st.offsets:
        da, db = a - r, b - r
        m = masks[:, :, a::s, b::s]
        m = m[:, :, max(0, -da) : min(h, h - da), max(0, -db) : min(w, w - db)]
        counts.append(m.sum((2, 3)))
    return torch.stack(counts, dim=-1)


@overload
def sample_maps(
    head: FickleHead,
    x: Tensor,
    classes: Sequence[int],
    n: int,
    generator: torch.Generator | None = ...,
    formula: Formula = ...,
    chunk: int | None = ...,
    aggregate: Aggregate = ...,
    return_all: Literal[False] = ...,
) -> Tensor: ...


@overload
def sample_maps(
    head: FickleHead,
    x: Tensor,
    classes: Sequence[int],
    n: int,
    generator: torch.Generator | None = ...,
    formula: Formula = ...,
    chunk: int | None = ...,
    aggregate: Aggregate = ...,
    *,
    return_all: Literal[True],
) -> tuple[Tensor, Tensor]: ...


def sample_maps(
    head: FickleHead,
    x: Tensor,
    classes: Sequence[int],
    n: int,
    generator: torch.Generator | None = None,
    formula: Formula = "grad_x_act",
    chunk: int | None = None,
    aggregate: Aggregate = "max",
    return_all: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Draw N dropout masks, make their maps and aggregate them.

    Masks are drawn ``chunk`` at a time and never materialised (module
    docstring): only the random bits that change a map are drawn.

    Args:
        head: the trained head; its ``p``, ``kernel_size`` and ``dropout`` are used.
        x: one image's feature map (1, C, h, w).
        classes: head outputs (0-based) to map.
        n: number of stochastic passes N (200 in the paper [recalled]).
        generator: random generator on x's device (the device's default when None).
        formula: ``grad_x_act`` or ``gradcam``.
        chunk: masks per batch (None: 8 on CPU, 32 on CUDA); on CUDA also the
            masks drawn per kernel call, on CPU masks are drawn one at a time.
            The same seed, device and chunk give bit-identical maps; another
            chunk gives other draws from the same distribution.
        aggregate: ``max`` (union, the paper) or ``mean`` of the max-normalised maps.
        return_all: also return all N normalised maps (N, len(classes), h, w).

    Returns:
        The aggregated map (len(classes), h, w) in x's dtype — and the N
        normalised maps when ``return_all``.
    """
    _check_formula(formula)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    st = _setup(head, x, classes)
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(f"generator is on {generator.device}, x on {x.device}")
    Aggregate.parse(aggregate, "aggregate")
    chunk = chunk or _DEFAULT_CHUNK.get(x.device.type, 8)
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    _, h, w = st.shape
    k = len(st.weight)
    keep = 1.0 - st.p
    combined = x.new_zeros(k, h, w)
    if k == 0:
        return (combined, x.new_zeros(n, 0, h, w)) if return_all else combined
    every = [] if return_all else None
    if st.kind == "fickle" and formula == "grad_x_act":
        per_unit, unit_words = _unit(x.device, chunk)
        plan = _plan(st, unit_words // per_unit)
        table = keep_bits_table(keep, x.device)
        words = plan.valid.shape[1]
    elif st.kind == "fickle":
        trials = _window_counts(st)
    for n0 in range(0, n, chunk):
        b = min(chunk, n - n0)
        if st.kind == "general":
            raw = _general_maps(st, _draw_bits(keep, (b, *st.shape), generator, x.device), formula)
        elif formula == "gradcam":
            counts = _draw_counts(trials, keep, (b, st.shape[0], len(trials)), generator)
            raw = _gradcam_from_counts(st, counts)
        else:
            acc = x.new_zeros(b, h * w, k)
            for m0 in range(0, b, per_unit):
                part = acc[m0 : m0 + per_unit]
                for blk in plan.blocks:
                    shape = (len(part), blk.hi - blk.lo, words)
                    _add_block(plan, blk, _draw_keep_words(table, shape, generator), part)
            raw = _finish_grad_x_act(st, plan, acc)
        normed = normalize_maps(raw)
        if aggregate == "max":
            combined = torch.maximum(combined, normed.amax(0))
        else:
            combined += normed.sum(0)
        if every is not None:
            every.append(normed)
    if aggregate == "mean":
        combined /= n
    if every is not None:
        return combined, torch.cat(every)
    return combined


def _draw_bits(
    keep: float, shape: tuple[int, ...], generator: torch.Generator | None, device
) -> Tensor:
    """Independent Bernoulli(keep) bools of ``shape`` (general dropout's masks)."""
    numel = math.prod(shape)
    table = keep_bits_table(keep, device)
    words = _draw_keep_words(table, ((numel + 15) // 16,), generator)
    shifts = torch.arange(16, device=device, dtype=torch.int32)
    bits = (words[:, None] >> shifts) & 1
    return bits.view(-1)[:numel].view(shape).bool()
