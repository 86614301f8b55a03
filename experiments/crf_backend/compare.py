"""Pair the torch-CRF segmenters of ``run.sh`` with the ladder's, by training seed.

    python experiments/crf_backend/compare.py [RUNS_DIR] [--ladder LADDER_DIR] [--out FILE]

Statistics are the ladder's (``experiments/ladder/gather.py``). Writes a Markdown
table (default ``results.md`` beside this file) and prints it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ficklenet.analysis.runs import find_jobs, read_figures
from ficklenet.analysis.stats import fmt, paired_on, summarize

HERE = Path(__file__).resolve().parent
ROWS = {"fickle_0.9": "FickleNet p=0.9 seeds", "deterministic": "deterministic seeds"}
FIGURES = [
    "segmenter mIoU",
    "segmenter mIoU + CRF",
    "segmenter mIoU (train)",
    "grown seed mIoU (train)",
]
# The segment stage's figures on `train` (ficklenet.analysis.runs.GROWTH_FIGURES),
# under this table's names. Segment runs before 8f5ea72 named them train/pred_miou
# and train/grown_seeds_miou; no run folder on disk has those names any more, so
# only the current keys are read.
TRAIN_NAMES = {
    "segmenter mIoU (train)": "prediction mIoU (train)",
    "grown seed mIoU (train)": "grown mIoU",
}


def read(job: Path) -> dict[str, float | None]:
    """The ladder's figures of a run, with the segment stage's figures on train."""
    figures = read_figures(job)
    figures.update({ours: figures[theirs] for ours, theirs in TRAIN_NAMES.items()})
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", nargs="?", default="runs/crf_backend")
    parser.add_argument("--ladder", default="runs/ladder")
    parser.add_argument("--out", type=Path, default=HERE / "results.md")
    args = parser.parse_args()
    reference = find_jobs(Path(args.ladder))
    lines = [
        "| seeds | figure | pydensecrf (the ladder) | torch | torch − pydensecrf, paired |",
        "|---|---|---|---|---|",
    ]
    for row, label in ROWS.items():
        ours = {}
        for job in sorted((Path(args.runs_dir) / row).glob("seed*")):
            figures = read(job)
            if figures["segmenter mIoU"] is not None:
                ours[int(job.name.removeprefix("seed"))] = figures
        theirs = {s: read(j) for s, j in reference.get(row, {}).items() if s in ours}
        for name in FIGURES:
            summary_a = summarize(ours, [name])
            summary_b = summarize(theirs, [name])
            if name not in summary_a or name not in summary_b:
                continue
            diff = paired_on(ours, theirs, name)
            cell = "–"
            if diff is not None:
                mark = "no difference" if diff["no_difference"] else "differs"
                cell = f"{100 * diff['mean']:+.1f} ± {100 * diff['std']:.1f} ({mark})"
            lines.append(
                f"| {label} ({summary_a[name]['n']}) | {name} | {fmt(summary_b, name)} | "
                f"{fmt(summary_a, name)} | {cell} |"
            )
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
