"""experiments/ladder/gather.py on a hand-written sweep folder, against numbers
worked out by hand."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def gather_mod():
    return importlib.import_module("experiments.ladder.gather")


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _weak(runs: Path, level: str, row: str, formula: str, seed: int, miou: float, seed_miou: float):
    job = runs / level / row / formula / f"seed{seed}"
    _write(
        job / "metrics.json",
        {
            "evaluate": {"miou": miou},
            "evaluate_crf": {"miou": miou + 0.02},
            "segment": {"seed/miou": 0.7, "grown_seed/miou": 0.75, "train/miou": 0.8},
        },
    )
    _write(
        job / "localize_val" / "metrics.json", {"seed/miou": seed_miou, "cam/object_recall": 0.5}
    )
    _write(runs / "cls" / row / f"seed{seed}" / "metrics.json", {"val/mAP": 0.9})


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    fickle = {0: 0.50, 1: 0.46, 2: 0.48}
    determ = {0: 0.44, 1: 0.45, 2: 0.43}
    for seed in (0, 1, 2):
        _weak(tmp_path, "realistic", "fickle_0.9", "gradcam", seed, fickle[seed], 0.6)
        _weak(tmp_path, "realistic", "deterministic", "gradcam", seed, determ[seed], 0.55)
        _weak(tmp_path, "realistic", "deterministic", "grad_x_act", seed, 0.3, 0.5)
        _weak(tmp_path, "none", "fickle_0.9", "gradcam", seed, 0.4, 0.5)
    for seed in (0, 1):  # the growing ablation: the same seeds, nothing grown
        _write(
            tmp_path
            / "realistic_no_growing"
            / "fickle_0.9"
            / "gradcam"
            / f"seed{seed}"
            / "metrics.json",
            {"evaluate": {"miou": 0.40 + 0.01 * seed}, "evaluate_crf": {"miou": 0.45}},
        )
    for seed, value in ((0, 0.8), (1, 0.82)):
        _write(
            tmp_path / "supervised" / f"seed{seed}" / "metrics.json",
            {"evaluate": {"miou": value}, "evaluate_crf": {"miou": value + 0.02}},
        )
    return tmp_path


CHOICE = {
    "levels": {
        "realistic": {
            "rows": {
                "fickle_0.9": {"formula": "gradcam"},
                "deterministic": {"formula": "grad_x_act"},
            }
        }
    }
}


def test_rows_means_and_standard_deviations(gather_mod, runs):
    result = gather_mod.gather_recipe(runs, CHOICE)
    assert set(result["weak"]) == {"realistic", "none"}
    assert set(result["weak"]["realistic"]) == {"fickle_0.9", "deterministic"}
    cell = result["weak"]["realistic"]["fickle_0.9"]["gradcam"]["summary"]["segmenter mIoU"]
    assert cell["n"] == 3 and cell["mean"] == pytest.approx(0.48)
    assert cell["std"] == pytest.approx(0.02)  # sqrt(((.02)^2 + (.02)^2 + 0) / 2)
    sup = result["bars"]["supervised"]["summary"]["segmenter mIoU + CRF"]
    assert sup["mean"] == pytest.approx(0.83) and sup["std"] == pytest.approx(math.sqrt(2e-4))
    det = result["weak"]["realistic"]["deterministic"]["gradcam"]["summary"]
    assert det["seed mIoU"]["mean"] == pytest.approx(0.55)
    assert det["classifier mAP"]["mean"] == pytest.approx(0.9)
    assert det["grown mIoU"]["mean"] == pytest.approx(0.75)  # what growing did
    assert result["chosen"]["realistic"] == {"fickle_0.9": "gradcam", "deterministic": "grad_x_act"}


def test_paired_comparison_by_seed(gather_mod, runs):
    comps = gather_mod.gather_recipe(runs, CHOICE)["fickle_minus_deterministic"]
    assert set(comps) == {"realistic"}  # "none" lacks the deterministic row
    comp = comps["realistic"]["gradcam"]["segmenter mIoU"]
    # differences by seed: +0.06, +0.01, +0.05 -> mean 0.04, std sqrt(0.0007)
    assert comp["differences"] == pytest.approx([0.06, 0.01, 0.05])
    assert comp["mean"] == pytest.approx(0.04) and comp["std"] == pytest.approx(math.sqrt(7e-4))
    t = 0.04 / (math.sqrt(7e-4) / math.sqrt(3))
    assert comp["t"] == pytest.approx(t)
    # Student's t with 2 degrees of freedom: P(|T| > t) = 1 - t / sqrt(2 + t^2).
    assert comp["p_t"] == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-6)
    # All three differences positive: of the 8 sign patterns only all-+ and all-- reach
    # a mean as large.
    assert comp["p_permutation"] == pytest.approx(2 / 8)
    # The mean lies 2.6 standard errors from 0, but with two degrees of freedom that is
    # p = 0.12: no difference (a difference needs p < 0.05).
    assert comp["no_difference"]
    # Each with its chosen formula: FickleNet's gradcam against the deterministic
    # classifier's grad_x_act (0.30 every seed).
    chosen = comps["realistic"]["chosen"]["segmenter mIoU"]
    assert chosen["differences"] == pytest.approx([0.20, 0.16, 0.18])
    assert not chosen["no_difference"]  # t = 0.18 / (0.02 / sqrt 3) = 15.6: p = 0.004
    assert "grad_x_act" not in comps["realistic"]  # FickleNet has no grad_x_act run


def test_markdown_and_plots(gather_mod, runs, tmp_path):
    result = gather_mod.gather_recipe(runs, CHOICE)
    text = gather_mod.markdown_recipe(result)
    assert "| fully supervised (ceiling) | – | 2 |" in text
    assert "48.0 ± 2.0" in text and "61.2" in text  # the paper's Table 5 beside ours
    assert "`grad_x_act`*" in text  # the deterministic classifier's chosen formula
    assert "What DSRG's growing does" in text and "75.0" in text
    assert "With growing − without" in text
    gather_mod.plot_table5(result, tmp_path / "t5.png")
    gather_mod.plot_saliency_axis(result, tmp_path / "axis.png")
    assert (tmp_path / "t5.png").stat().st_size > 1000
    assert (tmp_path / "axis.png").stat().st_size > 1000


def test_growing_ablation_paired_with_the_grown_runs(gather_mod, runs):
    row = gather_mod.gather_recipe(runs, CHOICE)["no_growing"]["fickle_0.9"]["gradcam"]
    # with growing 0.50, 0.46 (seeds 0, 1); without 0.40, 0.41 -> +0.10, +0.05
    diff = row["growing_minus_none"]["segmenter mIoU"]
    assert diff["differences"] == pytest.approx([0.10, 0.05])
    assert row["growing_minus_none"]["segmenter mIoU + CRF"]["differences"] == pytest.approx(
        [0.07, 0.03]
    )
