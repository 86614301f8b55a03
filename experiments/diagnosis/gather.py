"""Gather the diagnosis (``run.sh``) into ``results.md`` and ``results.json``.

    python experiments/diagnosis/gather.py [DIAG_DIR] [--ladder LADDER_DIR] [--out DIR]

Reads ``DIAG_DIR`` (default ``runs/diagnosis``):

- ``maps/<row>/seed<k>/<variant>_<split>/metrics.json``: seed and CAM quality of
  the ladder's classifiers under one map-time setting;
- ``gxa/<row>/seed<k>/metrics.json``: pipelines from grad_x_act maps onwards;
- ``s5_<row>/<job>/``: whole pipelines with a 5×5 window;

and the ladder's runs (``--ladder``, default ``runs/ladder``) for the reference rows.
Statistics are the ladder's (``experiments/ladder/gather.py``): mean ± sample std
over training seeds, and paired differences (same training seed) with the paired t
test, the exact sign-flip p-value, and "no difference" unless the paired t test gives
p < 0.05.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from ficklenet.analysis.runs import WEAK_FIGURES, job_overrides, read_figures, write_results
from ficklenet.analysis.stats import fmt, paired_on, summarize

HERE = Path(__file__).resolve().parent


# Map-time settings, in the order run.sh names them, with what each changes.
VARIANTS: dict[str, str] = {
    "ladder": "as in the ladder (N=200, max, gradcam, fg 0.5)",
    "n1": "N=1",
    "n10": "N=10",
    "n50": "N=50",
    "mean": "N=200, mean instead of max",
    "no_mask": "one pass, no mask (model.p=0 at map time)",
    "grad_x_act": "formula grad_x_act",
    "fg0.3": "foreground threshold 0.3",
    "fg0.7": "foreground threshold 0.7",
}
# The ladder's seed and CAM figures, read from each map run's own metrics.json.
MAP_FIGURES: list[tuple[str, str]] = [
    (name, key) for name, stage, key in WEAK_FIGURES if stage == "localize_val"
]
ROWS = {"deterministic": "deterministic (p=0)", "fickle_0.9": "FickleNet p=0.9"}
Runs = dict[int, dict[str, float | None]]


def read_maps(diag: Path) -> dict[tuple[str, str, str], Runs]:
    """{(row, variant, split): {seed: figures}} from ``maps/``."""
    out: dict[tuple[str, str, str], Runs] = {}
    for metrics in sorted(diag.glob("maps/*/seed*/*/metrics.json")):
        run = metrics.parent
        match = re.fullmatch(r"(.+)_(train|val)", run.name)
        seed = re.fullmatch(r"seed(\d+)", run.parent.name)
        if match is None or seed is None:
            continue
        data = json.loads(metrics.read_text())
        figures = {name: _float(data.get(key)) for name, key in MAP_FIGURES}
        out.setdefault((run.parent.parent.name, match[1], match[2]), {})[int(seed[1])] = figures
    return out


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def read_gxa(diag: Path, maps: dict[tuple[str, str, str], Runs]) -> dict[str, Runs]:
    """{row: {seed: ladder-style figures}} of the grad_x_act pipelines; their val
    seed and CAM figures come from the ``grad_x_act`` map runs on val."""
    out: dict[str, Runs] = {}
    for metrics in sorted(diag.glob("gxa/*/seed*/metrics.json")):
        job = metrics.parent
        row, seed = job.parent.name, int(job.name.removeprefix("seed"))
        figures = read_figures(job)
        for name, value in maps.get((row, "grad_x_act", "val"), {}).get(seed, {}).items():
            figures[name] = value
        if figures["segmenter mIoU"] is not None:
            out.setdefault(row, {})[seed] = figures
    return out


def read_sweeps(root: Path, pattern: str) -> dict[str, Runs]:
    """{table5 row: {seed: figures}} of the pipeline sweeps matching ``pattern``."""
    out: dict[str, Runs] = {}
    for metrics in sorted(root.glob(pattern)):
        job = metrics.parent
        overrides = job_overrides(job)
        figures = read_figures(job)
        if "table5" in overrides and figures["segmenter mIoU"] is not None:
            out.setdefault(overrides["table5"], {})[int(overrides.get("seed", 0))] = figures
    return out


def _diff(c: dict[str, Any] | None) -> str:
    if c is None:
        return "–"
    mark = "" if c["no_difference"] else " *"
    return f"{100 * c['mean']:+.1f} ± {100 * c['std']:.1f}{mark}"


def _fickle_minus_deterministic(runs: dict[str, Runs], what: str) -> list[tuple[str, Runs, Runs]]:
    """The FickleNet − deterministic pair of one setting's rows, when it has both."""
    if {"fickle_0.9", "deterministic"} <= runs.keys():
        return [(f"FickleNet − deterministic, {what}", runs["fickle_0.9"], runs["deterministic"])]
    return []


