"""experiments/dropout_ablation/gather.py on a hand-written runs folder."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

GATHER = Path(__file__).resolve().parents[1] / "experiments" / "dropout_ablation" / "gather.py"


@pytest.fixture(scope="module")
def gather_mod():
    spec = importlib.util.spec_from_file_location("dropout_ablation_gather", GATHER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write_run(root: Path, name: str, kind: str | None, p: float | None, miou: float, crf=True):
    run = root / name
    run.mkdir(parents=True)
    classify = {"val/mAP_best": 0.7}
    if kind is not None:
        classify.update({"model.dropout": kind, "model.p": p})
    metrics = {
        "classify": classify,
        "localize": {"seed/miou": 0.6, "seed/precision": 0.9},
        "evaluate": {"miou": miou},
    }
    if crf:
        metrics["evaluate_crf"] = {"miou": miou + 0.01}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "dropout_ablation"
    _write_run(root, "fickle_p0.9", "fickle", 0.9, 0.45)
    _write_run(root, "fickle_p0", "fickle", 0.0, 0.41)
    _write_run(root, "general_p0.5", "general", 0.5, 0.40, crf=False)
    _write_run(root, "fickle_p0.3", "fickle", 0.3, 0.43)
    # kind and p from classify/config.yaml when the metrics do not say them
    old = _write_run(root, "general_p0.9", None, None, 0.39)
    (old / "classify").mkdir()
    (old / "classify" / "config.yaml").write_text("model:\n  p: 0.9\n  dropout: general\n")
    return root


def test_gather_rows(gather_mod, runs: Path):
    rows = gather_mod.gather(runs)
    assert [(r["kind"], r["p"]) for r in rows] == [
        ("deterministic", 0.0),
        ("general", 0.5),
        ("general", 0.9),
        ("fickle", 0.3),
        ("fickle", 0.9),
    ]
    assert [r["paper"] for r in rows] == [56.3, 45.6, 49.1, 58.8, 61.2]
    det = rows[0]
    assert det["segmenter val mIoU"] == pytest.approx(0.41)
    assert det["segmenter val mIoU + CRF"] == pytest.approx(0.42)
    assert det["classifier val mAP"] == pytest.approx(0.7)
    assert rows[1]["segmenter val mIoU + CRF"] is None  # evaluate_crf not finished


def test_to_markdown(gather_mod, runs: Path):
    text = gather_mod.to_markdown(gather_mod.gather(runs))
    lines = text.strip().splitlines()
    assert len(lines) == 2 + 5
    assert "paper Table 5 val mIoU" in lines[0]
    assert lines[2] == "| deterministic | 0 | 70.0 | 60.0 | 90.0 | 41.0 | 42.0 | 56.3 |"
    assert lines[3] == "| general dropout | 0.5 | 70.0 | 60.0 | 90.0 | 40.0 | - | 45.6 |"
    assert lines[-1].startswith("| FickleNet | 0.9 |") and lines[-1].endswith("| 61.2 |")


def test_plot_writes_png(gather_mod, runs: Path, tmp_path: Path):
    out = gather_mod.plot(gather_mod.gather(runs), tmp_path / "plots" / "results.png")
    assert out.is_file()
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
