"""experiments/diagnosis/gather.py on hand-written run folders, against numbers
worked out by hand."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from ficklenet.analysis.stats import paired_on, summarize


@pytest.fixture(scope="module")
def gather_mod():
    return importlib.import_module("experiments.diagnosis.gather")


def _maps(diag: Path, row: str, seed: int, variant: str, split: str, recall: float) -> None:
    run = diag / "maps" / row / f"seed{seed}" / f"{variant}_{split}"
    run.mkdir(parents=True)
    metrics = {"seed/miou": 0.5, "cam/object_recall": recall, "seed/precision": 0.8}
    (run / "metrics.json").write_text(json.dumps(metrics))


def test_map_runs_are_keyed_and_compared_by_seed(gather_mod, tmp_path):
    for seed, (base, n1) in enumerate([(0.50, 0.46), (0.60, 0.55), (0.40, 0.37)]):
        _maps(tmp_path, "fickle_0.9", seed, "ladder", "val", base)
        _maps(tmp_path, "fickle_0.9", seed, "n1", "val", n1)
    _maps(tmp_path, "fickle_0.9", 0, "grad_x_act", "train", 0.7)
    maps = gather_mod.read_maps(tmp_path)
    assert set(maps) == {
        ("fickle_0.9", "ladder", "val"),
        ("fickle_0.9", "n1", "val"),
        ("fickle_0.9", "grad_x_act", "train"),
    }
    assert maps[("fickle_0.9", "grad_x_act", "train")][0]["CAM object recall"] == 0.7
    assert maps[("fickle_0.9", "n1", "val")][2]["seed labelled"] is None  # not in the file
    n1, ladder = maps[("fickle_0.9", "n1", "val")], maps[("fickle_0.9", "ladder", "val")]
    diff = paired_on(n1, ladder, "CAM object recall")
    # differences -0.04, -0.05, -0.03: mean -0.04, sample std 0.01
    assert diff["mean"] == pytest.approx(-0.04) and diff["std"] == pytest.approx(0.01)
    assert not diff["no_difference"]  # standard error 0.01/sqrt(3): the mean is 6.9 of them
    summary = summarize(maps[("fickle_0.9", "ladder", "val")], ["CAM object recall"])
    assert summary["CAM object recall"]["mean"] == pytest.approx(0.5)
    assert summary["CAM object recall"]["std"] == pytest.approx(0.1)


def test_markdown_marks_differences_the_paired_t_test_finds(gather_mod, tmp_path):
    for seed, (base, n1) in enumerate([(0.50, 0.46), (0.60, 0.55), (0.40, 0.37)]):
        _maps(tmp_path, "fickle_0.9", seed, "ladder", "val", base)
        _maps(tmp_path, "fickle_0.9", seed, "n1", "val", n1)
    text = gather_mod.markdown(gather_mod.gather(tmp_path, tmp_path / "no_ladder"))
    assert "| FickleNet p=0.9, N=1 | 3 |" in text
    assert "| FickleNet p=0.9: N=1 − as in the ladder | +0.0 ± 0.0 | -4.0 ± 1.0 * |" in text
