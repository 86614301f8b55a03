"""Gather window size x body evidence (``run.sh``) into ``results.md`` and ``results.json``.

    python experiments/window_evidence/gather.py [RUNS_DIR] [--ladder LADDER_DIR] [--out DIR]

Reads ``RUNS_DIR`` (default ``runs/window_evidence``) as ``run.sh`` lays it out:
``premise/ev<e>/seed<s>/`` (classifiers trained and tested with every part erased);
per setting ``<map>_s<window>_ev<e>/``: ``cls/<row>/seed<s>/``, ``choice/choice.json``
and the pipelines ``<row>/<formula>/seed<s>/`` (with ``localize_val/``). The cell
``w12_s3_ev0`` is the ladder's own (``--ladder``, default ``runs/ladder``: its
``realistic/`` pipelines, ``cls/`` and ``experiments/recipe/choice.json``).
``ceiling/w<map>_ev<e>/seed<s>/`` hold the fully supervised segmenter of each toy (the
default toy's, ``w12_ev0``, is the ladder's ``supervised/`` bar).

The premise table sets each erased classifier's val mAP beside the intact one's and
beside two floors computed from the val labels alone: *chance* (scores that know
nothing: the mean AP of random scores) and *the body's group* (scores that know
which texture groups are in the image and nothing more: 1 for each of the four
classes of a present group, 0 otherwise, ties broken at random). Statistics are
``ficklenet.analysis.stats``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torchmetrics.classification import MultilabelAveragePrecision

from ficklenet.analysis.runs import (
    ROW_LABELS,
    TABLE_FIGURES,
    read_figures,
    seed_folders,
    write_results,
)
from ficklenet.analysis.stats import SIGNIFICANCE, fmt, paired_on, summarize
from ficklenet.data.classes import NUM_CLASSES
from ficklenet.data.toy import recorded_body_styles, toy_settings
from ficklenet.data.voc import VOCReader
from ficklenet.metric_names import VAL_MAP

HERE = Path(__file__).resolve().parent

ROWS = ("deterministic", "fickle_0.9")
FORMULAS = ("gradcam", "grad_x_act")
LADDER_CELL = "w12_s3_ev0"
SETTING = re.compile(r"^w(?P<map>\d+)_s(?P<s>\d+)_ev(?P<ev>[0-9.]+)$")
FLOOR_DRAWS = 200  # random tie-breaks (and random scores) averaged for the floors
PAIRED = ["seed mIoU", "CAM object recall", "segmenter mIoU", "segmenter mIoU + CRF"]
CEILING = ["segmenter mIoU", "segmenter mIoU + CRF"]


def mean_ap(scores: np.ndarray, targets: np.ndarray) -> float:
    """Macro mAP over the 20 labels, as the classifier's val/mAP is computed."""
    metric = MultilabelAveragePrecision(num_labels=NUM_CLASSES, average="macro")
    return float(metric(torch.as_tensor(scores), torch.as_tensor(targets).long()))


def floors(targets: np.ndarray, styles: np.ndarray, seed: int = 0) -> dict[str, float]:
    """The chance and body-group mAP of multi-hot ``targets`` (images x 20), the
    classes' body textures being ``styles`` (20,)."""
    rng = np.random.default_rng(seed)
    same = (styles[:, None] == styles[None, :]).astype(np.float64)
    group = ((targets @ same) > 0).astype(np.float64)  # 1 for every class of a present group
    chance, grouped = [], []
    for _ in range(FLOOR_DRAWS):
        chance.append(mean_ap(rng.random(targets.shape), targets))
        grouped.append(mean_ap(group + 1e-3 * rng.random(targets.shape), targets))
    return {"chance": float(np.mean(chance)), "group": float(np.mean(grouped))}


def val_targets(root: Path) -> np.ndarray:
    reader = VOCReader(root, "val")
    return np.stack([reader.label_vector(i) for i in reader.ids])


def _mAP(folder: Path) -> dict[int, float]:
    out = {}
    for seed, job in seed_folders(folder).items():
        path = job / "metrics.json"
        if path.is_file() and VAL_MAP in (data := json.loads(path.read_text())):
            out[seed] = float(data[VAL_MAP])
    return out


def gather_premise(runs_dir: Path, ladder_dir: Path) -> dict[str, Any]:
    """{evidence: erased and intact mAP per seed, the floors}."""
    out: dict[str, Any] = {}
    for folder in sorted((runs_dir / "premise").glob("ev*")):
        ev = folder.name[2:]
        erased = _mAP(folder)
        if not erased:
            continue
        intact_dir = (
            ladder_dir / "cls" / "deterministic"
            if float(ev) == 0
            else runs_dir / f"w12_s3_ev{ev}" / "cls" / "deterministic"
        )
        root = Path(_config_root(next(iter(seed_folders(folder).values()))))
        made = toy_settings(root)
        styles = recorded_body_styles(root)
        if styles is None:
            raise SystemExit(f"{root}: not a toy set that records its classes' body textures")
        out[ev] = {
            "erased": erased,
            "intact": _mAP(intact_dir),
            "toy": made["params"] if made else None,
            **floors(val_targets(root), styles),
        }
    return out


