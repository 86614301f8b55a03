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
- :func:`sample_maps_many`: the same for several images, each from its own
  generator. With ``gradcam`` the N maps of as many images as the memory budget
  holds are made together in two batched products; one image's ``grad_x_act``
  passes already fill a GPU, so those run image by image.

Both go through :class:`_Maps`, one object per (set-up, formula) that makes
raw maps from given masks or from ``b`` masks' worth of fresh random draws.

Random numbers come from ``generator`` (or the device's default generator) on
``x``'s device — torch's Philox on CUDA, mt19937 on CPU, never a copy between
the two. Draws are made per image, ``chunk`` masks per call, in the same order
whether or not images are batched, so the same seed, device, ``chunk`` and
``memory_mb`` (which sets the ``grad_x_act`` work unit) give the same draws;
maps are then bit-identical for the same images batched the same way, and
equal to rounding otherwise.

Speed (``experiments/benchmarks/localization_speed.py``): on CPU the cost is
about 3-5 ns per word of keep bits (mt19937, the alias passes and the
look-ups, one thread), a few seconds for N=200 on a VGG16 41×41×512 map. On
CUDA ``chunk`` masks are processed per call; every step is a batched tensor
operation, with no Python loop over masks or offsets.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar, overload

import torch
from torch import Tensor

from ficklenet.choices import Aggregate, Formula
from ficklenet.localization import closed_form, keep_bits
from ficklenet.localization.aggregation import normalize_maps
from ficklenet.localization.keep_bits import keep_bits_table, sample_keep_bits
from ficklenet.models.fickle import FickleHead

FORMULAS: tuple[str, ...] = tuple(Formula.names())

__all__ = [
    "FORMULAS",
    "Formula",
    "keep_bits_table",
    "sample_keep_bits",
    "sample_maps",
    "sample_maps_many",
    "stochastic_maps",
]

# Masks per random-number call when ``chunk`` is None.
_DEFAULT_CHUNK = {"cpu": 8, "cuda": 32}
# Temporaries one call of the map arithmetic may hold when ``memory_mb`` is None.
DEFAULT_MEMORY_MB = 1024

_T = TypeVar("_T")


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
    def of(st: closed_form._Setup, formula: str, chunk: int, memory_bytes: int) -> _Maps:
        """The maps of ``st`` and ``formula``; ``chunk`` masks per call, work
        units of at most ``memory_bytes`` of temporaries (``grad_x_act``)."""
        if st.kind == "general":
            return _GeneralMaps(st, formula)
        if formula == "gradcam":
            return _GradcamMaps(st, formula)
        return _GradXActMaps(st, formula, chunk, memory_bytes)

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

    def draw_counts(self, b: int, generator: torch.Generator | None) -> Tensor:
        """Kept-window counts (b, C, O) of ``b`` fresh masks."""
        shape = (b, self.st.shape[0], len(self.trials))
        return keep_bits._draw_counts(self.trials, self.keep, shape, generator)

    def draw(self, b: int, generator: torch.Generator | None) -> Tensor:
        return closed_form._gradcam_from_counts(self.st, self.draw_counts(b, generator))


class _GradXActMaps(_Maps):
    """Fickle dropout, ``grad_x_act``: keep words of the plan's entries, summed
    block by block (``per_block`` masks at a time, :func:`closed_form._unit`)."""

    def __init__(self, st: closed_form._Setup, formula: str, chunk: int, memory_bytes: int) -> None:
        super().__init__(st, formula)
        self.per_block, unit_words = closed_form._unit(st.x.device, chunk, memory_bytes)
        self.plan = closed_form._plan(st, max(1, unit_words // self.per_block))

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
    maps = _Maps.of(st, formula, chunk, _budget(None))
    with torch.autocast(x.device.type, enabled=False):  # float32 sums (see _sample)
        for n0 in range(0, n, chunk):
            out[n0 : n0 + chunk] = maps.of_masks(masks[n0 : n0 + chunk])
    return out


def _budget(memory_mb: float | None) -> int:
    """The memory budget in bytes (``DEFAULT_MEMORY_MB`` when None)."""
    mb = DEFAULT_MEMORY_MB if memory_mb is None else memory_mb
    if mb <= 0:
        raise ValueError(f"memory_mb must be positive, got {memory_mb}")
    return int(mb * 2**20)


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
    memory_mb: float | None = ...,
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
    memory_mb: float | None = ...,
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
    memory_mb: float | None = None,
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
        chunk: masks per random-number call (None: 8 on CPU, 32 on CUDA); on
            CUDA also the masks per ``grad_x_act`` kernel call, on CPU those are
            drawn one at a time. With the seed it fixes the draws; another chunk
            gives other draws from the same distribution.
        aggregate: ``max`` (union, the paper) or ``mean`` of the max-normalised maps.
        return_all: also return all N normalised maps (N, len(classes), h, w).
        memory_mb: bound on the temporaries of one call of the map arithmetic
            (None: ``DEFAULT_MEMORY_MB``). ``gradcam`` makes all N maps at once
            when they fit, else ``chunk`` at a time; ``grad_x_act`` sizes its
            work units by it on CUDA (on CPU by the caches, below the budget).

    Returns:
        The aggregated map (len(classes), h, w) in x's dtype (float32 for half
        precision) — and the N normalised maps when ``return_all``.
    """
    (combined,), (every,) = _sample(
        head, [x], [classes], n, [generator], formula, chunk, aggregate, memory_mb, return_all
    )
    return (combined, every) if return_all else combined


def sample_maps_many(
    head: FickleHead,
    xs: Sequence[Tensor],
    classes: Sequence[Sequence[int]],
    n: int,
    generators: Sequence[torch.Generator | None],
    formula: Formula = "grad_x_act",
    chunk: int | None = None,
    aggregate: Aggregate = "max",
    memory_mb: float | None = None,
) -> list[Tensor]:
    """:func:`sample_maps` for several images, image i's masks drawn from
    ``generators[i]`` exactly as :func:`sample_maps` draws them.

    With ``gradcam`` (fickle dropout) the N maps of consecutive images are made
    together while their temporaries fit in ``memory_mb``; other formulas go
    image by image. The results equal :func:`sample_maps`'s to rounding, and are
    bit-identical for the same images in the same order.

    Args:
        xs: the images' feature maps, each (1, C, h_i, w_i).
        classes: head outputs (0-based) to map, per image.
        generators: one per image, on the images' device.
        Others: as :func:`sample_maps`.

    Returns:
        One aggregated map (len(classes[i]), h_i, w_i) per image.
    """
    if not len(xs) == len(classes) == len(generators):
        raise ValueError(
            f"{len(xs)} feature maps, {len(classes)} class lists and "
            f"{len(generators)} generators: need one of each per image"
        )
    combined, _ = _sample(
        head, xs, classes, n, generators, formula, chunk, aggregate, memory_mb, False
    )
    return combined


def _float32_inside_autocast(fn: Callable[..., _T]) -> Callable[..., _T]:
    """Run ``fn(head, xs, ...)`` with autocast off on the images' device.

    The localize stage calls the map arithmetic inside the trainer's autocast;
    autocast would make its products and table look-ups bf16/fp16, and a map
    sums up to C·(s²-1) terms per pixel.
    """

    @functools.wraps(fn)
    def run(head: FickleHead, xs: Sequence[Tensor], *args: Any) -> _T:
        with torch.autocast(xs[0].device.type if xs else "cpu", enabled=False):
            return fn(head, xs, *args)

    return run


@_float32_inside_autocast
def _sample(
    head: FickleHead,
    xs: Sequence[Tensor],
    classes: Sequence[Sequence[int]],
    n: int,
    generators: Sequence[torch.Generator | None],
    formula: str,
    chunk: int | None,
    aggregate: str,
    memory_mb: float | None,
    return_all: bool,
) -> tuple[list[Tensor], list[Tensor | None]]:
    """Aggregated maps (and the N normalised maps when ``return_all``) per image,
    in float32 whatever the caller's autocast."""
    _check_formula(formula)
    Aggregate.parse(aggregate, "aggregate")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    budget = _budget(memory_mb)
    sts = [closed_form._setup(head, x, c) for x, c in zip(xs, classes, strict=True)]
    for x, generator in zip(xs, generators, strict=True):
        if generator is not None and generator.device.type != x.device.type:
            raise ValueError(f"generator is on {generator.device}, x on {x.device}")
    if not sts:
        return [], []
    chunk = chunk or _DEFAULT_CHUNK.get(xs[0].device.type, 8)
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    combined: list[Tensor] = []
    every: list[Tensor | None] = []
    for st in sts:  # images without classes: empty maps
        _, h, w = st.shape
        combined.append(st.x.new_zeros(0, h, w))
        every.append(st.x.new_zeros(n, 0, h, w) if return_all else None)
    todo = [i for i, st in enumerate(sts) if len(st.weight)]
    # gradcam's maps batch across images; the others go image by image.
    together = formula == "gradcam" and sts[0].kind == "fickle"
    if together:
        groups = _groups([sts[i] for i in todo], n, budget)
    else:
        groups = [[j] for j in range(len(todo))]
    for group in groups:
        idx = [todo[j] for j in group]
        group_sts = [sts[i] for i in idx]
        if together and _together_bytes(group_sts, n) <= budget:
            done = _sample_together(
                group_sts, [generators[i] for i in idx], n, chunk, aggregate, return_all
            )
        else:
            (i,) = idx
            maps = _Maps.of(sts[i], formula, chunk, budget)
            done = [_sample_chunked(maps, generators[i], n, chunk, aggregate, return_all)]
        for i, (agg, all_maps) in zip(idx, done, strict=True):
            combined[i], every[i] = agg, all_maps
    return combined, every


def _together_bytes(sts: Sequence[closed_form._Setup], n: int) -> int:
    """Temporaries of making the N gradcam maps of ``sts`` in one go (padded)."""
    c = sts[0].shape[0]
    k = max(len(st.weight) for st in sts)
    cells = max(st.shape[1] for st in sts) * max(st.shape[2] for st in sts)
    per_mask = closed_form.gradcam_bytes_per_mask(c, len(sts[0].offsets), k, cells)
    return len(sts) * n * per_mask


def _groups(sts: Sequence[closed_form._Setup], n: int, budget: int) -> list[list[int]]:
    """Consecutive images whose N gradcam maps fit in ``budget`` together; an
    image that does not fit alone is a group of its own (made chunk by chunk)."""
    groups: list[list[int]] = []
    for i in range(len(sts)):
        if groups and _together_bytes([sts[j] for j in groups[-1]] + [sts[i]], n) <= budget:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _sample_together(
    sts: Sequence[closed_form._Setup],
    generators: Sequence[torch.Generator | None],
    n: int,
    chunk: int,
    aggregate: str,
    return_all: bool,
) -> list[tuple[Tensor, Tensor | None]]:
    """All N gradcam maps of several images in one go; draws as :func:`_sample_chunked`."""
    counts = []
    for st, generator in zip(sts, generators, strict=True):
        maps = _GradcamMaps(st, "gradcam")
        counts.append(
            torch.cat(
                [maps.draw_counts(min(chunk, n - n0), generator) for n0 in range(0, n, chunk)]
            )
        )
    raw = closed_form._gradcam_stacked(sts, torch.stack(counts))  # (I, N, K, H·W)
    big_h = max(st.shape[1] for st in sts)
    big_w = max(st.shape[2] for st in sts)
    out = []
    for i, st in enumerate(sts):
        _, h, w = st.shape
        k = len(st.weight)
        normed = normalize_maps(raw[i, :, :k].view(n, k, big_h, big_w)[:, :, :h, :w])
        agg = normed.amax(0) if aggregate == "max" else normed.sum(0) / n
        out.append((agg, normed if return_all else None))
    return out


def _sample_chunked(
    maps: _Maps,
    generator: torch.Generator | None,
    n: int,
    chunk: int,
    aggregate: str,
    return_all: bool,
) -> tuple[Tensor, Tensor | None]:
    """One image's N maps, ``chunk`` at a time, aggregated as they come."""
    _, h, w = maps.st.shape
    combined = maps.st.x.new_zeros(len(maps.st.weight), h, w)
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
    return combined, torch.cat(every) if return_all else None
