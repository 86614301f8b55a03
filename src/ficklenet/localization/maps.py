"""FickleNet's localization maps from N stochastic passes: the entry points.

FickleNet (Lee et al., CVPR 2019, Sec. 3.3, "inference") localizes a class by
running the classifier N times with a fresh centre-preserving dropout mask each
time and taking one Grad-CAM-style map per pass; the N maps are then aggregated
(:mod:`ficklenet.localization.aggregation`). Nothing here runs the head: its
gradient has a closed form (``docs/method.md``, "The closed form"), computed in
:mod:`ficklenet.localization.closed_form`, which also says what the two
formulas, ``grad_x_act`` and ``gradcam``, are.

- :func:`stochastic_maps`: the raw maps of given masks, which are what autograd
  through the head gives.
- :func:`sample_maps`: draw N masks and aggregate their maps. The masks are
  drawn ``chunk`` at a time and never materialised: only the random bits that
  change a map are drawn (:mod:`ficklenet.localization.keep_bits`) — keep words
  for the nonzero entries of ``x`` whose windows lie inside the map
  (``grad_x_act``), Binomial counts of kept windows (``gradcam``), or plain
  bits (general dropout).

Both go through :class:`_Maps`, one object per (set-up, formula) that makes
raw maps from given masks or from ``b`` masks' worth of fresh random draws.

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
from collections.abc import Sequence
from typing import Literal, overload

import torch
from torch import Tensor

from ficklenet.choices import Choice
from ficklenet.localization import closed_form, keep_bits
from ficklenet.localization.aggregation import Aggregate, normalize_maps
from ficklenet.localization.keep_bits import keep_bits_table, sample_keep_bits
from ficklenet.models.fickle import FickleHead


class Formula(Choice):
    """The map of one stochastic pass (:mod:`~ficklenet.localization.closed_form`):
    ``grad_x_act`` or ``gradcam``."""

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

# Masks per batch when ``chunk`` is None.
_DEFAULT_CHUNK = {"cpu": 8, "cuda": 32}


# --------------------------------------------------------------------------- one pass


class _Maps:
    """Raw maps (B, K', h, w) of one set-up and formula, from given masks
    (:meth:`of_masks`) or from ``b`` masks' worth of random draws (:meth:`draw`).

    :meth:`of` picks the subclass: general dropout, or fickle dropout with
    ``gradcam`` or ``grad_x_act``.
    """

    def __init__(self, st: closed_form._Setup, formula: str) -> None:
        self.st = st
        self.formula = formula
        self.keep = 1.0 - st.p

    @staticmethod
    def of(st: closed_form._Setup, formula: str, per_block: int) -> _Maps:
        """The maps of ``st`` and ``formula``; ``per_block``: masks whose keep
        words go through each block of the packing plan together."""
        if st.kind == "general":
            return _GeneralMaps(st, formula)
        if formula == "gradcam":
            return _GradcamMaps(st, formula)
        return _GradXActMaps(st, formula, per_block)

    def of_masks(self, masks: Tensor) -> Tensor:
        """Raw maps of bool masks (B, ...) in the head's mask layout."""
        raise NotImplementedError

    def draw(self, b: int, generator: torch.Generator | None) -> Tensor:
        """Raw maps of ``b`` fresh masks, drawing only what changes them."""
        raise NotImplementedError


class _GeneralMaps(_Maps):
    """General dropout: one keep bit per element of x, drawn as such."""

    def of_masks(self, masks: Tensor) -> Tensor:
        return closed_form._general_maps(self.st, masks, self.formula)

    def draw(self, b: int, generator: torch.Generator | None) -> Tensor:
        shape = (b, *self.st.shape)
        return self.of_masks(keep_bits._draw_bits(self.keep, shape, generator, self.st.x.device))


class _GradcamMaps(_Maps):
    """Fickle dropout, ``gradcam``: only the kept-window counts matter."""

    @functools.cached_property
    def trials(self) -> Tensor:
        """Windows per offset whose read falls inside the map, (O,)."""
        return closed_form._window_counts(self.st)

    def of_masks(self, masks: Tensor) -> Tensor:
        counts = closed_form._mask_counts(self.st, masks)
        return closed_form._gradcam_from_counts(self.st, counts)

    def draw(self, b: int, generator: torch.Generator | None) -> Tensor:
        shape = (b, self.st.shape[0], len(self.trials))
        counts = keep_bits._draw_counts(self.trials, self.keep, shape, generator)
        return closed_form._gradcam_from_counts(self.st, counts)


class _GradXActMaps(_Maps):
    """Fickle dropout, ``grad_x_act``: keep words of the plan's entries, summed
    block by block (``per_block`` masks at a time)."""

    def __init__(self, st: closed_form._Setup, formula: str, per_block: int) -> None:
        super().__init__(st, formula)
        self.per_block = per_block
        unit_words = closed_form._unit(st.x.device, per_block)[1]
        self.plan = closed_form._plan(st, unit_words // per_block)

    @functools.cached_property
    def sources(self) -> Tensor:
        """Where each entry's bits sit in a given mask."""
        return closed_form._bit_sources(self.st, self.plan)

    @functools.cached_property
    def table(self) -> Tensor:
        """The alias table of the keep bits."""
        return keep_bits_table(self.keep, self.st.x.device)

    def _sums(self, b: int) -> Tensor:
        _, h, w = self.st.shape
        return self.st.x.new_zeros(b, h * w, len(self.st.weight))

    def of_masks(self, masks: Tensor) -> Tensor:
        plan = self.plan
        keep = closed_form._mask_words(self.st, self.sources, masks)
        acc = self._sums(len(masks))
        for blk in plan.blocks:
            closed_form._add_block(plan, blk, keep[:, blk.lo : blk.hi].contiguous(), acc)
        return closed_form._finish_grad_x_act(self.st, plan, acc)

    def draw(self, b: int, generator: torch.Generator | None) -> Tensor:
        plan = self.plan
        words = plan.valid.shape[1]
        acc = self._sums(b)
        for m0 in range(0, b, self.per_block):
            part = acc[m0 : m0 + self.per_block]
            for blk in plan.blocks:
                shape = (len(part), blk.hi - blk.lo, words)
                keep = keep_bits._draw_keep_words(self.table, shape, generator)
                closed_form._add_block(plan, blk, keep, part)
        return closed_form._finish_grad_x_act(self.st, plan, acc)


# --------------------------------------------------------------------------- entry points


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
        formula: ``grad_x_act`` or ``gradcam``
            (:mod:`~ficklenet.localization.closed_form`).
        chunk: masks processed together (bounds memory).

    Returns:
        (N, len(classes), h, w) maps in x's dtype (float32 for half precision), not
        normalised; map n of class c is what autograd gives through
        ``head.forward(x, masks[n:n+1])``.
    """
    _check_formula(formula)
    st = closed_form._setup(head, x, classes)
    _, h, w = st.shape
    expected = tuple(head.mask_shape(x)[1:])
    if masks.dim() != 4 or tuple(masks.shape[1:]) != expected:
        raise ValueError(
            f"masks must be (N, {', '.join(map(str, expected))}), got {tuple(masks.shape)}"
        )
    if masks.dtype != torch.bool:
        raise TypeError(f"masks must be bool, got {masks.dtype}")
    masks = masks.to(x.device)
    n, k = masks.shape[0], len(st.weight)
    out = st.x.new_zeros(n, k, h, w)  # x's dtype; float32 for half-precision x
    if n == 0 or k == 0:
        return out
    maps = _Maps.of(st, formula, per_block=chunk)
    for n0 in range(0, n, chunk):
        out[n0 : n0 + chunk] = maps.of_masks(masks[n0 : n0 + chunk])
    return out


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
        The aggregated map (len(classes), h, w) in x's dtype (float32 for half
        precision) — and the N normalised maps when ``return_all``.
    """
    _check_formula(formula)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    st = closed_form._setup(head, x, classes)
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(f"generator is on {generator.device}, x on {x.device}")
    Aggregate.parse(aggregate, "aggregate")
    chunk = chunk or _DEFAULT_CHUNK.get(x.device.type, 8)
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    _, h, w = st.shape
    k = len(st.weight)
    combined = st.x.new_zeros(k, h, w)  # x's dtype; float32 for half-precision x
    if k == 0:
        return (combined, st.x.new_zeros(n, 0, h, w)) if return_all else combined
    maps = _Maps.of(st, formula, per_block=closed_form._unit(x.device, chunk)[0])
    every = []
    for n0 in range(0, n, chunk):
        normed = normalize_maps(maps.draw(min(chunk, n - n0), generator))
        if aggregate == "max":
            combined = torch.maximum(combined, normed.amax(0))
        else:
            combined += normed.sum(0)
        if return_all:
            every.append(normed)
    if aggregate == "mean":
        combined /= n
    return (combined, torch.cat(every)) if return_all else combined