def _config_root(job: Path) -> str:
    """The dataset root a classify run read (its ``config.yaml``)."""
    return str(OmegaConf.load(job / "config.yaml").data.root)


def toy_of(setting: str) -> str:
    """The toy a setting runs on: ``w24_s9_ev0.5`` -> ``w24_ev0.5`` (the window is the
    classifier's, not the data's)."""
    m = SETTING.match(setting)
    assert m is not None, setting
    return f"w{m['map']}_ev{m['ev']}"


def gather_ceilings(runs_dir: Path, ladder_dir: Path) -> dict[str, Any]:
    """{toy: {"runs": {seed: figures}, "summary": ...}} of the fully supervised segmenters."""
    sources = {toy_of(LADDER_CELL): ladder_dir / "supervised"}
    sources.update({p.name: p for p in sorted((runs_dir / "ceiling").glob("w*_ev*"))})
    out = {}
    for toy, folder in sources.items():
        runs = {}
        for seed, job in seed_folders(folder).items():
            figures = read_figures(job, None)
            if all(figures[n] is not None for n in CEILING):
                runs[seed] = {n: figures[n] for n in CEILING}
        if runs:
            out[toy] = {"runs": runs, "summary": summarize(runs, CEILING)}
    return out


def _cell_runs(folder: Path, cls_dir: Path) -> dict[str, dict[str, dict[int, Any]]]:
    """{row: {formula: {seed: figures}}} of one setting's finished pipelines."""
    cell: dict[str, dict[str, dict[int, Any]]] = {}
    for row in ROWS:
        for formula in FORMULAS:
            runs = {}
            for seed, job in seed_folders(folder / row / formula).items():
                figures = read_figures(job, cls_dir / row / f"seed{seed}")
                if figures["segmenter mIoU + CRF"] is not None:
                    runs[seed] = figures
            if runs:
                cell.setdefault(row, {})[formula] = runs
    return cell


def _chosen(choice_path: Path) -> dict[str, str]:
    if not choice_path.is_file():
        return {}
    rows = json.loads(choice_path.read_text())["levels"]["realistic"]["rows"]
    return {row: rows[row]["formula"] for row in ROWS if row in rows}


def gather_cells(runs_dir: Path, ladder_dir: Path, choice: Path) -> dict[str, Any]:
    sources = {LADDER_CELL: (ladder_dir / "realistic", ladder_dir / "cls", choice)}
    for folder in sorted(p for p in runs_dir.iterdir() if SETTING.match(p.name)):
        sources[folder.name] = (folder, folder / "cls", folder / "choice" / "choice.json")
    cells: dict[str, Any] = {}
    for name, (folder, cls_dir, choice_path) in sources.items():
        runs = _cell_runs(folder, cls_dir)
        if not runs:
            continue
        chosen = _chosen(choice_path)
        summary = {
            row: {f: summarize(r, TABLE_FIGURES) for f, r in by_formula.items()}
            for row, by_formula in runs.items()
        }
        paired: dict[str, Any] = {}
        if set(ROWS) <= set(runs):
            det, fickle = runs["deterministic"], runs["fickle_0.9"]
            labels = [(f, f, f) for f in FORMULAS]
            if set(chosen) == set(ROWS):
                labels.append(("chosen", chosen["fickle_0.9"], chosen["deterministic"]))
            for label, f_fickle, f_det in labels:
                if f_fickle not in fickle or f_det not in det:
                    continue
                diffs = {n: paired_on(fickle[f_fickle], det[f_det], n) for n in PAIRED}
                diffs = {n: d for n, d in diffs.items() if d is not None}  # >= 2 pairs
                if diffs:
                    paired[label] = diffs
        cells[name] = {"runs": runs, "summary": summary, "chosen": chosen, "paired": paired}
    return cells


def _setting_label(name: str) -> str:
    m = SETTING.match(name)
    assert m is not None
    return f"{m['map']}×{m['map']} map, s={m['s']}, body evidence {m['ev']}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _diff(c: dict[str, Any] | None) -> str:
    if c is None:
        return "–"
    return f"{100 * c['mean']:+.1f} ± {100 * c['std']:.1f} (p {c['p_t']:.2f}, n {len(c['seeds'])})"


