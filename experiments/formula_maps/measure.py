"""How much do the stochastic maps move from mask to mask, under each formula?

    python experiments/formula_maps/measure.py RUN [RUN ...] --out experiments/formula_maps \\
        [--images 20] [--n 20] [--figure docs/figures/formula_maps.png]

Each RUN is a pipeline run directory (``localize/`` and ``segment/``; the ladder's
``runs/ladder/<level>/<row>/<formula>/seed<s>``). For the first ``--images`` images of
its localize split, the classifier's ``--n`` stochastic maps are redrawn from the
same masks under every formula (:meth:`ficklenet.inspection.RunView.formula_maps`)
and their mask-to-mask variation is measured (:meth:`FormulaMaps.variation`: the
mean over feature cells of the standard deviation across the N max-normalised maps).
Writes ``results.md`` / ``results.json`` to ``--out``, and with ``--figure`` the
first run's first image as a picture (the N maps and their union per formula).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ficklenet.inspection import load_run, plot_formula_maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--figure", type=Path)
    parser.add_argument("--figure-image", help="image id of the figure (default: the first)")
    args = parser.parse_args()
    rows = []
    for k, run in enumerate(args.runs):
        view = load_run(run)
        cfg = view.localize_cfg
        per_image: dict[str, list[float]] = {}
        for image_id in view.image_ids(args.images):
            fm = view.formula_maps(image_id, args.n)
            for formula, v in fm.variation().items():
                per_image.setdefault(formula, []).append(v)
        rows.append(
            {
                "run": str(run),
                "p": float(view.classifier.head.p),
                "seed": int(cfg.seed),
                "variation": {f: float(np.mean(v)) for f, v in per_image.items()},
            }
        )
        print(rows[-1])
        if k == 0 and args.figure:
            image_id = args.figure_image or view.image_ids(1)[0]
            fig = plot_formula_maps(view.formula_maps(image_id, min(args.n, 8)))
            args.figure.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(args.figure, dpi=110)
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {"images": args.images, "n": args.n}
    (args.out / "results.json").write_text(
        json.dumps({"settings": settings, "rows": rows}, indent=1) + "\n"
    )
    formulas = sorted({f for r in rows for f in r["variation"]})
    lines = [
        "# Mask-to-mask variation of the stochastic maps, per formula",
        "",
        "Command: `python experiments/formula_maps/measure.py " + " ".join(sys.argv[1:]) + "`.",
        "",
        f"First {args.images} images of each run's localize split, N={args.n} masks, the same "
        "masks under each formula; variation = mean over feature cells of the std across the "
        "N max-normalised maps (0: every mask gives the same map).",
        "",
        "| run | classifier p | " + " | ".join(f"`{f}`" for f in formulas) + " |",
        "|---|---|" + "---|" * len(formulas),
    ]
    for r in rows:
        cells = " | ".join(f"{r['variation'][f]:.4f}" for f in formulas)
        lines.append(f"| `{r['run']}` | {r['p']} | {cells} |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
