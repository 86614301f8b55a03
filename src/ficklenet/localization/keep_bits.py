"""The random bits behind FickleNet's stochastic maps: keep bits, counts, masks.

FickleNet (Lee et al., CVPR 2019, Sec. 3.3, "inference") draws N
centre-preserving dropout masks, each element kept with probability
``1 - p``. Drawing them literally costs N·C·(s²-1)·h·w Bernoulli draws
(1.4e10 for N=200, C=512, 41×41, s=9); :mod:`ficklenet.localization.maps`
draws only what changes a map (``docs/method.md``, "The closed form"), with
the samplers here:

- :func:`sample_keep_bits` turns one uniform 32-bit integer into 16 keep bits
  at once: Walker's alias method over the 65,536 patterns of 16 independent
  Bernoulli(1-p) bits (:func:`keep_bits_table`) — 2 random bits per Bernoulli
  draw instead of 16-32, in a few branch-free integer passes. ``p`` itself is
  not quantised; rounding the alias thresholds to 16 bits leaves the patterns'
  distribution exact up to a total variation below 2^-17 per word (comparing
  16 random bits against ``round(p·2^16)`` per draw would be exact up to 2^-16
  per bit, 16 times that per word).
- ``gradcam`` needs only how many windows of each (channel, offset) kept their
  element, a Binomial(number of windows inside the map, 1-p): it is drawn as
  such (``torch.binomial``), N·C·(s²-1) draws in all.
- General dropout's masks, (C, h, w) bools, are unpacked from keep words.

Random numbers come from ``generator`` (or the device's default generator) on
the tensors' device — torch's Philox on CUDA, mt19937 on CPU, never a copy
between the two — so the same seed, device and shapes give the same bits.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["keep_bits_table", "sample_keep_bits"]

# Keep bits drawn per random 32-bit integer (the alias method's pattern width).
_WORD = 16
_PATTERNS = 1 << _WORD


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
