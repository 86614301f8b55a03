"""The segmenter and the evaluation under ``trainer=ddp_cpu`` (2 gloo processes).

Training: one run directory, one checkpoint set, one log, and validation metrics
reduced over both processes (equal to one process evaluating the same weights).
Evaluation: every image predicted and written exactly once, and the same metrics
as one process. (The classifier and localization have theirs in
test_classify_e2e.py and test_localize_stage.py.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ficklenet.data.voc import VOCReader
from tests.conftest import BIN, small_toy_overrides
from tests.conftest import run_ok as _run

pytestmark = pytest.mark.slow  # end to end: two-process console-script runs

# 21 validation images: two processes cannot split them evenly, so a padding
# sampler would count one image twice.
VAL21 = "val21"


@pytest.fixture(scope="module")
def toy21(tmp_path_factory, toy_root) -> Path:
    """The small toy set with a split of 21 validation images (val + one train)."""
    root = tmp_path_factory.mktemp("toy21") / "voc"
    shutil.copytree(toy_root, root)
    sets = root / "ImageSets" / "Segmentation"
    ids = (sets / "val.txt").read_text().split() + (sets / "train.txt").read_text().split()[:1]
    (sets / f"{VAL21}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


# Enough epochs for the segmenter to predict objects, so that the predictions
# compared below are not all background (after 2 or 12 they were).
EPOCHS = 30


@pytest.fixture(scope="module")
def ddp_segment(tmp_path_factory, toy21, toy_seeds) -> Path:
    base = tmp_path_factory.mktemp("ddp_segment")
    run = base / "run"
    _run(
        [
            str(BIN / "ficklenet-segment"),
            *small_toy_overrides(toy21),
            f"data.val_split={VAL21}",
            f"seeds={toy_seeds}",
            "seed_eval_split=null",
            "segmenter.crf_workers=0",
            "data.batch_size=8",
            "trainer=ddp_cpu",
            f"trainer.max_epochs={EPOCHS}",
            f"hydra.run.dir={run}",
        ],
        cwd=base,
    )
    return run


def _evaluate(ckpt: Path, out: Path, *extra: str) -> dict:
    _run(
        [
            str(BIN / "ficklenet-evaluate"),
            f"segmenter.ckpt={ckpt}",
            "progress=false",
            "num_workers=0",
            "crf_workers=0",
            "overlays=2",
            f"hydra.run.dir={out}",
            *extra,
        ],
        cwd=out.parent,
    )
    return json.loads((out / "metrics.json").read_text())


def test_segmenter_trains_in_two_processes_into_one_run_directory(ddp_segment, tmp_path):
    run = ddp_segment
    assert sorted(p.name for p in run.parent.iterdir()) == ["run"], "no duplicate output folders"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert len(list(run.rglob("metrics.csv"))) == 1
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == EPOCHS
    # 40 images, batch 8 per process, 2 processes: 2 steps per epoch (not 5).
    assert metrics["steps"] == 2 * EPOCHS
    # val/miou of the last epoch is over all 21 val images, each counted once although
    # the 2 processes hold 11 and 10: one process evaluating last.ckpt (same weights,
    # scale 1, no flip) agrees.
    single = _evaluate(run / "checkpoints" / "last.ckpt", tmp_path / "single", f"split={VAL21}")
    assert single["images"] == 21
    # Lightning logs the metric as float32: equal to the single process's in float32.
    assert metrics["val/miou"] == float(np.float32(single["miou_no_crf"]))


def test_evaluate_in_two_processes_writes_each_image_once_with_the_same_metrics(
    ddp_segment, tmp_path, toy_root
):
    ckpt = ddp_segment / "checkpoints" / "best.ckpt"
    one = _evaluate(ckpt, tmp_path / "one", "crf=true")
    two = _evaluate(ckpt, tmp_path / "two", "crf=true", "trainer=ddp_cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"], "no duplicate folders"
    assert (one["processes"], two["processes"]) == (1, 2)
    for key in ("images", "miou", "miou_no_crf", "miou_crf", "per_class_iou", "per_class_iou_crf"):
        assert one[key] == two[key], key
    ids = VOCReader(toy_root, "val").ids
    written = sorted(p.stem for p in (tmp_path / "two" / "predictions").glob("*.png"))
    assert written == sorted(ids), "every image exactly once"
    for image_id in ids:
        a = (tmp_path / "one" / "predictions" / f"{image_id}.png").read_bytes()
        assert a == (tmp_path / "two" / "predictions" / f"{image_id}.png").read_bytes()
    assert len(list((tmp_path / "two" / "overlays").glob("*.png"))) == 2
    assert not list((tmp_path / "two").rglob(".*.tmp"))
    # Not vacuous: the predictions compared hold objects, not only background.
    from ficklenet.data.voc import read_label_png

    labels = set()
    for image_id in ids:
        path = tmp_path / "two" / "predictions" / f"{image_id}.png"
        labels |= set(np.unique(read_label_png(path)).tolist())
    assert len(labels - {0}) >= 3, labels