def _table(rows: list[tuple[str, Runs]], names: list[str]) -> list[str]:
    lines = ["| row | seeds | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for label, runs in rows:
        summary = summarize(runs, names)
        cells = " | ".join(fmt(summary, n) for n in names)
        lines.append(f"| {label} | {len(runs)} | {cells} |")
    return lines


def _paired_table(pairs: list[tuple[str, Runs, Runs]], names: list[str]) -> list[str]:
    lines = ["| a − b | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, a, b in pairs:
        lines.append(f"| {label} | " + " | ".join(_diff(paired_on(a, b, n)) for n in names) + " |")
    return lines


def gather(diag: Path, ladder: Path) -> dict[str, Any]:
    maps = read_maps(diag)
    gxa = read_gxa(diag, maps)
    s5 = read_sweeps(diag, "s5_*/*/metrics.json")
    s3 = read_sweeps(ladder, "table5*/*/metrics.json")
    return {"maps": maps, "gxa": gxa, "s5": s5, "ladder": s3}


def markdown(result: dict[str, Any]) -> str:
    maps, gxa, s5, s3 = result["maps"], result["gxa"], result["s5"], result["ladder"]
    map_names = [n for n, _ in MAP_FIGURES]
    out: list[str] = []
    for split in ("val", "train"):
        rows = [
            (f"{ROWS[row]}, {VARIANTS[v]}", maps[(row, v, split)])
            for row in ROWS
            for v in VARIANTS
            if (row, v, split) in maps
        ]
        if not rows:
            continue
        out += [f"## Map-time settings on the ladder's classifiers ({split}; %)", ""]
        out += _table(rows, map_names) + [""]
        pairs = [
            (
                f"{ROWS[row]}: {VARIANTS[v]} − as in the ladder",
                maps[(row, v, split)],
                maps[(row, "ladder", split)],
            )
            for row in ROWS
            for v in VARIANTS
            if v != "ladder" and (row, v, split) in maps and (row, "ladder", split) in maps
        ]
        out += ["Paired by training seed (points; * = paired t p < 0.05):", ""]
        out += _paired_table(pairs, ["seed mIoU", "CAM object recall"]) + [""]
    seg_names = [
        "seed mIoU",
        "CAM object recall",
        "seed mIoU (train)",
        "segmenter mIoU",
        "segmenter mIoU + CRF",
    ]
    if gxa:
        rows = [(f"{ROWS[r]}, gradcam (the ladder)", s3[r]) for r in ROWS if r in s3]
        rows += [(f"{ROWS[r]}, grad_x_act", gxa[r]) for r in ROWS if r in gxa]
        out += ["## grad_x_act maps → DSRG (val; %)", "", *_table(rows, seg_names), ""]
        pairs = _fickle_minus_deterministic(gxa, "both grad_x_act")
        pairs += [
            (f"{ROWS[r]}: grad_x_act − gradcam", gxa[r], s3[r])
            for r in ROWS
            if r in gxa and r in s3
        ]
        if "deterministic" in gxa and "fickle_0.9" in s3:
            # Each classifier with the formula `train` chose for it (experiments/defaults).
            pairs.append(
                (
                    "deterministic grad_x_act − FickleNet gradcam (each as train chose)",
                    gxa["deterministic"],
                    s3["fickle_0.9"],
                )
            )
        out += ["Paired by training seed (points; * = paired t p < 0.05):", ""]
        out += _paired_table(pairs, seg_names) + [""]
    if s5:
        names = ["classifier mAP", *seg_names]
        rows = [(f"{ROWS[r]}, s=3 (the ladder)", s3[r]) for r in ROWS if r in s3]
        rows += [(f"{ROWS[r]}, s=5", s5[r]) for r in ROWS if r in s5]
        out += ["## Window size s=5 (val; %)", "", *_table(rows, names), ""]
        pairs = _fickle_minus_deterministic(s5, "both s=5")
        pairs += [(f"{ROWS[r]}: s=5 − s=3", s5[r], s3[r]) for r in ROWS if r in s5 and r in s3]
        out += ["Paired by training seed (points; * = paired t p < 0.05):", ""]
        out += _paired_table(pairs, names) + [""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("diag_dir", nargs="?", default="runs/diagnosis")
    parser.add_argument("--ladder", default="runs/ladder")
    parser.add_argument("--out", default=str(HERE))
    args = parser.parse_args()
    result = gather(Path(args.diag_dir), Path(args.ladder))
    out = Path(args.out)
    serial = {
        "maps": {"/".join(k): v for k, v in result["maps"].items()},
        "gxa": result["gxa"],
        "s5": result["s5"],
    }
    write_results(out, serial, markdown(result), indent=2)


if __name__ == "__main__":
    main()
