"""Gather the recipe on a toy drawn differently (``run.sh``) into ``results.md``/``.json``.

    python experiments/other_toy/gather.py [RUNS_DIR] [--out DIR]

Reads ``RUNS_DIR`` (default ``runs/other_toy``): ``supervised/seed<s>/`` and
``<row>/seed<s>/`` for the two paired rows, each a whole pipeline (its
``classify/metrics.json`` and ``metrics.json``) with ``localize_val/`` beside it.
Statistics are the ladder's (``experiments/ladder/gather.py``): mean ± sample std
over training seeds, and FickleNet p=0.9 − deterministic paired by training seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ficklenet.analysis.runs import (
    ALL_FIGURES,
    ROW_LABELS,
    TABLE_FIGURES,
    read_figures,
    seed_folders,
    write_results,
)
from ficklenet.analysis.stats import fmt, paired_on, reading, summarize

HERE = Path(__file__).resolve().parent


# (row, the formula it ran with: the one each chose on the default toy's train)
ROWS: list[tuple[str, str | None]] = [
    ("supervised", None),
    ("deterministic", "grad_x_act"),
    ("fickle_0.9", "gradcam"),
]
NAMES = [name for name, _, _ in ALL_FIGURES]


def gather(runs_dir: Path) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for row, _ in ROWS:
        runs = {}
        for seed, job in seed_folders(runs_dir / row).items():
            figures = read_figures(job, job / "classify")
            if figures["segmenter mIoU + CRF"] is not None:
                runs[seed] = figures
        if runs:
            rows[row] = {"runs": runs, "summary": summarize(runs, NAMES)}
    paired = {}
    if "fickle_0.9" in rows and "deterministic" in rows:
        for name in ("seed mIoU", "segmenter mIoU", "segmenter mIoU + CRF"):
            diff = paired_on(rows["fickle_0.9"]["runs"], rows["deterministic"]["runs"], name)
            if diff is not None:
                paired[name] = diff
    return {"rows": rows, "fickle_minus_deterministic": paired}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "## The recipe on a toy drawn differently (seed 7, 128 px; val; %)",
        "",
        "Every setting as chosen on the default toy's `train` (`experiments/recipe/choice.md`).",
        "",
        "| row | formula | seeds | " + " | ".join(TABLE_FIGURES) + " |",
        "|---|---|---|" + "---|" * len(TABLE_FIGURES),
    ]
    for row, formula in ROWS:
        if row not in result["rows"]:
            continue
        summary = result["rows"][row]["summary"]
        n = len(result["rows"][row]["runs"])
        cells = " | ".join(fmt(summary, name) for name in TABLE_FIGURES)
        lines.append(
            f"| {ROW_LABELS[row]} | {f'`{formula}`' if formula else '–'} | {n} | {cells} |"
        )
    if result["fickle_minus_deterministic"]:
        lines += [
            "",
            "FickleNet p=0.9 − deterministic, paired by training seed (points):",
            "",
            "| figure | differences | mean ± std | p (t) | reading |",
            "|---|---|---|---|---|",
        ]
        for name, c in result["fickle_minus_deterministic"].items():
            diffs = ", ".join(f"{100 * d:+.1f}" for d in c["differences"])
            lines.append(
                f"| {name} | {diffs} | {100 * c['mean']:+.1f} ± {100 * c['std']:.1f} "
                f"| {c['p_t']:.3f} | {reading(c)} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", nargs="?", default="runs/other_toy")
    parser.add_argument("--out", default=str(HERE))
    args = parser.parse_args()
    result = gather(Path(args.runs_dir))
    write_results(Path(args.out), result, markdown(result))


if __name__ == "__main__":
    main()
