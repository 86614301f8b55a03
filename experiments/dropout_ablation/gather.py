"""Gather the dropout ablation (paper Table 5) from ``runs/dropout_ablation/*``.

    python experiments/dropout_ablation/gather.py [RUNS_DIR]

Reads every ``<RUNS_DIR>/<kind>_p<p>/metrics.json`` written by ``ficklenet-pipeline``
(default ``runs/dropout_ablation``) and writes ``results.md`` and ``results.png``
next to this file: the toy figures of each setting beside the paper's Table 5
val mIoU (PASCAL VOC 2012 val, DeepLab-VGG16 + DSRG).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# Paper Table 5 (VOC 2012 val mIoU %, VGG16), keyed by (kind, p).
PAPER_TABLE5: dict[tuple[str, float], float] = {
    ("deterministic", 0.0): 56.3,
    ("general", 0.5): 45.6,
    ("general", 0.9): 49.1,
    ("fickle", 0.3): 58.8,
    ("fickle", 0.5): 59.4,
    ("fickle", 0.7): 60.0,
    ("fickle", 0.9): 61.2,
}
KIND_ORDER = ("deterministic", "general", "fickle")
KIND_LABEL = {
    "deterministic": "deterministic",
    "general": "general dropout",
    "fickle": "FickleNet",
}

# (column header, stage, metrics key) of the toy figures, all fractions in [0, 1].
COLUMNS: list[tuple[str, str, str]] = [
    ("classifier val mAP", "classify", "val/mAP_best"),
    ("seed mIoU", "localize", "seed/miou"),
    ("seed precision", "localize", "seed/precision"),
    ("segmenter val mIoU", "evaluate", "miou"),
    ("segmenter val mIoU + CRF", "evaluate_crf", "miou"),
]


def _kind_and_p(run: Path, metrics: dict[str, Any]) -> tuple[str, float]:
    """Dropout kind and rate of a run: from its classify metrics, else its config."""
    cls = metrics.get("classify", {})
    kind, p = cls.get("model.dropout"), cls.get("model.p")
    if kind is None or p is None:
        cfg_path = run / "classify" / "config.yaml"
        if cfg_path.is_file():
            from omegaconf import OmegaConf

            model = OmegaConf.load(cfg_path).get("model", {})
            kind = model.get("dropout", kind)
            p = model.get("p", p)
    if kind is None or p is None:
        # last resort: the folder name, <kind>_p<p>
        name_kind, _, name_p = run.name.rpartition("_p")
        kind = kind if kind is not None else name_kind
        p = p if p is not None else float(name_p)
    p = float(p)
    # p = 0 drops nothing whatever the kind: the deterministic classifier.
    return ("deterministic" if p == 0 else str(kind)), p


def gather(runs_dir: str | Path) -> list[dict[str, Any]]:
    """One row per run (sorted by kind, then p): kind, p, run, the toy figures
    (``COLUMNS`` headers, fractions or None when the stage has not finished) and
    ``paper`` (Table 5 val mIoU in %, or None for a setting not in the table)."""
    rows = []
    for path in sorted(Path(runs_dir).glob("*/metrics.json")):
        metrics = json.loads(path.read_text())
        kind, p = _kind_and_p(path.parent, metrics)
        row: dict[str, Any] = {"kind": kind, "p": p, "run": path.parent.name}
        for header, stage, key in COLUMNS:
            value = metrics.get(stage, {}).get(key)
            row[header] = None if value is None else float(value)
        row["paper"] = PAPER_TABLE5.get((kind, round(p, 3)))
        rows.append(row)
    order = {k: i for i, k in enumerate(KIND_ORDER)}
    rows.sort(key=lambda r: (order.get(r["kind"], len(order)), r["kind"], r["p"]))
    return rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """The results table (toy figures in %, paper Table 5 val mIoU in %)."""
    headers = ["kind", "p"] + [h for h, _, _ in COLUMNS] + ["paper Table 5 val mIoU (VOC)"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        cells = [KIND_LABEL.get(r["kind"], r["kind"]), f"{r['p']:g}"]
        cells += [_pct(r[h]) for h, _, _ in COLUMNS]
        cells.append("-" if r["paper"] is None else f"{r['paper']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Segmenter val mIoU vs p, one line per kind: toy (left; solid without CRF,
    dashed with) and the paper's Table 5 (right). The deterministic classifier
    (p=0) is one point, drawn with a dotted reference line across."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"deterministic": "black", "general": "tab:orange", "fickle": "tab:blue"}
    fig, (toy, paper) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    kinds = [k for k in KIND_ORDER if any(r["kind"] == k for r in rows)]
    kinds += sorted({r["kind"] for r in rows} - set(kinds))
    for kind in kinds:
        sel = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["p"])
        colour = colours.get(kind)
        label = KIND_LABEL.get(kind, kind)
        marker = "s" if kind == "deterministic" else "o"
        for header, style, suffix in (
            ("segmenter val mIoU", "-", ""),
            ("segmenter val mIoU + CRF", "--", " + CRF"),
        ):
            pts = [(r["p"], 100 * r[header]) for r in sel if r[header] is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                face = "none" if suffix else colour
                toy.plot(xs, ys, style, marker=marker, color=colour, mfc=face, label=label + suffix)
                if kind == "deterministic":  # one point: also a reference line
                    toy.axhline(ys[0], ls=":", lw=1, color=colour)
        pts = [(r["p"], r["paper"]) for r in sel if r["paper"] is not None]
        if pts:
            xs, ys = zip(*pts, strict=True)
            paper.plot(xs, ys, "-", marker=marker, color=colour, label=label)
            if kind == "deterministic":
                paper.axhline(ys[0], ls=":", lw=1, color=colour)
    toy.set_title("toy data (this repo, CPU): segmenter val mIoU")
    paper.set_title("paper Table 5 (VOC 2012 val, VGG16)")
    for ax in (toy, paper):
        ax.set_xlabel("dropout rate p")
        ax.set_ylabel("mIoU (%)")
        ax.set_xlim(-0.05, 1.0)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    runs_dir = Path(argv[0]) if argv else Path("runs/dropout_ablation")
    rows = gather(runs_dir)
    if not rows:
        raise SystemExit(f"no {runs_dir}/*/metrics.json: run experiments/dropout_ablation/run.sh")
    table = to_markdown(rows)
    text = (
        f"# Dropout ablation (paper Table 5) on the toy data\n\n"
        f"Gathered from `{runs_dir}/*/metrics.json` by "
        f"`experiments/dropout_ablation/gather.py`. Toy figures in % "
        f"(classifier mAP on toy val; seeds on the localize split; segmenter on toy "
        f"val); the last column is the paper's VOC 2012 val mIoU (DeepLab-VGG16).\n\n"
        f"{table}\n![segmenter mIoU vs p](results.png)\n"
    )
    (HERE / "results.md").write_text(text)
    plot(rows, HERE / "results.png")
    print(table)


if __name__ == "__main__":
    main()
