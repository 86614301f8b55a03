"""Choose the recipe's localization settings on ``train``: the saliency threshold,
then each classifier's foreground threshold and map formula.

    python experiments/recipe/choose.py --runs RUNS.json \\
        --levels realistic=data/toy-voc perfect=data/toy-voc-perfect none= --out experiments/recipe

``RUNS.json`` lists localize runs of the split (their stored maps are read) as
``[{"row": "fickle_0.9", "formula": "gradcam", "seed": 0, "dir": "..."}, ...]``;
``--levels`` names each saliency level and the toy root holding its ``Saliency/``
(empty: no saliency, background from low class scores). The procedure, the
criterion and the grids of thresholds tried are :mod:`ficklenet.localization.tuning`'s;
``--fg-grid`` and ``--bg-grid`` try others (to see whether a choice at a grid's edge
would move past it). Writes ``choice.json`` (the
whole grid and the choices; ``settings.py`` reads it back as overrides) and
``choice.md``.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from omegaconf import OmegaConf
from tqdm import tqdm

from ficklenet.data.voc import VOCReader
from ficklenet.localization.tuning import FG_GRID, choose_recipe, grid_scores


def score_run(
    run: dict,
    split: str,
    saliency_root: str | None,
    fg_grid: list[float] | None = None,
    bg_grid: list[float] | None = None,
) -> list[dict]:
    """Grid rows of one localize run."""
    run_dir = Path(run["dir"])
    reader = VOCReader(Path(str(OmegaConf.load(run_dir / "config.yaml").data.root)), split)
    saliency = (
        VOCReader(Path(saliency_root), split, saliency_dir="Saliency") if saliency_root else None
    )
    label = {k: run[k] for k in ("row", "formula", "seed")}
    grid = grid_scores(run_dir / "maps", reader, saliency, fg_grid or FG_GRID, bg_grid)
    return [{**label, "fg": fg, "bg": bg, **fig} for (fg, bg), fig in grid.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True, help="JSON list of localize runs")
    parser.add_argument("--levels", nargs="+", required=True, help="name=toy root ('' = none)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--jobs", type=int, default=2, help="processes scoring runs")
    parser.add_argument("--fg-grid", type=float, nargs="+", help="foreground thresholds tried")
    parser.add_argument("--bg-grid", type=float, nargs="+", help="background thresholds tried")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs = json.loads(args.runs.read_text())
    result: dict = {"split": args.split, "runs": runs, "levels": {}}
    if args.fg_grid or args.bg_grid:
        result["grids"] = {"fg": args.fg_grid, "bg": args.bg_grid}  # None: the module's
    for spec in args.levels:
        name, _, root = spec.partition("=")
        table: list[dict] = []
        with ProcessPoolExecutor(args.jobs) as pool:
            futures = [
                pool.submit(score_run, run, args.split, root or None, args.fg_grid, args.bg_grid)
                for run in runs
            ]
            for future in tqdm(futures, desc=f"saliency {name}", unit="run"):
                table += future.result()
        result["levels"][name] = {
            "saliency_root": root or None,
            "background_key": "saliency_threshold" if root else "bg_threshold",
            **choose_recipe(table),
            "table": table,
        }
    args.out.mkdir(parents=True, exist_ok=True)
    write_choice(args.out / "choice.json", result)
    (args.out / "choice.md").write_text(report(result))
    print(report(result))


def write_choice(path: Path, result: dict) -> None:
    """The choice, indented, with its grid one compact row per line (figures to 5 digits)."""
    rounded = json.loads(json.dumps(result), parse_float=lambda v: round(float(v), 5))
    tables = {}
    for name, level in rounded["levels"].items():
        tables[name] = level["table"]
        level["table"] = f"@table:{name}"
    text = json.dumps(rounded, indent=1)
    for name, table in tables.items():
        rows = ",\n".join("  " + json.dumps(r) for r in table)
        text = text.replace(json.dumps(f"@table:{name}"), "[\n" + rows + "\n  ]")
    path.write_text(text + "\n")


def report(result: dict) -> str:
    lines = [
        f"# The recipe's localization settings, chosen on `{result['split']}`",
        "",
        "Written by `experiments/recipe/choose.py` (called by `experiments/ladder/run.sh`); "
        "criterion and procedure: `ficklenet.localization.tuning`.",
        "",
    ]
    if "grids" in result:
        grids = result["grids"]
        lines += [
            f"Grids tried instead of the module's: foreground {grids['fg'] or 'default'}, "
            f"background {grids['bg'] or 'default'}.",
            "",
        ]
    for name, level in result["levels"].items():
        key = level["background_key"]
        lines += [
            f"## Saliency: {name}",
            "",
            f"`localize.{key}={level['background_threshold']}`: the best on average over every "
            "classifier and formula. Per classifier: the coverage-aware seed mIoU on "
            f"`{result['split']}`, mean over its training seeds, at that background threshold, "
            "and the seed mIoU over labelled pixels, precision and labelled fraction there (the "
            "chosen formula in bold).",
            "",
            "| classifier | formula | fg threshold | coverage-aware seed mIoU | seed mIoU | "
            "precision | labelled |",
            "|---|---|---|---|---|---|---|",
        ]
        bg = level["background_threshold"]
        for row, entry in level["rows"].items():
            for formula, fg in entry["fg_threshold"].items():
                mark = "**" if formula == entry["formula"] else ""
                at = [
                    r
                    for r in level["table"]
                    if r["row"] == row
                    and r["formula"] == formula
                    and r["fg"] == fg
                    and r["bg"] == bg
                ]
                mean = {
                    k: 100 * sum(r[k] for r in at) / len(at)
                    for k in ("miou", "precision", "labelled")
                }
                score = 100 * entry["score"][formula]
                lines.append(
                    f"| {row} | {mark}{formula}{mark} | {fg} | {score:.1f} | "
                    f"{mean['miou']:.1f} | {mean['precision']:.1f} | {mean['labelled']:.1f} |"
                )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
