"""Gather the ladder (``run.sh``) into tables, a paired comparison and plots.

    python experiments/ladder/gather.py [RUNS_DIR] [--out DIR]

Reads every pipeline job of the sweeps under ``RUNS_DIR`` (default ``runs/ladder``):
``<sweep>/<job>/`` with the pipeline's ``metrics.json``, the job's overrides
(``.hydra/overrides.yaml``: its ``table5=`` row and its ``seed=``) and, for the
Table 5 rows, ``localize_val/metrics.json``. A job without ``table5=`` belongs to
the row its sweep folder names (``supervised``, ``gt_seeds``). Writes into
``--out`` (default: this folder) ``results.json`` (every run's figures and every
row's mean, std and n), ``results.md`` (the ladder, the paired comparison of
FickleNet p=0.9 against the deterministic classifier, and Table 5 beside the
paper's numbers), ``table5.png`` (Table 5 with error bars) and ``curves.png``
(training loss and validation metric per epoch of seed 0's runs).

Statistics: mean ± sample standard deviation (n-1) over seeds; the paired
comparison takes, seed by seed, the difference between two rows trained with the
same seed, and reports its mean, its standard deviation, the paired t statistic
with its two-sided p-value, and the exact sign-flip permutation p-value (all 2^n
sign patterns of the differences). A difference whose interval ±2 standard errors
contains 0 is reported as no difference.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

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
    t = mean / (std / math.sqrt(n)) if std > 0 else math.copysign(math.inf, mean or 1.0)
    p_t = student_t_two_sided(t, n - 1) if math.isfinite(t) else 0.0
    flips = [
        abs(sum(s * d for s, d in zip(signs, diffs, strict=True)) / n)
        for signs in itertools.product((1, -1), repeat=n)
    ]
    p_perm = sum(f >= abs(mean) - 1e-12 for f in flips) / len(flips)
    sem = std / math.sqrt(n)
    return {
        "seeds": seeds,
        "differences": diffs,
        "mean": mean,
        "std": std,
        "t": t,
        "p_t": p_t,
        "p_permutation": p_perm,
        "no_difference": abs(mean) <= 2 * sem,
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


def gather(runs_dir: Path) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for row, jobs in find_jobs(runs_dir).items():
        runs = {}
        for seed, job in sorted(jobs.items()):
            figures = read_run(job)
            if figures["segmenter mIoU"] is not None:
                runs[seed] = figures
        if not runs:
            continue
        summary = summarize(runs, [name for name, _, _ in FIGURES])
        rows[row] = {"runs": runs, "summary": summary, "jobs": {s: str(j) for s, j in jobs.items()}}
    comparisons = {}
    if "fickle_0.9" in rows and "deterministic" in rows:
        for name in ("seed mIoU", "CAM object recall", "segmenter mIoU", "segmenter mIoU + CRF"):
            result = paired_on(rows["fickle_0.9"]["runs"], rows["deterministic"]["runs"], name)
            if result is not None:
                comparisons[name] = result
    return {"rows": rows, "fickle_0.9_minus_deterministic": comparisons}


def fmt(summary: dict[str, Any], name: str) -> str:
    cell = summary.get(name)
    if cell is None:
        return "–"
    if cell["std"] is None:
        return f"{100 * cell['mean']:.1f}"
    return f"{100 * cell['mean']:.1f} ± {100 * cell['std']:.1f}"


def markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    names = [n for n, _, _ in FIGURES]
    lines = [
        "| row | seeds | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for key in ROW_LABELS:
        if key in rows:
            summary = rows[key]["summary"]
            n = len(rows[key]["runs"])
            cells = " | ".join(fmt(summary, name) for name in names)
            lines.append(f"| {ROW_LABELS[key]} | {n} | {cells} |")
    out = ["## The ladder (toy val; %; mean ± std over seeds)", "", *lines, ""]
    comp = result["fickle_0.9_minus_deterministic"]
    if comp:
        out += [
            "## FickleNet p=0.9 − deterministic, paired by seed",
            "",
            "| figure | differences (points) | mean ± std | t | p (t) | p (sign flips) | reading |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, c in comp.items():
            diffs = ", ".join(f"{100 * d:+.1f}" for d in c["differences"])
            reading = (
                "no difference"
                if c["no_difference"]
                else ("FickleNet higher" if c["mean"] > 0 else "deterministic higher")
            )
            out.append(
                f"| {name} | {diffs} | {100 * c['mean']:+.1f} ± {100 * c['std']:.1f} | "
                f"{c['t']:.2f} | {c['p_t']:.3f} | {c['p_permutation']:.3f} | {reading} |"
            )
        out.append("")
    table5 = [k for k in TABLE5_ORDER if k in rows]
    if table5:
        out += [
            "## Table 5 (segmenter val mIoU, %)",
            "",
            "| classifier | toy, no CRF | toy, + CRF | paper (VOC val, VGG16) |",
            "|---|---|---|---|",
        ]
        for key in table5:
            summary = rows[key]["summary"]
            out.append(
                f"| {ROW_LABELS[key].removesuffix(' → DSRG')} | {fmt(summary, 'segmenter mIoU')} | "
                f"{fmt(summary, 'segmenter mIoU + CRF')} | {PAPER_TABLE5[key]:.1f} |"
            )
        ceiling = rows.get("supervised", {}).get("summary", {})
        if ceiling:
            out.append(
                f"| *fully supervised ceiling* | {fmt(ceiling, 'segmenter mIoU')} | "
                f"{fmt(ceiling, 'segmenter mIoU + CRF')} | – |"
            )
        out.append("")
    return "\n".join(out)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    keys = [k for k in TABLE5_ORDER if k in rows]
    if not keys:
        return
    fig, ax = plt.subplots(figsize=(8, 3.6))
    xs = range(len(keys))
    for offset, name, colour in (
        (-0.2, "segmenter mIoU", "tab:blue"),
        (0.0, "segmenter mIoU + CRF", "tab:cyan"),
    ):
        means = [100 * rows[k]["summary"][name]["mean"] for k in keys]
        errs = [100 * (rows[k]["summary"][name]["std"] or 0.0) for k in keys]
        ax.bar(
            [x + offset for x in xs],
            means,
            0.2,
            yerr=errs,
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
    ceiling = rows.get("supervised", {}).get("summary", {}).get("segmenter mIoU")
    if ceiling:
        ax.axhline(100 * ceiling["mean"], color="k", ls="--", lw=1, label="toy ceiling")
    ax.set_xticks(
        list(xs),
        [ROW_LABELS[k].removesuffix(" → DSRG") for k in keys],
        rotation=20,
        ha="right",
        fontsize=8,
    )
    ax.set_ylabel("val mIoU (%)")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Table 5 on the proving ground: mean ± std over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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


def plot_curves(result: dict[str, Any], path: Path, seed: int = 0) -> None:
    """Training loss and the validation metric per epoch of seed ``seed``'s runs: is
    each stage trained to near convergence by its default budget?"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("classify", "val/mAP", "classifier (val mAP)", ["deterministic", "fickle_0.9"]),
        (
            "segment",
            "val/miou",
            "segmenter (val mIoU)",
            ["supervised", "gt_seeds", "deterministic", "fickle_0.9"],
        ),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(9, 5.5), sharex="col")
    drawn = False
    for col, (stage, metric, title, rows) in enumerate(panels):
        for row in rows:
            job = result["rows"].get(row, {}).get("jobs", {}).get(seed)
            csv_path = Path(job or "/nonexistent") / stage / "logs" / "metrics.csv"
            if not csv_path.is_file():
                continue
            epochs, loss, value = epoch_curves(csv_path, metric)
            axes[0][col].plot(epochs, loss, label=ROW_LABELS[row].removesuffix(" → DSRG"))
            axes[1][col].plot(epochs, value, label=ROW_LABELS[row].removesuffix(" → DSRG"))
            drawn = True
        axes[0][col].set_title(f"{title}: training loss", fontsize=9)
        axes[1][col].set_title(f"{title}", fontsize=9)
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
    args = parser.parse_args()
    out = Path(args.out)
    result = gather(Path(args.runs_dir))
    (out / "results.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    text = markdown(result)
    (out / "results.md").write_text(text)
    plot(result, out / "table5.png")
    plot_curves(result, out / "curves.png")
    print(text)


if __name__ == "__main__":
    main()
