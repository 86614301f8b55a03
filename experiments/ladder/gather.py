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

Statistics: mean ± sample standard deviation (n-1) over training seeds; a paired
comparison takes, seed by seed, the difference between two rows trained with the
same seed, and reports its mean, its standard deviation, the paired t statistic
with its two-sided p-value, and the exact sign-flip permutation p-value (all 2^n
sign patterns of the differences). A difference is read as one only where the paired
t test gives p < 0.05 (``SIGNIFICANCE``); anything else is reported as no difference.
(The studies measured at commit a02f831 read a mean outside ±2 standard errors as a
difference, which with three pairs lets through p ≈ 0.18.)

``read_run``, ``find_jobs`` and ``job_overrides`` read the ladder's earlier layout
(one ``ficklenet-pipeline -m`` sweep per row, no saliency; ``run.sh`` at commit
a02f831), which ``experiments/diagnosis`` and ``experiments/crf_backend`` build on.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path
from typing import Any

from ficklenet.files import atomic_path

HERE = Path(__file__).resolve().parent
SIGNIFICANCE = 0.05  # a paired difference is read as one where the t test's p is below this

# (name, stage file, key) of every figure, fractions in [0, 1]. Seed and CAM figures
# come from the val localization (localize_val), which chose no threshold.
FIGURES: list[tuple[str, str, str]] = [
    ("classifier mAP", "classify", "val/mAP"),
    ("seed mIoU", "localize_val", "seed/miou"),
    ("seed precision", "localize_val", "seed/precision"),
    ("seed recall", "localize_val", "seed/recall"),
    ("seed labelled", "localize_val", "seed/labelled_fraction"),
    ("CAM mIoU", "localize_val", "cam/best_miou"),
    ("CAM object recall", "localize_val", "cam/object_recall"),
    ("seed mIoU (train)", "localize", "seed/miou"),
    ("segmenter mIoU", "evaluate", "miou"),
    ("segmenter mIoU + CRF", "evaluate_crf", "miou"),
]
ROW_LABELS: dict[str, str] = {
    "supervised": "fully supervised (ceiling)",
    "gt_seeds": "DSRG on ground-truth-derived seeds",
    "deterministic": "deterministic CAM seeds (p=0) → DSRG",
    "fickle_0.9": "FickleNet p=0.9 → DSRG",
    "general_0.9": "general dropout p=0.9 → DSRG",
    "fickle_0.3": "FickleNet p=0.3 → DSRG",
    "fickle_0.5": "FickleNet p=0.5 → DSRG",
    "fickle_0.7": "FickleNet p=0.7 → DSRG",
    "general_0.5": "general dropout p=0.5 → DSRG",
}
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


def read_run(run_dir: Path) -> dict[str, float | None]:
    """Every figure of one (row, seed) directory; None where it is missing."""
    stages: dict[str, dict[str, Any]] = {}
    pipeline = run_dir / "metrics.json"
    if pipeline.is_file():
        stages.update(json.loads(pipeline.read_text()))
    val = run_dir / "localize_val" / "metrics.json"
    if val.is_file():
        stages["localize_val"] = json.loads(val.read_text())
    out: dict[str, float | None] = {}
    for name, stage, key in FIGURES:
        value = stages.get(stage, {}).get(key)
        out[name] = None if value is None else float(value)
    return out


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), integrated numerically (Simpson's rule after substituting
    u = x·v^(1/a), which removes the singularity at 0); beyond the mean a/(a+b) it
    uses I_x(a, b) = 1 - I_{1-x}(b, a), so the other endpoint never enters."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > a / (a + b):
        return 1.0 - regularized_beta(1.0 - x, b, a)

    def integrand(v: float) -> float:
        return (1.0 - x * v ** (1.0 / a)) ** (b - 1.0)

    n = 2000
    h = 1.0 / n
    total = integrand(0.0) + integrand(1.0)
    total += sum((4 if i % 2 else 2) * integrand(i * h) for i in range(1, n))
    integral = total * h / 3.0 * x**a / a
    return integral / math.exp(math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))


def student_t_two_sided(t: float, df: int) -> float:
    """Two-sided p-value of Student's t: P(|T| > |t|) = I_{df/(df+t²)}(df/2, 1/2)."""
    if df < 1 or math.isnan(t):
        return float("nan")
    return min(1.0, regularized_beta(df / (df + t * t), df / 2.0, 0.5))


def paired(a: dict[int, float], b: dict[int, float]) -> dict[str, Any] | None:
    """Paired comparison of a - b over the seeds both have."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    mean, std = mean_std(diffs)
    assert std is not None
    n = len(diffs)
    if std > 0:
        t = mean / (std / math.sqrt(n))
        p_t = student_t_two_sided(t, n - 1)
    else:  # every difference the same: none at all, or one beyond any noise
        t = math.copysign(math.inf, mean) if mean else 0.0
        p_t = 0.0 if mean else 1.0
    flips = [
        abs(sum(s * d for s, d in zip(signs, diffs, strict=True)) / n)
        for signs in itertools.product((1, -1), repeat=n)
    ]
    p_perm = sum(f >= abs(mean) - 1e-12 for f in flips) / len(flips)
    return {
        "seeds": seeds,
        "differences": diffs,
        "mean": mean,
        "std": std,
        "t": t,
        "p_t": p_t,
        "p_permutation": p_perm,
        "no_difference": not p_t < SIGNIFICANCE,
    }


def summarize(runs: dict[int, dict[str, float | None]], names: list[str]) -> dict[str, Any]:
    """{figure: {mean, std, n}} over the runs that have it."""
    summary = {}
    for name in names:
        values = [r[name] for r in runs.values() if r.get(name) is not None]
        if values:
            mean, std = mean_std(values)
            summary[name] = {"mean": mean, "std": std, "n": len(values)}
    return summary


def paired_on(
    a: dict[int, dict[str, float | None]], b: dict[int, dict[str, float | None]], name: str
) -> dict[str, Any] | None:
    """:func:`paired` on one figure of two rows' runs ({seed: figures})."""
    return paired(
        {s: r[name] for s, r in a.items() if r.get(name) is not None},
        {s: r[name] for s, r in b.items() if r.get(name) is not None},
    )


