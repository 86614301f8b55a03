"""Choosing thresholds and the formula on train (ficklenet.localization.tuning)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ficklenet.data.voc import VOCReader
from ficklenet.localization import make_seeds
from ficklenet.localization.tuning import choose_recipe, grid_scores, overrides
from ficklenet.metrics import coverage_miou, covered_confusion


def _fake_maps(reader: VOCReader, out: Path) -> Path:
    """Maps of the present classes: the object, widened and noisy."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for image_id in reader.ids:
        mask = reader.mask(image_id)
        classes = [int(c) for c in reader.labels(image_id)]
        maps = np.stack([(mask == c).astype(np.float32) for c in classes])
        maps = np.clip(maps + 0.4 * rng.random(maps.shape), 0, None).astype(np.float16)
        np.savez(out / f"{image_id}.npz", maps=maps, classes=np.array(classes))
    return out


def test_grid_scores_are_the_stage_rule_scored_pair_by_pair(toy_root: Path, tmp_path: Path):
    reader = VOCReader(toy_root, "train")
    maps_dir = _fake_maps(reader, tmp_path / "maps")
    saliency = VOCReader(toy_root, "train", saliency_dir="Saliency")
    got = grid_scores(maps_dir, reader, saliency, fg_grid=(0.3, 0.6), bg_grid=(0.2, 0.4))
    assert sorted(got) == [(0.3, 0.2), (0.3, 0.4), (0.6, 0.2), (0.6, 0.4)]
    for (fg, bg), figures in got.items():
        cm = np.zeros((21, 22), np.int64)
        for image_id in reader.ids:
            with np.load(maps_dir / f"{image_id}.npz") as data:
                maps, classes = data["maps"].astype(np.float32), list(data["classes"])
            seeds = make_seeds(
                maps,
                classes,
                fg_threshold=fg,
                saliency=saliency.saliency(image_id),
                saliency_threshold=bg,
            )
            cm += covered_confusion(seeds, reader.mask(image_id))
        assert figures["coverage_miou"] == pytest.approx(coverage_miou(cm), abs=1e-12)
    # Without saliency, background thresholds at or above fg are not tried.
    plain = grid_scores(maps_dir, reader, None, fg_grid=(0.3,), bg_grid=(0.2, 0.3))
    assert list(plain) == [(0.3, 0.2)]


def test_grid_scores_names_missing_maps(toy_root: Path, tmp_path: Path):
    (tmp_path / "maps").mkdir()
    with pytest.raises(FileNotFoundError, match="no stored maps"):
        grid_scores(tmp_path / "maps", VOCReader(toy_root, "train"))


def _table(scores: dict) -> list[dict]:
    return [
        {"row": row, "formula": f, "seed": seed, "fg": fg, "bg": bg, "coverage_miou": v}
        for (row, f, fg, bg), per_seed in scores.items()
        for seed, v in enumerate(per_seed)
    ]


def test_choose_recipe_by_hand():
    # Two classifiers, two formulas, fg in {0.2, 0.5}, background in {0.1, 0.3}.
    scores = {
        ("det", "gradcam", 0.2, 0.1): [0.40, 0.42],
        ("det", "gradcam", 0.5, 0.1): [0.50, 0.52],  # det/gradcam best at bg 0.1: 0.51
        ("det", "gradcam", 0.2, 0.3): [0.45, 0.45],
        ("det", "gradcam", 0.5, 0.3): [0.44, 0.44],  # best at bg 0.3: 0.45
        ("det", "gxa", 0.2, 0.1): [0.30, 0.30],
        ("det", "gxa", 0.5, 0.1): [0.33, 0.35],  # 0.34
        ("det", "gxa", 0.2, 0.3): [0.60, 0.60],  # 0.60
        ("det", "gxa", 0.5, 0.3): [0.10, 0.10],
        ("fn", "gradcam", 0.2, 0.1): [0.47, 0.49],  # 0.48
        ("fn", "gradcam", 0.5, 0.1): [0.20, 0.20],
        ("fn", "gradcam", 0.2, 0.3): [0.41, 0.41],
        ("fn", "gradcam", 0.5, 0.3): [0.46, 0.46],  # 0.46
        ("fn", "gxa", 0.2, 0.1): [0.50, 0.50],  # 0.50
        ("fn", "gxa", 0.5, 0.1): [0.10, 0.10],
        ("fn", "gxa", 0.2, 0.3): [0.40, 0.40],
        ("fn", "gxa", 0.5, 0.3): [0.52, 0.54],  # 0.53
    }
    # bg 0.1: mean(0.51, 0.34, 0.48, 0.50) = 0.4575; bg 0.3: mean(0.45, 0.60, 0.46, 0.53) = 0.51.
    got = choose_recipe(_table(scores))
    assert got["background_threshold"] == 0.3
    assert got["rows"]["det"]["fg_threshold"] == {"gradcam": 0.2, "gxa": 0.2}
    assert got["rows"]["fn"]["fg_threshold"] == {"gradcam": 0.5, "gxa": 0.5}
    assert got["rows"]["det"]["formula"] == "gxa"  # 0.60 > 0.45
    assert got["rows"]["fn"]["formula"] == "gxa"  # 0.53 > 0.46
    assert got["rows"]["fn"]["score"]["gxa"] == pytest.approx(0.53)


def test_overrides_read_the_choice_back():
    choice = {
        "levels": {
            "realistic": {
                "background_key": "saliency_threshold",
                "background_threshold": 0.3,
                "rows": {"fn": {"formula": "gxa", "fg_threshold": {"gradcam": 0.1, "gxa": 0.2}}},
            }
        }
    }
    assert overrides(choice, "realistic", "fn") == {
        "formula": "gxa",
        "fg_threshold": 0.2,
        "saliency_threshold": 0.3,
    }
    assert overrides(choice, "realistic", "fn", "gradcam")["fg_threshold"] == 0.1
    for bad in (("perfect", "fn"), ("realistic", "det")):
        with pytest.raises(KeyError):
            overrides(choice, *bad)
