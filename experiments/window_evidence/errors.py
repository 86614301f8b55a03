"""Where a segmenter's val errors fall on the toy: on the object's outline, or inside
a body given a sibling class's label.

    python experiments/window_evidence/errors.py LABEL=FOLDER [LABEL=FOLDER ...] \
        [--stage evaluate] [--out DIR]

Each ``FOLDER`` holds ``seed<N>/`` pipeline folders whose ``<stage>/`` (default
``evaluate``: no CRF) has ``predictions/`` and a ``metrics.json`` naming the data root
and split it scored. Every mislabelled val pixel falls in one of three kinds:

- *object as background* and *background as object*: the outline;
- *another class*: an object pixel given another object class. Of those, *sibling
  class*: a class whose body has the same texture, as the toy set records it
  (``ficklenet.data.toy.recorded_body_styles``), which only the class-specific part,
  or the body's tint where there is body evidence, tells apart. Data whose generator
  records no bodies gets no sibling figure.

The table gives the pixel error rate and each kind's share of the errors, mean ± std
over seeds. The question it answers (docs/proving_ground.md, "Window and body
evidence"): the fully supervised segmenter is worse on the 192-pixel toy than on the
96-pixel one; is that the outline, or bodies whose part lies beyond the segmenter's
field of view?
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ficklenet.analysis.runs import seed_folders, write_results
from ficklenet.analysis.stats import fmt, summarize
from ficklenet.data.classes import NUM_CLASSES
from ficklenet.data.toy import recorded_body_styles
from ficklenet.data.voc import VOCReader, read_label_png
from ficklenet.metrics import confusion_matrix

HERE = Path(__file__).resolve().parent
KINDS = ("object as background", "background as object", "another class", "sibling class")
FIGURES = ("pixel error", *KINDS)


def error_kinds(confusion: np.ndarray, styles: np.ndarray | None) -> dict[str, float | None]:
    """The pixel error rate and each kind's share of the errors, from a (21, 21)
    confusion matrix (rows truth, columns prediction; 0 is background) and the body
    texture of classes 1..20 (None: unknown, no sibling figure)."""
    wrong = confusion.astype(np.float64).copy()
    np.fill_diagonal(wrong, 0)
    errors = wrong.sum()
    objects = wrong[1:, 1:]
    counts = {
        "object as background": wrong[1:, 0].sum(),
        "background as object": wrong[0, 1:].sum(),
        "another class": objects.sum(),
    }
    if styles is not None:
        counts["sibling class"] = objects[styles[:, None] == styles[None, :]].sum()
    shares = {kind: float(n / errors) if errors else 0.0 for kind, n in counts.items()}
    return {"pixel error": float(errors / confusion.sum()), **shares}


def run_errors(stage: Path) -> dict[str, float | None]:
    """The error kinds of one stage folder's predictions against its val masks."""
    if not (stage / "metrics.json").is_file():
        raise SystemExit(f"{stage / 'metrics.json'}: missing; is the {stage.name} stage finished?")
    metrics = json.loads((stage / "metrics.json").read_text())
    reader = VOCReader(metrics["data_root"], metrics["split"], labels_from="mask")
    total = np.zeros((NUM_CLASSES + 1, NUM_CLASSES + 1), dtype=np.int64)
    for png in sorted((stage / "predictions").glob("*.png")):
        truth = reader.mask(png.stem)
        if truth is None:
            raise SystemExit(f"{png}: no ground-truth mask for {png.stem} under {reader}")
        total += confusion_matrix(read_label_png(png), truth, NUM_CLASSES + 1)
    if not total.any():
        raise SystemExit(f"{stage / 'predictions'}: no predictions to score")
    return error_kinds(total, recorded_body_styles(metrics["data_root"]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("groups", nargs="+", help="LABEL=FOLDER of seed<N>/ pipelines")
    parser.add_argument("--stage", default="evaluate", help="the stage folder scored")
    parser.add_argument("--out", type=Path, default=HERE / "errors")
    args = parser.parse_args(argv)
    rows, result = [], {}
    for group in args.groups:
        label, _, folder = group.partition("=")
        if not folder:
            raise SystemExit(f"{group!r}: give LABEL=FOLDER")
        seeds = seed_folders(Path(folder))
        if not seeds:
            raise SystemExit(f"{folder}: no seed<N>/ folders")
        runs = {s: run_errors(p / args.stage) for s, p in seeds.items()}
        summary = summarize(runs, list(FIGURES))
        result[label] = {"folder": folder, "stage": args.stage, "runs": runs, **summary}
        rows.append(
            f"| {label} | {len(runs)} | " + " | ".join(fmt(summary, f) for f in FIGURES) + " |"
        )
    head = "| segmenter | seeds | " + " | ".join(f"{f} (%)" for f in FIGURES) + " |"
    text = "\n".join(
        [
            "# Where the segmenter's val errors fall",
            "",
            "Written by `python experiments/window_evidence/errors.py "
            + " ".join(args.groups)
            + (f" --stage {args.stage}" if args.stage != "evaluate" else "")
            + "`. Pixel error: the share of val pixels mislabelled; the kinds: each one's"
            " share of those errors (sibling class is part of another class; the"
            " script's docstring defines them).",
            "",
            head,
            "|" + "---|" * (len(FIGURES) + 2),
            *rows,
            "",
        ]
    )
    write_results(args.out, result, text)


if __name__ == "__main__":
    main()
