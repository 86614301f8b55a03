"""Choosing the seed thresholds and the map formula on a split that is not reported.

Both papers set their seed thresholds by hand on VOC; here they are chosen by
measurement on ``train`` and the figures are reported on ``val``. Maps do not
depend on any threshold or on saliency, so one localize run per (classifier,
formula) is scored over a grid of thresholds by remaking its seeds from its stored
maps with :func:`~ficklenet.localization.seeds.make_seeds`, the stage's own rule.

The criterion is the *coverage-aware* seed mIoU
(:func:`ficklenet.metrics.coverage_miou`): an unlabelled pixel counts as a miss of
its true class, so seeds score well only when they are both right and plentiful,
which DSRG needs to grow from (the plain seed mIoU over labelled pixels rises as the
seeds get fewer and surer, and would choose the most timid thresholds).

:func:`choose_recipe` turns the scores into the choice, in the order the recipe
implies (``docs/method.md``, "The papers' recipe on the proving ground"):

1. the background threshold (``saliency_threshold``, or ``bg_threshold`` without
   saliency) belongs to the saliency map, not to a classifier: the one whose score,
   at each (classifier, formula)'s own best foreground threshold, is highest on
   average over all of them;
2. each (classifier, formula) gets the foreground threshold with the best score,
   averaged over its training seeds, at that background threshold;
3. each classifier gets the formula that scores higher at its threshold.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ficklenet.data.voc import VOCReader
from ficklenet.localization.quality import load_maps
from ficklenet.localization.seeds import make_seeds
from ficklenet.metrics import (
    confusion_matrix,
    coverage_miou,
    covered_confusion,
    miou_from_confusion,
    seed_counts,
    seed_scores_from_counts,
)

__all__ = ["FG_GRID", "BG_GRID", "SALIENCY_GRID", "choose_recipe", "grid_scores", "overrides"]

#: Foreground thresholds tried (fractions of each class map's maximum; SEC: 0.2).
FG_GRID = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
#: Saliency thresholds tried (background where the saliency, in [0, 1], is below).
SALIENCY_GRID = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
#: Background thresholds tried without saliency (every class below this).
BG_GRID = (0.05, 0.1, 0.2, 0.3)


def grid_scores(
    maps_dir: Path,
    reader: VOCReader,
    saliency: VOCReader | None = None,
    fg_grid: Sequence[float] = FG_GRID,
    bg_grid: Sequence[float] | None = None,
) -> dict[tuple[float, float], dict[str, float]]:
    """Seed figures of the maps in ``maps_dir`` (``<id>.npz``) for every (fg,
    background) pair, over the ids of ``reader`` that have ground truth.

    ``saliency``: a reader whose ``saliency()`` gives the maps for the saliency
    background (``bg_grid`` then holds saliency thresholds, default
    :data:`SALIENCY_GRID`); None: background from low class scores
    (:data:`BG_GRID`; pairs with bg ≥ fg are skipped). Figures: ``coverage_miou``,
    ``miou`` (over labelled pixels), ``precision``, ``labelled``.
    """
    if bg_grid is None:
        bg_grid = SALIENCY_GRID if saliency is not None else BG_GRID
    pairs = [(fg, bg) for fg in fg_grid for bg in bg_grid if saliency is not None or bg < fg]
    covered = {p: np.zeros((21, 22), np.int64) for p in pairs}
    labelled = {p: np.zeros((21, 21), np.int64) for p in pairs}
    counts = {p: np.zeros(3, np.int64) for p in pairs}
    scored = 0
    for image_id in reader.ids:
        truth = reader.mask(image_id) if reader.has_mask(image_id) else None
        if truth is None:
            continue
        path = Path(maps_dir) / f"{image_id}.npz"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no stored maps for {image_id}; localize the split")
        maps, classes = load_maps(path)
        sal = saliency.saliency(image_id) if saliency is not None else None
        for fg, bg in pairs:
            if sal is not None:
                seeds = make_seeds(
                    maps, classes, fg_threshold=fg, saliency=sal, saliency_threshold=bg
                )
            else:
                seeds = make_seeds(maps, classes, fg_threshold=fg, bg_threshold=bg)
            covered[fg, bg] += covered_confusion(seeds, truth)
            labelled[fg, bg] += confusion_matrix(seeds, truth)
            counts[fg, bg] += seed_counts(seeds, truth)
        scored += 1
    if not scored:
        raise ValueError(f"no image of split {reader.split!r} has ground truth to choose on")
    out = {}
    for pair in pairs:
        scores = seed_scores_from_counts(counts[pair])
        out[pair] = {
            "coverage_miou": coverage_miou(covered[pair]),
            "miou": miou_from_confusion(labelled[pair])[0],
            "precision": scores.precision,
            "labelled": scores.labelled,
        }
    return out


def choose_recipe(table: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The choice (module docstring) from rows ``{row, formula, seed, fg, bg,
    coverage_miou}``: ``{"background_threshold": b, "rows": {row: {"formula": f,
    "fg_threshold": {formula: t}, "score": {formula: s}}}}``. Ties go to the
    earlier value (lower threshold, formula first seen)."""
    by: dict[tuple[str, str, float, float], list[float]] = defaultdict(list)
    for r in table:
        by[r["row"], r["formula"], float(r["fg"]), float(r["bg"])].append(r["coverage_miou"])
    if not by:
        raise ValueError("no scores to choose from")
    mean = {k: float(np.mean(v)) for k, v in by.items()}
    groups = list(dict.fromkeys((row, f) for row, f, _, _ in by))
    bgs = sorted({bg for *_, bg in mean})

    def best_fg(group: tuple[str, str], bg: float) -> float | None:
        fgs = sorted(fg for g0, g1, fg, b in mean if (g0, g1) == group and b == bg)
        return max(fgs, key=lambda fg: mean[(*group, fg, bg)]) if fgs else None

    def level_score(bg: float) -> float:
        best = [best_fg(g, bg) for g in groups]
        if any(fg is None for fg in best):
            return -np.inf  # not scored for every group: not a candidate
        return float(np.mean([mean[(*g, fg, bg)] for g, fg in zip(groups, best, strict=True)]))

    bg = max(bgs, key=level_score)
    rows: dict[str, dict[str, Any]] = {}
    for row, formula in groups:
        fg = best_fg((row, formula), bg)
        entry = rows.setdefault(row, {"fg_threshold": {}, "score": {}})
        entry["fg_threshold"][formula] = fg
        entry["score"][formula] = mean[(row, formula, fg, bg)]
    for entry in rows.values():
        entry["formula"] = max(entry["score"], key=entry["score"].get)
    return {"background_threshold": bg, "rows": rows}


def overrides(
    choice: Mapping[str, Any], level: str, row: str, formula: str | None = None
) -> dict[str, Any]:
    """The localize settings chosen for classifier ``row`` at saliency ``level`` in
    a choice file (``{"levels": {level: {"background_key": ..., **choose_recipe}}}``):
    ``{"formula", "fg_threshold", "saliency_threshold" | "bg_threshold"}``;
    ``formula`` defaults to the row's chosen one."""
    levels = choice.get("levels", {})
    if level not in levels:
        raise KeyError(f"no choice for saliency level {level!r} (have {sorted(levels)})")
    chosen = levels[level]
    if row not in chosen["rows"]:
        raise KeyError(f"no choice for classifier {row!r} at level {level!r}")
    entry = chosen["rows"][row]
    formula = formula or entry["formula"]
    if formula not in entry["fg_threshold"]:
        raise KeyError(f"formula {formula!r} was not scored for {row!r} at level {level!r}")
    return {
        "formula": formula,
        "fg_threshold": entry["fg_threshold"][formula],
        chosen["background_key"]: chosen["background_threshold"],
    }
