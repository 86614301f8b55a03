"""End to end on a small toy set: ``ficklenet-segment`` then ``ficklenet-evaluate``.

The seeds come from ground truth (each region eroded, then half the pixels made
unlabelled at random), standing in for the localize stage's output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ficklenet.config import compose_app
from ficklenet.data.toy import write_toy_voc
from ficklenet.data.voc import VOCReader
from ficklenet.files import read_json
from ficklenet.tasks.evaluate import run_evaluate
from ficklenet.tasks.segment import run_segment
from tests.conftest import write_eroded_seeds

pytestmark = pytest.mark.slow  # end to end: segmenter trainings then evaluation


@pytest.fixture(scope="module")
def toy_with_seeds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("e2e")
    root = write_toy_voc(base / "toy", n_train_aug=40, n_train=20, n_val=20, size=64)
    localize_run = write_eroded_seeds(root, base / "localize")
    return root, localize_run


def compose_cfg(name: str, *overrides: str):
    return compose_app(name, overrides)


def test_segment_then_evaluate(toy_with_seeds: tuple[Path, Path], tmp_path: Path) -> None:
    root, localize_run = toy_with_seeds
    cfg = compose_cfg(
        "segment",
        f"seeds={localize_run}",
        f"data.root={root}",
        "data.make_toy_if_missing=false",
        "data.crop_size=64",
        "data.batch_size=8",
        "data.val_batch_size=10",
        "data.pixel_labels=train",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "segmenter.crf_workers=0",
    )
    seg_dir = tmp_path / "segment"
    best = run_segment(cfg, seg_dir)
    assert 0.0 <= best <= 1.0
    metrics = read_json(seg_dir / "metrics.json")
    assert metrics["stage"] == "segment" and metrics["steps"] == 10
    assert metrics["val/miou_best"] == pytest.approx(best)
    assert metrics["pixel_label_images"] == 20
    for key in ("seed/miou", "grown_seed/miou", "train/miou"):
        assert 0.0 <= metrics[key] <= 1.0
    # Seeds from ground truth are right wherever they are labelled.
    assert metrics["seed/precision"] == 1.0 and metrics["seed_eval_split"] == "train"
    assert 0.3 < metrics["seed/labelled_fraction"] < 0.5
    assert metrics["grown_seed/labelled_fraction"] >= metrics["seed/labelled_fraction"]
    ckpt_path = seg_dir / "checkpoints" / "best.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    assert ckpt["ficklenet_stage"] == "segment"
    assert ckpt["hyper_parameters"]["config"]["seeds"] == str(localize_run)
    assert (seg_dir / "config.yaml").is_file() and (seg_dir / "run_info.json").is_file()

    # Single scale, no CRF; the dataset comes from the checkpoint.
    eval_dir = tmp_path / "evaluate"
    cfg = compose_cfg(
        "evaluate",
        f"segmenter.ckpt={ckpt_path}",
        "overlays=3",
        "num_workers=0",
        "progress=false",
    )
    miou = run_evaluate(cfg, eval_dir)
    metrics = read_json(eval_dir / "metrics.json")
    assert 0.0 <= miou <= 1.0 and metrics["miou"] == pytest.approx(miou)
    assert metrics["miou_no_crf"] == pytest.approx(miou) and "miou_crf" not in metrics
    assert metrics["images"] == 20 and metrics["split"] == "val"
    assert set(metrics["per_class_iou"]) >= {"background", "aeroplane", "tvmonitor"}
    predictions = sorted((eval_dir / "predictions").glob("*.png"))
    assert [p.stem for p in predictions] == VOCReader(root, "val").ids
    with Image.open(predictions[0]) as img:
        assert img.mode == "P" and img.size == (64, 64)
        assert set(np.unique(np.asarray(img)).tolist()) <= set(range(21))
    assert len(list((eval_dir / "overlays").glob("*.png"))) == 3

    # Multi-scale + flip + CRF in two worker processes, on the given data config.
    crf_dir = tmp_path / "evaluate_crf"
    cfg = compose_cfg(
        "evaluate",
        f"segmenter.ckpt={ckpt_path}",
        "data=toy",
        f"data.root={root}",
        "data.make_toy_if_missing=false",
        "scales=[0.75,1.0]",
        "flip=true",
        "crf=true",
        "crf_workers=2",
        "save_predictions=false",
        "overlays=0",
        "num_workers=0",
        "progress=false",
    )
    miou_crf = run_evaluate(cfg, crf_dir)
    metrics = read_json(crf_dir / "metrics.json")
    assert 0.0 <= miou_crf <= 1.0
    assert metrics["miou"] == pytest.approx(metrics["miou_crf"]) == pytest.approx(miou_crf)
    assert 0.0 <= metrics["miou_no_crf"] <= 1.0 and metrics["crf"] is True
    assert metrics["scales"] == [0.75, 1.0] and metrics["flip"] is True
    assert not (crf_dir / "predictions").exists() and not (crf_dir / "overlays").exists()


def test_evaluate_refuses_a_classifier_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "classifier.ckpt"
    torch.save({"ficklenet_stage": "classify", "state_dict": {}}, path)
    cfg = compose_cfg("evaluate", f"segmenter.ckpt={path}", "progress=false")
    with pytest.raises(ValueError, match="not a segmenter checkpoint"):
        run_evaluate(cfg, tmp_path / "run")


def test_fully_supervised_needs_no_seeds(toy_with_seeds: tuple[Path, Path], tmp_path: Path) -> None:
    """No seeds= and every training id in data.pixel_labels: the ceiling, trained with
    cross-entropy on ground truth; its loss is the cross-entropy of the network's
    output-grid logits against ground truth sampled to that grid."""
    root, _ = toy_with_seeds
    common = [
        f"data.root={root}",
        "data.make_toy_if_missing=false",
        "data.crop_size=64",
        "data.batch_size=8",
        "data.val_batch_size=10",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
    ]
    cfg = compose_cfg("segment", "data.pixel_labels=train_aug", *common)
    assert cfg.seeds is None
    run_dir = tmp_path / "supervised"
    run_segment(cfg, run_dir)
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["mode"] == "fully_supervised" and metrics["seeds"] is None
    assert metrics["pixel_label_images"] == 40 and metrics["steps"] == 5
    assert metrics["checkpoint"].endswith("last.ckpt")

    from ficklenet.geometry import image_to_grid
    from ficklenet.lit.segmenter import DSRGSegmenter

    model = DSRGSegmenter.from_checkpoint(run_dir / "checkpoints" / "last.ckpt").eval()
    assert model.fully_supervised
    reader = VOCReader(root, "val")
    from ficklenet.data.transforms import EvalTransform

    image, mask = EvalTransform(None)(reader.image(reader.ids[0]), reader.mask(reader.ids[0]))
    with torch.no_grad():
        logits = model(image[None])
        grid = image_to_grid(mask[None].long(), logits.shape[-2:], 8)
        keep = grid != 255
        log_probs = torch.log_softmax(logits, dim=1).permute(0, 2, 3, 1)[keep]
        by_hand = -log_probs.gather(1, grid[keep][:, None]).mean()
        loss = model.supervised_step(image[None], mask[None].long())
    torch.testing.assert_close(loss, by_hand)

    # Without seeds, every training id needs ground truth: a clear error otherwise.
    with pytest.raises(ValueError, match="data.pixel_labels"):
        run_segment(compose_cfg("segment", *common), tmp_path / "none")
    with pytest.raises(Exception, match="fully supervised"):
        run_segment(compose_cfg("segment", "data.pixel_labels=train", *common), tmp_path / "part")
