"""FickleNet's localization maps in closed form: set-up, packing plan, formulas.

FickleNet (Lee et al., CVPR 2019, Sec. 3.3, "inference") localizes a class by
running the classifier N times with a fresh centre-preserving dropout mask each
time and taking one Grad-CAM-style map per pass, with respect to the feature
map ``x`` before the expansion. The backbone is deterministic, so it runs once;
the head (:class:`~ficklenet.models.fickle.FickleHead`) is linear and followed
by global average pooling, so the gradient of a score has a closed form
(``docs/method.md``, "The closed form"), computed here for one mask at a time
or a batch of them. With ``m_o`` the keep mask of window offset ``o = (a, b)``
(``m_o[c, i, j] = mask[c, i·s+a, j·s+b]``), ``d_o = (a - r, b - r)`` and
``scale = 1 / (h·w·(1-p))``::

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
    element: ``α[k, c] = scale/(h·w) · Σ_o W[k, c, o] · count_o[c]``
    (:func:`_gradcam_from_counts`).

General dropout (one bit per element of ``x``, no expansion) has its own,
simpler closed form (:func:`_general_maps`).

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
entries of each (mask, pixel) (:func:`_add_block`). Entries are processed in
blocks of whole channels (:func:`_plan`), so the table rows in use stay in
cache. The keep words come from given masks (:func:`_mask_words`) or are drawn
directly (:mod:`ficklenet.localization.keep_bits`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ficklenet.models.fickle import FickleHead

# Keep words (16 bits) per unit of work; each unit holds a few int32 tensors of
# this size. CPU: measured best of 2^16..2^20 on a 2-core AMD EPYC (2^18:
# 1 MB per tensor); CUDA: as many as the memory budget allows (2^26 words, a
# GPU kept busy, at the default 1 GiB).
_UNIT_CPU = 1 << 18
# Bytes of temporaries per keep word of a unit: the word, its two byte indices
# and its x weight (4 bytes each).
_BYTES_PER_WORD = 16


# Table rows per byte group: 256 values plus a spare row. With exactly 256 the
# rows of byte value 0 (the most frequent) of all groups lie a power of two apart
# and evict each other from the CPU caches; the spare row makes look-ups 2x faster.
_ROWS = 257

_BITS = torch.tensor([[(v >> t) & 1 for t in range(8)] for v in range(256)], dtype=torch.float64)


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
    # Half-precision features (a backbone under autocast) are summed in float32: a
    # map adds up to C·(s²-1) terms per pixel, too many for bf16's 8-bit mantissa.
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
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


# --------------------------------------------------------------------------- packing plan


def _unit(device: torch.device, chunk: int, memory_bytes: int) -> tuple[int, int]:
    """(masks, keep words) per unit of work on ``device``.

    On CPU one mask at a time: the x weights of a block are then a slice, not
    a copy, and a unit stays in cache. On CUDA ``chunk`` masks at a time, so
    each kernel has enough work, and as many words as ``memory_bytes`` holds.
    """
    fits = max(1, memory_bytes // _BYTES_PER_WORD)
    if device.type == "cuda":
        return chunk, fits
    return 1, min(_UNIT_CPU, fits)


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


def _bit_sources(st: _Setup, plan: _Plan) -> Tensor:
    """(L, 16P) int64: where each entry's keep bit sits in one expanded mask,
    flattened from (C, s·h, s·w). Offset (a, b) of the entry at pixel (u, v)
    is element (a, b) of window (u - da, v - db); bits of windows outside the
    map (and padding bits) point anywhere inside the mask: they are invalid."""
    _, h, w = st.shape
    s, r = st.s, st.s // 2
    dev = st.x.device
    da = torch.tensor([a - r for a, _ in st.offsets], device=dev)
    db = torch.tensor([b - r for _, b in st.offsets], device=dev)
    u, v = (plan.pixel // w)[:, None], (plan.pixel % w)[:, None]
    i, j = (u - da).clamp(0, h - 1), (v - db).clamp(0, w - 1)
    where = plan.channel[:, None] * (s * h * s * w) + (i * s + da + r) * (s * w) + j * s + db + r
    words = plan.valid.shape[1]
    return F.pad(where, (0, 16 * words - len(st.offsets)))  # padding bits: invalid anyway


def _mask_words(st: _Setup, sources: Tensor, masks: Tensor) -> Tensor:
    """Keep words (B, L, P) int32 of expanded masks (B, C, s·h, s·w) bool,
    with ``sources`` from :func:`_bit_sources`."""
    c, h, w = st.shape
    s = st.s
    part = masks.reshape(-1, c * s * h * s * w)
    bits = part[:, sources].view(part.shape[0], sources.shape[0], -1, 16).to(torch.int32)
    weights = 1 << torch.arange(16, device=st.x.device, dtype=torch.int32)
    return (bits * weights).sum(-1, dtype=torch.int32)


# --------------------------------------------------------------------------- grad_x_act


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


# --------------------------------------------------------------------------- gradcam


def _window_counts(st: _Setup) -> Tensor:
    """Windows whose read of offset o falls inside the map, (O,) int64."""
    _, h, w = st.shape
    r = st.s // 2
    return torch.tensor(
        [(h - abs(a - r)) * (w - abs(b - r)) for a, b in st.offsets], device=st.x.device
    )


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


def _gradcam_from_counts(st: _Setup, counts: Tensor) -> Tensor:
    """Raw gradcam maps (B, K', h, w) from kept-window counts (B, C, O)."""
    _, h, w = st.shape
    return _gradcam_stacked([st], counts[None])[0].view(-1, st.weight.shape[0], h, w)


def gradcam_bytes_per_mask(channels: int, offsets: int, classes: int, cells: int) -> int:
    """Temporaries of one mask's gradcam map (:func:`_gradcam_stacked` and the
    normalisation after it), float32: the kept-window counts, stacked and
    permuted for the product (4·C·O counting the draw's own), the channel
    weights with their scaled copy (2·K'·C), and the raw map with the
    normalisation's three temporaries (4·K'·h·w)."""
    return 4 * (4 * channels * offsets + 2 * classes * channels + 4 * classes * cells)


def _gradcam_stacked(sts: Sequence[_Setup], counts: Tensor) -> Tensor:
    """Raw gradcam maps of several images at once, (I, B, K, H·W), from their
    kept-window counts (I, B, C, O).

    Image i's classes fill the first K'_i of K = max K'_i (the rest are zero
    maps) and its map the top-left h_i×w_i of the largest grid H×W (zero
    elsewhere): two batched products make every image's B maps.
    """
    c = sts[0].shape[0]
    s, r = sts[0].s, sts[0].s // 2
    k = max(st.weight.shape[0] for st in sts)
    big_h = max(st.shape[1] for st in sts)
    big_w = max(st.shape[2] for st in sts)
    picks = [a * s + b for a, b in sts[0].offsets]
    w_off, centre, xs, factor = [], [], [], []
    for st in sts:
        _, h, w = st.shape
        weight = F.pad(st.weight, (0, 0, 0, 0, 0, 0, 0, k - st.weight.shape[0]))
        w_off.append(weight.reshape(k, c, s * s)[:, :, picks])
        centre.append(weight[:, :, r, r] * st.centre_scale)
        xs.append(F.pad(st.x, (0, big_w - w, 0, big_h - h)).reshape(c, big_h * big_w))
        factor.append(st.scale / (h * w))
    x0 = sts[0].x
    scale = torch.tensor(factor, dtype=x0.dtype, device=x0.device)[:, None, None, None]
    alpha = torch.einsum("ikco,ibco->ibkc", torch.stack(w_off), counts.to(x0.dtype))
    alpha = alpha * scale + torch.stack(centre)[:, None]
    return torch.einsum("ibkc,icq->ibkq", alpha, torch.stack(xs)).clamp_min_(0)


# --------------------------------------------------------------------------- general dropout


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
