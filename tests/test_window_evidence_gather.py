"""experiments/window_evidence/gather.py: the premise floors against closed forms, and
the paired cells on hand-written runs."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from ficklenet.data.toy import body_style


@pytest.fixture(scope="module")
def gather_mod():
    return importlib.import_module("experiments.window_evidence.gather")


def test_floors_against_closed_forms(gather_mod):
    # 20 images, image i holding class i+1 alone. Random scores rank the one positive
    # uniformly among 20: E[AP] = (1/20) sum 1/k. Group scores tie it with the other
    # three classes of its texture group: E[AP] = (1/4)(1 + 1/2 + 1/3 + 1/4).
    targets = np.eye(20, dtype=np.float32)
    styles = np.array([body_style(c) for c in range(1, 21)])  # four classes per texture
    got = gather_mod.floors(targets, styles)
    assert got["chance"] == pytest.approx(sum(1 / k for k in range(1, 21)) / 20, abs=0.015)
    assert got["group"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4, abs=0.015)


def test_mean_ap_of_perfect_scores_is_one(gather_mod):
    targets = np.eye(20, dtype=np.float32)
    assert gather_mod.mean_ap(targets.copy(), targets) == pytest.approx(1.0)


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _job(folder: Path, seed: int, miou: float) -> None:
    _write(
        folder / f"seed{seed}" / "metrics.json",
        {"evaluate": {"miou": miou}, "evaluate_crf": {"miou": miou + 0.1}},
    )


def test_cells_pair_each_row_with_its_chosen_formula(gather_mod, tmp_path):
    ladder, runs = tmp_path / "ladder", tmp_path / "runs"
    setting = runs / "w24_s5_ev0"
    choice = {
        "levels": {
            "realistic": {
                "rows": {
                    "deterministic": {"formula": "grad_x_act"},
                    "fickle_0.9": {"formula": "gradcam"},
                }
            }
        }
    }
    _write(setting / "choice" / "choice.json", choice)
    _write(tmp_path / "choice.json", choice)
    for seed, (det_gxa, det_gc, fn_gc) in enumerate([(0.60, 0.58, 0.65), (0.62, 0.61, 0.66)]):
        for base in (ladder / "realistic", setting):
            _job(base / "deterministic" / "grad_x_act", seed, det_gxa)
            _job(base / "deterministic" / "gradcam", seed, det_gc)
            _job(base / "fickle_0.9" / "gradcam", seed, fn_gc)
    _job(setting / "fickle_0.9" / "grad_x_act", 0, 0.5)  # one seed only: no pair of two
    cells = gather_mod.gather_cells(runs, ladder, tmp_path / "choice.json")
    assert set(cells) == {"w12_s3_ev0", "w24_s5_ev0"}
    for cell in cells.values():
        chosen = cell["paired"]["chosen"]["segmenter mIoU"]
        assert chosen["differences"] == pytest.approx([0.05, 0.04])  # gradcam - grad_x_act
        same = cell["paired"]["gradcam"]["segmenter mIoU"]
        assert same["differences"] == pytest.approx([0.07, 0.05])
    assert "grad_x_act" not in cells["w24_s5_ev0"]["paired"]  # one FickleNet seed
    # t = 0.045 / (0.0071 / sqrt 2) = 9.0 with one degree of freedom: p = 1 - (2/pi) atan 9
    text = gather_mod.markdown({}, cells)
    assert "| 24×24 map, s=5, body evidence 0 | +4.5 ± 0.7 (p 0.07, n 2) |" in text


def test_premise_reads_erased_and_intact_classifiers(gather_mod, tmp_path):
    from ficklenet.data.toy import write_toy_voc

    root = write_toy_voc(
        tmp_path / "erased", part="erased", n_train_aug=40, n_train=20, n_val=20, size=64
    )
    runs, ladder = tmp_path / "runs", tmp_path / "ladder"
    for seed, value in ((0, 0.40), (1, 0.44)):
        job = runs / "premise" / "ev0" / f"seed{seed}"
        _write(job / "metrics.json", {"val/mAP": value})
        (job / "config.yaml").write_text(f"data:\n  root: {root}\n")
        _write(ladder / "cls" / "deterministic" / f"seed{seed}" / "metrics.json", {"val/mAP": 0.9})
    premise = gather_mod.gather_premise(runs, ladder)
    assert premise["0"]["erased"] == {0: 0.40, 1: 0.44}
    assert premise["0"]["intact"] == {0: 0.9, 1: 0.9}
    assert premise["0"]["toy"]["part"] == "erased"
    assert 0 < premise["0"]["chance"] < premise["0"]["group"] < 1
    text = gather_mod.markdown(premise, {})
    assert "| 0 | 42.0 ± 2.8 | 2 | 90.0 ± 0.0 | 2 |" in text


def test_ceilings_and_the_glance_matrix(gather_mod, tmp_path):
    ladder, runs = tmp_path / "ladder", tmp_path / "runs"
    for seed, miou in enumerate([0.80, 0.84]):
        _job(ladder / "supervised", seed, miou)
        _job(runs / "ceiling" / "w24_ev0", seed, miou - 0.1)
    _job(runs / "ceiling" / "w24_ev1", 0, 0.5)
    _write(runs / "ceiling" / "w24_ev1" / "seed1" / "metrics.json", {"evaluate": {"miou": 0.5}})
    ceilings = gather_mod.gather_ceilings(runs, ladder)
    assert set(ceilings) == {"w12_ev0", "w24_ev0", "w24_ev1"}
    assert ceilings["w12_ev0"]["summary"]["segmenter mIoU"]["mean"] == pytest.approx(0.82)
    assert ceilings["w24_ev0"]["summary"]["segmenter mIoU + CRF"]["mean"] == pytest.approx(0.82)
    assert list(ceilings["w24_ev1"]["runs"]) == [0]  # seed 1 has no CRF figure yet
    assert gather_mod.toy_of("w24_s9_ev0.5") == "w24_ev0.5"

    def diff(mean, std, p):
        return {"paired": {"chosen": {"segmenter mIoU": {"mean": mean, "std": std, "p_t": p}}}}

    cells = {
        "w12_s3_ev0": diff(-0.005, 0.009, 0.27),
        "w12_s3_ev1": diff(0.031, 0.004, 0.01),
        "w24_s5_ev0": {"paired": {}},
    }
    rows = gather_mod.glance(cells)
    assert rows[0] == "| window | body evidence 0 | body evidence 1 |"
    assert rows[2] == "| 12×12 map, s=3 | -0.5 ± 0.9 (no difference) | +3.1 ± 0.4 (difference) |"
    assert rows[3] == "| 24×24 map, s=5 | – | not run |"
