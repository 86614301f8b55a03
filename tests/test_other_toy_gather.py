"""experiments/other_toy/gather.py on hand-written runs, against numbers worked out by hand."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def gather_mod():
    return importlib.import_module("experiments.other_toy.gather")


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _pipeline(runs: Path, row: str, seed: int, miou: float, classifier: bool = True) -> None:
    job = runs / row / f"seed{seed}"
    _write(job / "metrics.json", {"evaluate": {"miou": miou}, "evaluate_crf": {"miou": miou + 0.1}})
    if classifier:  # a whole pipeline: the classifier inside the run, seeds on val beside it
        _write(job / "classify" / "metrics.json", {"val/mAP": 0.9 + 0.01 * seed})
        _write(job / "localize_val" / "metrics.json", {"seed/miou": miou + 0.05})


def test_rows_and_the_paired_difference(gather_mod, tmp_path):
    for seed, (sup, det, fickle) in enumerate([(0.8, 0.60, 0.62), (0.84, 0.64, 0.63)]):
        _pipeline(tmp_path, "supervised", seed, sup, classifier=False)
        _pipeline(tmp_path, "deterministic", seed, det)
        _pipeline(tmp_path, "fickle_0.9", seed, fickle)
    _write(tmp_path / "fickle_0.9" / "seed2" / "metrics.json", {})  # unfinished: left out
    result = gather_mod.gather(tmp_path)
    summary = result["rows"]["supervised"]["summary"]
    assert summary["segmenter mIoU"]["mean"] == pytest.approx(0.82)
    assert summary["segmenter mIoU + CRF"]["mean"] == pytest.approx(0.92)
    assert result["rows"]["deterministic"]["summary"]["classifier mAP"]["mean"] == pytest.approx(
        0.905
    )
    assert set(result["rows"]["fickle_0.9"]["runs"]) == {0, 1}
    diff = result["fickle_minus_deterministic"]["segmenter mIoU"]
    assert diff["differences"] == pytest.approx([0.02, -0.01])
    assert diff["no_difference"]
    text = gather_mod.markdown(result)
    assert "| fully supervised (ceiling) | – | 2 |" in text
    assert "| FickleNet p=0.9 → DSRG | `gradcam` | 2 |" in text
    assert "| segmenter mIoU | +2.0, -1.0 | +0.5 ± 2.1 |" in text
