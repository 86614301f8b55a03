"""experiments/window_evidence/errors.py: the error kinds of a hand-built confusion
matrix, a run scored from PNGs against hand-counted pixels, and the body textures a
toy set records."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ficklenet.data.classes import VOC_CLASSES
from ficklenet.data.toy import body_style, recorded_body_styles


@pytest.fixture(scope="module")
def errors_mod():
    return importlib.import_module("experiments.window_evidence.errors")


# Classes 1 and 6 share a body texture; every other class has one of its own.
STYLES = np.array([0, *range(1, 5), 0, *range(5, 19)])


def test_error_kinds_of_a_hand_built_confusion(errors_mod):
    cm = np.zeros((21, 21), dtype=np.int64)
    cm[0, 0] = cm[1, 1] = 100
    cm[1, 0] = 4  # object as background
    cm[0, 1] = 6  # background as object
    cm[1, 6] = 8  # sibling
    cm[1, 2] = 2  # other class
    got = errors_mod.error_kinds(cm, STYLES)
    assert got["pixel error"] == pytest.approx(20 / 220)
    assert got["object as background"] == pytest.approx(0.2)
    assert got["background as object"] == pytest.approx(0.3)
    assert got["another class"] == pytest.approx(0.5)
    assert got["sibling class"] == pytest.approx(0.4)
    # Bodies unknown (another generator's data): no sibling figure, the rest the same.
    unknown = errors_mod.error_kinds(cm, None)
    assert "sibling class" not in unknown
    assert unknown["another class"] == pytest.approx(0.5)


def _png(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels.astype(np.uint8)).save(path)


def test_a_run_scored_from_its_predictions(errors_mod, tmp_path):
    root = tmp_path / "voc"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("a\n")
    (root / "JPEGImages").mkdir()
    Image.new("RGB", (4, 2)).save(root / "JPEGImages" / "a.jpg")
    truth = np.array([[0, 0, 1, 1], [255, 0, 1, 1]])
    pred = np.array([[0, 3, 1, 6], [0, 0, 0, 1]])  # bg->3, 1->6 (sibling), 1->0; void skipped
    _png(root / "SegmentationClass" / "a.png", truth)
    classes = {name: {"body_style": int(s)} for name, s in zip(VOC_CLASSES, STYLES, strict=True)}
    marker = {"format": "ficklenet-toy-voc", "classes": classes}
    (root / "toy_voc.json").write_text(json.dumps(marker))
    stage = tmp_path / "runs" / "seed0" / "evaluate"
    _png(stage / "predictions" / "a.png", pred)
    (stage / "metrics.json").write_text(json.dumps({"data_root": str(root), "split": "val"}))
    errors_mod.main([f"toy={tmp_path / 'runs'}", "--out", str(tmp_path / "out")])
    got = json.loads((tmp_path / "out" / "results.json").read_text())["toy"]["runs"]["0"]
    assert got["pixel error"] == pytest.approx(3 / 7)
    assert got["background as object"] == pytest.approx(1 / 3)
    assert got["sibling class"] == pytest.approx(1 / 3)
    assert got["object as background"] == pytest.approx(1 / 3)
    assert got["another class"] == pytest.approx(1 / 3)


def test_a_toy_set_records_its_body_textures(toy_root, tmp_path):
    expected = [body_style(c) for c in range(1, len(VOC_CLASSES) + 1)]
    assert recorded_body_styles(toy_root).tolist() == expected
    assert recorded_body_styles(tmp_path) is None  # not a toy set


def test_an_unfinished_run_is_a_one_line_error(errors_mod, tmp_path):
    (tmp_path / "runs" / "seed0" / "evaluate").mkdir(parents=True)
    with pytest.raises(SystemExit, match=r"evaluate/metrics.json: missing"):
        errors_mod.main([f"toy={tmp_path / 'runs'}", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