def glance(cells: dict[str, Any]) -> list[str]:
    """The window x evidence matrix of FickleNet − deterministic, each its chosen formula
    (segmenter val mIoU, points); "no difference" where the paired t test's p is not below
    the ladder's significance level."""
    windows: dict[str, dict[str, dict[str, Any] | None]] = {}
    for name, cell in cells.items():
        m = SETTING.match(name)
        assert m is not None
        window = f"{m['map']}×{m['map']} map, s={m['s']}"
        windows.setdefault(window, {})[m["ev"]] = (
            cell["paired"].get("chosen", {}).get("segmenter mIoU")
        )
    levels = sorted({ev for by_ev in windows.values() for ev in by_ev}, key=float)
    out = [
        "| window | " + " | ".join(f"body evidence {ev}" for ev in levels) + " |",
        "|---|" + "---|" * len(levels),
    ]
    for window, by_ev in windows.items():
        entries = []
        for ev in levels:
            c = by_ev.get(ev)
            if c is None:
                entries.append("not run" if ev not in by_ev else "–")
                continue
            verdict = "difference" if c["p_t"] < SIGNIFICANCE else "no difference"
            entries.append(f"{100 * c['mean']:+.1f} ± {100 * c['std']:.1f} ({verdict})")
        out.append(f"| {window} | " + " | ".join(entries) + " |")
    return out


def _ceiling(ceilings: dict[str, Any], setting: str) -> str:
    toy = ceilings.get(toy_of(setting))
    if toy is None:
        return "– | –"
    n = len(toy["runs"])
    return " | ".join(f"{fmt(toy['summary'], f)} (n {n})" for f in CEILING)


def markdown(
    premise: dict[str, Any], cells: dict[str, Any], ceilings: dict[str, Any] | None = None
) -> str:
    ceilings = ceilings or {}
    out = [
        "## At a glance: FickleNet p=0.9 − deterministic (segmenter val mIoU, points)",
        "",
        "Paired by training seed, each classifier with its formula chosen on train; mean ± "
        f"std of the differences; a difference only where the paired t test gives p < "
        f"{SIGNIFICANCE}. Details and every figure below.",
        "",
        *glance(cells),
        "",
    ]
    if premise:
        out += [
            "## The premise: class evidence in the bodies, parts erased (toy val, mAP %)",
            "",
            "| body evidence | erased: mAP | seeds | intact: mAP | seeds "
            "| the body's group | chance |",
            "|---|---|---|---|---|---|---|",
        ]
        for ev, p in sorted(premise.items(), key=lambda kv: float(kv[0])):
            erased = summarize({s: {"m": v} for s, v in p["erased"].items()}, ["m"])
            intact = summarize({s: {"m": v} for s, v in p["intact"].items()}, ["m"])
            out.append(
                f"| {ev} | {fmt(erased, 'm')} | {len(p['erased'])} | "
                f"{fmt(intact, 'm')} | {len(p['intact'])} | {_pct(p['group'])} | "
                f"{_pct(p['chance'])} |"
            )
    out += [
        "",
        "## FickleNet p=0.9 − deterministic, paired by training seed (segmenter val mIoU, points)",
        "",
        "Each cell: mean ± std of the differences, the paired t test's p, the pairs.",
        "",
        "| setting | each its chosen | `gradcam` | `grad_x_act` | + CRF, each its chosen "
        "| ceiling: fully supervised | ceiling + CRF |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, cell in cells.items():
        p = cell["paired"]

        def get(label: str, figure: str, p: dict[str, Any] = p) -> dict[str, Any] | None:
            return p.get(label, {}).get(figure)

        out.append(
            f"| {_setting_label(name)} | {_diff(get('chosen', 'segmenter mIoU'))} | "
            f"{_diff(get('gradcam', 'segmenter mIoU'))} | "
            f"{_diff(get('grad_x_act', 'segmenter mIoU'))} | "
            f"{_diff(get('chosen', 'segmenter mIoU + CRF'))} | {_ceiling(ceilings, name)} |"
        )
    out += [
        "",
        "## Every row (toy val, %; mean ± std over training seeds; * the formula chosen on train)",
        "",
        "| setting | row | formula | seeds | " + " | ".join(TABLE_FIGURES) + " |",
        "|---|---|---|---|" + "---|" * len(TABLE_FIGURES),
    ]
    for name, cell in cells.items():
        for row, by_formula in cell["summary"].items():
            for formula, summary in by_formula.items():
                mark = "*" if cell["chosen"].get(row) == formula else ""
                n = len(cell["runs"][row][formula])
                values = " | ".join(fmt(summary, figure) for figure in TABLE_FIGURES)
                out.append(
                    f"| {_setting_label(name)} | {ROW_LABELS[row]} | `{formula}`{mark} "
                    f"| {n} | {values} |"
                )
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", nargs="?", default="runs/window_evidence")
    parser.add_argument("--ladder", default="runs/ladder")
    parser.add_argument("--choice", default=str(HERE.parent / "recipe" / "choice.json"))
    parser.add_argument("--out", default=str(HERE))
    args = parser.parse_args()
    runs_dir, ladder_dir = Path(args.runs_dir), Path(args.ladder)
    premise = gather_premise(runs_dir, ladder_dir)
    cells = gather_cells(runs_dir, ladder_dir, Path(args.choice))
    ceilings = gather_ceilings(runs_dir, ladder_dir)
    result = {"premise": premise, "cells": cells, "ceilings": ceilings}
    write_results(Path(args.out), result, markdown(premise, cells, ceilings))


if __name__ == "__main__":
    main()