def job_overrides(job: Path) -> dict[str, str]:
    """The ``key=value`` overrides Hydra recorded for a job."""
    import yaml

    path = job / ".hydra" / "overrides.yaml"
    items = yaml.safe_load(path.read_text()) if path.is_file() else []
    return dict(str(item).split("=", 1) for item in items or [] if "=" in str(item))


def find_jobs(runs_dir: Path) -> dict[str, dict[int, Path]]:
    """{row: {seed: job directory}} over every sweep under ``runs_dir``."""
    rows: dict[str, dict[int, Path]] = {}
    for metrics in sorted(runs_dir.glob("*/*/metrics.json")):
        job = metrics.parent
        overrides = job_overrides(job)
        row = overrides.get("table5", job.parent.name)
        rows.setdefault(row, {})[int(overrides.get("seed", 0))] = job
    return rows


def fmt(summary: dict[str, Any], name: str) -> str:
    cell = summary.get(name)
    if cell is None:
        return "–"
    if cell["std"] is None:
        return f"{100 * cell['mean']:.1f}"
    return f"{100 * cell['mean']:.1f} ± {100 * cell['std']:.1f}"


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
            if row.get("train/loss"):
                losses.setdefault(epoch, []).append(float(row["train/loss"]))
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
# (name, stage, key) of the figures of a weakly supervised run, fractions in [0, 1];
# seed and CAM figures on val (localize_val), which chose nothing.
WEAK_FIGURES: list[tuple[str, str, str]] = [
    ("classifier mAP", "classify", "val/mAP"),
    ("seed mIoU", "localize_val", "seed/miou"),
    ("seed precision", "localize_val", "seed/precision"),
    ("seed recall", "localize_val", "seed/recall"),
    ("seed labelled", "localize_val", "seed/labelled_fraction"),
    ("CAM mIoU", "localize_val", "cam/best_miou"),
    ("CAM object recall", "localize_val", "cam/object_recall"),
    ("segmenter mIoU", "evaluate", "miou"),
    ("segmenter mIoU + CRF", "evaluate_crf", "miou"),
]
# What DSRG's growing did, on train at the end of training (ficklenet.tasks.seed_growth).
GROWTH_FIGURES: list[tuple[str, str, str]] = [
    ("seeds mIoU", "segment", "seed/miou"),
    ("seeds precision", "segment", "seed/precision"),
    ("seeds labelled", "segment", "seed/labelled_fraction"),
    ("grown mIoU", "segment", "grown_seed/miou"),
    ("grown precision", "segment", "grown_seed/precision"),
    ("grown labelled", "segment", "grown_seed/labelled_fraction"),
    ("prediction mIoU (train)", "segment", "train/miou"),
]
ALL_FIGURES = WEAK_FIGURES + GROWTH_FIGURES
COMPARED = ("seed mIoU", "CAM object recall", "segmenter mIoU", "segmenter mIoU + CRF")


def read_figures(job: Path, classifier: Path | None) -> dict[str, float | None]:
    """Every figure of one weakly supervised (or bar) run; None where missing."""
    stages: dict[str, dict[str, Any]] = {}
    for name, path in (
        ("", job / "metrics.json"),
        ("localize_val", job / "localize_val" / "metrics.json"),
        ("classify", (classifier or Path("/nonexistent")) / "metrics.json"),
    ):
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        if name:
            stages[name] = data
        else:  # the pipeline's metrics.json: one entry per stage
            stages.update(data)
    out: dict[str, float | None] = {}
    for name, stage, key in ALL_FIGURES:
        value = stages.get(stage, {}).get(key)
        out[name] = None if value is None else float(value)
    return out


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
        "summary": summarize(runs, [n for n, _, _ in ALL_FIGURES]),
        "jobs": {s: str(j) for s, j in jobs.items()},
    }


def write_results(out: Path, result: Any, text: str, indent: int = 1) -> None:
    """Write ``results.json`` (``result``) and ``results.md`` (``text``) into ``out``, each
    atomically, and print the Markdown: how every gather script of experiments/ ends."""
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(result, indent=indent, sort_keys=True) + "\n")
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(text)
    print(text)


def seed_folders(folder: Path) -> dict[int, Path]:
    """{training seed: folder} of the ``seed<N>`` folders under ``folder``."""
    found = (p for p in sorted(folder.glob("seed*")) if p.is_dir())
    return {int(p.name[4:]): p for p in found if p.name[4:].isdigit()}


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


def reading(c: dict[str, Any]) -> str:
    if c["no_difference"]:
        return "no difference"
    return "FickleNet higher" if c["mean"] > 0 else "deterministic higher"


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
        ("val/mAP", "classifier (val mAP)", classifier),
        (
            "val/miou",
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
