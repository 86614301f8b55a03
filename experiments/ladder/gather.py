"""Gather the ladder (``run.sh``) into tables, paired comparisons and plots.

    python experiments/ladder/gather.py [RUNS_DIR] [--out DIR] [--choice CHOICE.json]

Reads ``RUNS_DIR`` (default ``runs/ladder``) as ``run.sh`` lays it out: the
classifiers ``cls/<row>/seed<s>/``; the weakly supervised pipelines
``<level>/<row>/<formula>/seed<s>/`` (the pipeline's ``metrics.json``: localize,
segment, evaluate, evaluate_crf; and ``localize_val/metrics.json``) for each saliency
level (realistic, perfect, none); the bars ``supervised/seed<s>/`` and
``gt_seeds/seed<s>/``. ``--choice`` (default ``experiments/recipe/choice.json``)
says which formula was chosen on train for each row and level. Writes into ``--out``
(default: this folder) ``results.json`` (every run's figures, every row's mean, std
and n, every paired comparison), ``results.md``, ``table5.png`` (Table 5 with error
bars beside the paper's numbers), ``saliency_axis.png`` and ``curves.png``
(training loss and validation metric per epoch of seed 0's runs).

Statistics (mean ± std over training seeds, paired comparisons with the t test and
the exact sign-flip test, the 0.05 significance rule) are ``ficklenet.analysis.stats``;
the figures read from each run are ``ficklenet.analysis.runs``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ficklenet.analysis.runs import (
    GROWTH_FIGURES,
    ROW_LABELS,
    WEAK_FIGURES,
    read_figures,
    seed_folders,
    write_results,
)
from ficklenet.analysis.stats import fmt, paired_on, reading, summarize
from ficklenet.metric_names import TRAIN_LOSS, VAL_MAP, VAL_MIOU

HERE = Path(__file__).resolve().parent
# Paper Table 5 (PASCAL VOC 2012 val mIoU %, DeepLab-VGG16 + DSRG), by row.
PAPER_TABLE5: dict[str, float] = {
    "deterministic": 56.3,
    "general_0.5": 45.6,
    "general_0.9": 49.1,
    "fickle_0.3": 58.8,
    "fickle_0.5": 59.4,
    "fickle_0.7": 60.0,
    "fickle_0.9": 61.2,
}
TABLE5_ORDER = list(PAPER_TABLE5)


def epoch_curves(csv_path: Path, metric: str) -> tuple[list[int], list[float], list[float]]:
    """(epochs, mean train/loss per epoch, ``metric`` per epoch) from a metrics.csv."""
    import csv

    losses: dict[int, list[float]] = {}
    values: dict[int, float] = {}
    with open(csv_path) as fh:
        for row in csv.DictReader(fh):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            if row.get(TRAIN_LOSS):
                losses.setdefault(epoch, []).append(float(row[TRAIN_LOSS]))
            if row.get(metric):
                values[epoch] = float(row[metric])
    epochs = sorted(set(losses) & set(values))
    return epochs, [sum(losses[e]) / len(losses[e]) for e in epochs], [values[e] for e in epochs]


# --------------------------------------------------------------------------------------
# The ladder under the papers' recipe (run.sh's layout).

LEVELS = ("perfect", "realistic", "none")  # saliency quality, best first
DEFAULT_LEVEL = "realistic"
NO_GROWING = "realistic_no_growing"  # the growing ablation at the default level
FORMULAS = ("gradcam", "grad_x_act")
PAIRED = ("deterministic", "fickle_0.9")
COMPARED = ("seed mIoU", "CAM object recall", "segmenter mIoU", "segmenter mIoU + CRF")


def _row(jobs: dict[int, Path], classifiers: dict[int, Path | None]) -> dict[str, Any] | None:
    runs = {}
    for seed, job in sorted(jobs.items()):
        figures = read_figures(job, classifiers.get(seed))
        if figures["segmenter mIoU + CRF"] is not None:
            runs[seed] = figures
    if not runs:
        return None
    return {
        "runs": runs,
        "summary": summarize(runs, [n for n, _, _ in WEAK_FIGURES + GROWTH_FIGURES]),
        "jobs": {s: str(j) for s, j in jobs.items()},
    }


def gather_recipe(runs_dir: Path, choice: dict[str, Any]) -> dict[str, Any]:
    weak: dict[str, dict[str, dict[str, Any]]] = {}
    for level in LEVELS:
        for row_dir in sorted((runs_dir / level).glob("*")):
            for formula_dir in sorted(row_dir.glob("*")):
                jobs = seed_folders(formula_dir)
                cls = {s: runs_dir / "cls" / row_dir.name / f"seed{s}" for s in jobs}
                row = _row(jobs, cls)
                if row is not None:
                    weak.setdefault(level, {}).setdefault(row_dir.name, {})[formula_dir.name] = row
    bars = {}
    for name in ("supervised", "gt_seeds"):
        row = _row(seed_folders(runs_dir / name), {})
        if row is not None:
            bars[name] = row
    chosen = {
        level: {row: entry["formula"] for row, entry in data["rows"].items()}
        for level, data in choice.get("levels", {}).items()
    }
    # The growing ablation: the same seeds, growing off (NO_GROWING/<row>/<formula>/seed<s>).
    no_growing: dict[str, dict[str, Any]] = {}
    for row_dir in sorted((runs_dir / NO_GROWING).glob("*")):
        for formula_dir in sorted(row_dir.glob("*")):
            row = _row(seed_folders(formula_dir), {})
            grown = weak.get(DEFAULT_LEVEL, {}).get(row_dir.name, {}).get(formula_dir.name)
            if row is None or grown is None:
                continue
            row["growing_minus_none"] = {
                n: c
                for n in ("segmenter mIoU", "segmenter mIoU + CRF")
                if (c := paired_on(grown["runs"], row["runs"], n))
            }
            no_growing.setdefault(row_dir.name, {})[formula_dir.name] = row
    comparisons: dict[str, dict[str, Any]] = {}
    for level, rows in weak.items():
        if not all(r in rows for r in PAIRED):
            continue
        det, fickle = (rows[r] for r in PAIRED)
        pairs = {f: (fickle.get(f), det.get(f)) for f in FORMULAS}
        pick = chosen.get(level, {})
        if all(r in pick for r in PAIRED):
            pairs["chosen"] = (fickle.get(pick["fickle_0.9"]), det.get(pick["deterministic"]))
        for label, (a, b) in pairs.items():
            if a is None or b is None:
                continue
            got = {n: paired_on(a["runs"], b["runs"], n) for n in COMPARED}
            comparisons.setdefault(level, {})[label] = {k: v for k, v in got.items() if v}
    return {
        "weak": weak,
        "bars": bars,
        "chosen": chosen,
        "fickle_minus_deterministic": comparisons,
        "no_growing": no_growing,
    }


def _label(row: str) -> str:
    return ROW_LABELS[row].removesuffix(" → DSRG")


def _paired_lines(comp: dict[str, Any]) -> list[str]:
    lines = [
        "| formula | figure | differences (points) | mean ± std | t | p (t) | p (sign flips) "
        "| reading |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, figures in comp.items():
        name = "each its chosen" if label == "chosen" else f"`{label}`"
        for fig, c in figures.items():
            diffs = ", ".join(f"{100 * d:+.1f}" for d in c["differences"])
            lines.append(
                f"| {name} | {fig} | {diffs} | {100 * c['mean']:+.1f} ± {100 * c['std']:.1f} | "
                f"{c['t']:.2f} | {c['p_t']:.3f} | {c['p_permutation']:.3f} | {reading(c)} |"
            )
    return lines


def markdown_recipe(result: dict[str, Any]) -> str:
    weak, bars, chosen = result["weak"], result["bars"], result["chosen"]
    names = [n for n, _, _ in WEAK_FIGURES]
    out = [
        f"## The ladder (toy val; saliency `{DEFAULT_LEVEL}`; %; mean ± std over training seeds)",
        "",
        "Thresholds and formulas chosen on `train` (`experiments/recipe/choice.md`); the "
        "formula each classifier chose is marked with *.",
        "",
        "| row | formula | seeds | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for key in ("supervised", "gt_seeds"):
        if key in bars:
            cells = " | ".join(fmt(bars[key]["summary"], n) for n in names)
            out.append(f"| {ROW_LABELS[key]} | – | {len(bars[key]['runs'])} | {cells} |")
    default = weak.get(DEFAULT_LEVEL, {})
    for key in TABLE5_ORDER:
        for formula, row in default.get(key, {}).items():
            mark = "*" if chosen.get(DEFAULT_LEVEL, {}).get(key) == formula else ""
            cells = " | ".join(fmt(row["summary"], n) for n in names)
            out.append(f"| {ROW_LABELS[key]} | `{formula}`{mark} | {len(row['runs'])} | {cells} |")
    out.append("")
    comps = result["fickle_minus_deterministic"]
    if DEFAULT_LEVEL in comps:
        out += [
            "## FickleNet p=0.9 − deterministic, paired by training seed "
            f"(saliency `{DEFAULT_LEVEL}`)",
            "",
            *_paired_lines(comps[DEFAULT_LEVEL]),
            "",
        ]
    table5 = [k for k in TABLE5_ORDER if k in default]
    if table5:
        out += [
            f"## Table 5 (segmenter val mIoU, %; saliency `{DEFAULT_LEVEL}`; each classifier's "
            "formula chosen on train)",
            "",
            "| classifier | formula | seeds | toy, no CRF | toy, + CRF | paper (VOC val, VGG16) |",
            "|---|---|---|---|---|---|",
        ]
        for key in table5:
            formula = chosen.get(DEFAULT_LEVEL, {}).get(key) or next(iter(default[key]))
            row = default[key].get(formula)
            if row is None:
                continue
            out.append(
                f"| {_label(key)} | `{formula}` | {len(row['runs'])} | "
                f"{fmt(row['summary'], 'segmenter mIoU')} | "
                f"{fmt(row['summary'], 'segmenter mIoU + CRF')} | {PAPER_TABLE5[key]:.1f} |"
            )
        if "supervised" in bars:
            ceiling = bars["supervised"]["summary"]
            out.append(
                f"| *fully supervised ceiling* | – | {len(bars['supervised']['runs'])} | "
                f"{fmt(ceiling, 'segmenter mIoU')} | {fmt(ceiling, 'segmenter mIoU + CRF')} | – |"
            )
        out.append("")
    out += [
        "## The saliency-quality axis (paired rows; toy val; %)",
        "",
        "| saliency | classifier | formula | seeds | seed mIoU | seed precision | seed labelled "
        "| segmenter mIoU | segmenter mIoU + CRF |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for level in LEVELS:
        for key in PAIRED:
            for formula in FORMULAS:
                row = weak.get(level, {}).get(key, {}).get(formula)
                if row is None:
                    continue
                mark = "*" if chosen.get(level, {}).get(key) == formula else ""
                cells = " | ".join(
                    fmt(row["summary"], n)
                    for n in (
                        "seed mIoU",
                        "seed precision",
                        "seed labelled",
                        "segmenter mIoU",
                        "segmenter mIoU + CRF",
                    )
                )
                n = len(row["runs"])
                out.append(f"| {level} | {_label(key)} | `{formula}`{mark} | {n} | {cells} |")
    out.append("")
    for level in LEVELS:
        if level != DEFAULT_LEVEL and level in comps:
            out += [
                f"### FickleNet p=0.9 − deterministic, paired, saliency `{level}`",
                "",
                *_paired_lines(comps[level]),
                "",
            ]
    growth = [n for n, _, _ in GROWTH_FIGURES]
    out += [
        "## What DSRG's growing does (on `train`, at the end of training; %)",
        "",
        "Seeds as localized, the same seeds grown by the trained segmenter (DSRG's rule), and "
        "the segmenter's own prediction, against the ground truth of `train`.",
        "",
        "| saliency | row | formula | seeds | " + " | ".join(growth) + " |",
        "|---|---|---|---|" + "---|" * len(growth),
    ]
    if "gt_seeds" in bars:
        cells = " | ".join(fmt(bars["gt_seeds"]["summary"], n) for n in growth)
        out.append(
            f"| – | {ROW_LABELS['gt_seeds']} | – | {len(bars['gt_seeds']['runs'])} | {cells} |"
        )
    for level in LEVELS:
        for key in TABLE5_ORDER:
            for formula, row in weak.get(level, {}).get(key, {}).items():
                cells = " | ".join(fmt(row["summary"], n) for n in growth)
                out.append(
                    f"| {level} | {_label(key)} | `{formula}` | {len(row['runs'])} | {cells} |"
                )
    out.append("")
    if result["no_growing"]:
        out += [
            f"### With growing − without (saliency `{DEFAULT_LEVEL}`; the same seeds, DSRG "
            "trained with `grow_fg_prob=grow_bg_prob=1.0`; paired by training seed)",
            "",
            "| row | formula | seeds | without growing: mIoU | + CRF | with − without: mIoU "
            "| p (t) | + CRF | p (t) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for key, formulas in result["no_growing"].items():
            for formula, row in formulas.items():
                diff = row["growing_minus_none"]
                cells = []
                for name in ("segmenter mIoU", "segmenter mIoU + CRF"):
                    c = diff.get(name)
                    cells += (
                        [f"{100 * c['mean']:+.1f} ± {100 * c['std']:.1f}", f"{c['p_t']:.3f}"]
                        if c
                        else ["–", "–"]
                    )
                out.append(
                    f"| {_label(key)} | `{formula}` | {len(row['runs'])} | "
                    f"{fmt(row['summary'], 'segmenter mIoU')} | "
                    f"{fmt(row['summary'], 'segmenter mIoU + CRF')} | {' | '.join(cells)} |"
                )
        out.append("")
    return "\n".join(out)


def plot_table5(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    default = result["weak"].get(DEFAULT_LEVEL, {})
    chosen = result["chosen"].get(DEFAULT_LEVEL, {})
    keys = [k for k in TABLE5_ORDER if chosen.get(k) in default.get(k, {})]
    if not keys:
        return
    fig, ax = plt.subplots(figsize=(8, 3.8))
    xs = range(len(keys))
    for offset, name, colour in (
        (-0.2, "segmenter mIoU", "tab:blue"),
        (0.0, "segmenter mIoU + CRF", "tab:cyan"),
    ):
        cells = [default[k][chosen[k]]["summary"][name] for k in keys]
        ax.bar(
            [x + offset for x in xs],
            [100 * c["mean"] for c in cells],
            0.2,
            yerr=[100 * (c["std"] or 0.0) for c in cells],
            capsize=3,
            color=colour,
            label=f"toy: {name}",
        )
    ax.bar(
        [x + 0.2 for x in xs],
        [PAPER_TABLE5[k] for k in keys],
        0.2,
        color="tab:gray",
        label="paper (VOC val)",
    )
    for name, style in (("segmenter mIoU", "--"), ("segmenter mIoU + CRF", ":")):
        ceiling = result["bars"].get("supervised", {}).get("summary", {}).get(name)
        if ceiling:
            ax.axhline(
                100 * ceiling["mean"], color="k", ls=style, lw=1, label=f"toy ceiling ({name})"
            )
    ax.set_xticks(
        list(xs), [f"{_label(k)}\n({chosen[k]})" for k in keys], rotation=20, ha="right", fontsize=7
    )
    ax.set_ylabel("val mIoU (%)")
    ax.legend(fontsize=6, loc="lower right")
    ax.set_title(
        f"Table 5 on the proving ground (saliency {DEFAULT_LEVEL}): mean ± std over seeds",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_saliency_axis(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weak = result["weak"]
    levels = [lv for lv in LEVELS if lv in weak]
    if not levels:
        return
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, name in zip(axes, ("segmenter mIoU", "segmenter mIoU + CRF"), strict=True):
        for k, (key, formula) in enumerate((r, f) for r in PAIRED for f in FORMULAS):
            points = [
                (i, weak[lv].get(key, {}).get(formula, {}).get("summary", {}).get(name))
                for i, lv in enumerate(levels)
            ]
            points = [(i + 0.06 * (k - 1.5), c) for i, c in points if c]
            if not points:
                continue
            ax.errorbar(
                [x for x, _ in points],
                [100 * c["mean"] for _, c in points],
                yerr=[100 * (c["std"] or 0.0) for _, c in points],
                capsize=3,
                marker="o" if key == "fickle_0.9" else "s",
                ls="-" if formula == "gradcam" else "--",
                label=f"{_label(key)}, {formula}",
            )
        ceiling = result["bars"].get("supervised", {}).get("summary", {}).get(name)
        if ceiling:
            ax.axhline(100 * ceiling["mean"], color="k", ls=":", lw=1, label="fully supervised")
        ax.set_xticks(range(len(levels)), levels)
        ax.set_xlabel("saliency quality")
        ax.set_title(name, fontsize=9)
    axes[0].set_ylabel("val mIoU (%)")
    axes[1].legend(fontsize=6)
    fig.suptitle("Where the classifier's maps matter: mean ± std over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(result: dict[str, Any], runs_dir: Path, path: Path, seed: int = 0) -> None:
    """Training loss and validation metric per epoch of seed ``seed``'s runs: is each
    stage trained to near convergence by its default budget?"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = result["chosen"].get(DEFAULT_LEVEL, {})
    classifier = {r: runs_dir / "cls" / r / f"seed{seed}" / "logs" / "metrics.csv" for r in PAIRED}
    segmenter = {
        "supervised": runs_dir / "supervised" / f"seed{seed}" / "segment",
        "gt_seeds": runs_dir / "gt_seeds" / f"seed{seed}" / "segment",
        **{
            r: runs_dir / DEFAULT_LEVEL / r / chosen.get(r, "gradcam") / f"seed{seed}" / "segment"
            for r in PAIRED
        },
    }
    panels = [
        (VAL_MAP, "classifier (val mAP)", classifier),
        (
            VAL_MIOU,
            "segmenter (val mIoU)",
            {k: v / "logs" / "metrics.csv" for k, v in segmenter.items()},
        ),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(9, 5.5), sharex="col")
    drawn = False
    for col, (metric, title, files) in enumerate(panels):
        for row, csv_path in files.items():
            if not csv_path.is_file():
                continue
            epochs, loss, value = epoch_curves(csv_path, metric)
            axes[0][col].plot(epochs, loss, label=_label(row))
            axes[1][col].plot(epochs, value, label=_label(row))
            drawn = True
        axes[0][col].set_title(f"{title}: training loss", fontsize=9)
        axes[1][col].set_title(title, fontsize=9)
        axes[1][col].set_xlabel("epoch")
        axes[1][col].legend(fontsize=7)
    if drawn:
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", nargs="?", default="runs/ladder")
    parser.add_argument("--out", default=str(HERE))
    parser.add_argument("--choice", default=str(HERE.parent / "recipe" / "choice.json"))
    args = parser.parse_args()
    out = Path(args.out)
    runs_dir = Path(args.runs_dir)
    choice_path = Path(args.choice)
    choice = json.loads(choice_path.read_text()) if choice_path.is_file() else {}
    result = gather_recipe(runs_dir, choice)
    plot_table5(result, out / "table5.png")
    plot_saliency_axis(result, out / "saliency_axis.png")
    plot_curves(result, runs_dir, out / "curves.png")
    write_results(out, result, markdown_recipe(result))


if __name__ == "__main__":
    main()
