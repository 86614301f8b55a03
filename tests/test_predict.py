"""ficklenet-predict: palette PNGs for images without labels, from a folder or a split."""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ficklenet import inference
from ficklenet.data.voc import VOCDataError, VOCReader
from ficklenet.tasks.evaluate import run_evaluate
from ficklenet.tasks.predict import run_predict
from ficklenet.tasks.segment import run_segment
from tests.conftest import ENV, compose_config, run_ok, small_toy_overrides

pytestmark = pytest.mark.slow  # each test runs predict on a segmenter a fixture trains


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory, toy_root) -> Path:
    run = tmp_path_factory.mktemp("seg") / "run"
    cfg = compose_config(
        "segment",
        [*small_toy_overrides(toy_root), "data.pixel_labels=train_aug", "trainer.max_epochs=1"],
    )
    run_segment(cfg, run)
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture
def photos(tmp_path, toy_root) -> Path:
    """Five val images of different sizes, a corrupt JPEG and a file that is no image."""
    folder = tmp_path / "photos"
    folder.mkdir()
    reader = VOCReader(toy_root, "val")
    for k, image_id in enumerate(reader.ids[:5]):
        image = Image.open(reader.image_path(image_id))
        image.resize((64 + 8 * k, 64 - 4 * k)).save(folder / f"{image_id}.jpg", quality=95)
    data = reader.image_path(reader.ids[5]).read_bytes()
    (folder / "broken.jpg").write_bytes(data[: len(data) // 3])
    (folder / "notes.txt").write_text("not an image")
    return folder


def predict(ckpt: Path, run_dir: Path, *overrides: str) -> dict:
    cfg = compose_config("predict", [f"segmenter.ckpt={ckpt}", "progress=false", *overrides])
    run_predict(cfg, run_dir)
    return json.loads((run_dir / "metrics.json").read_text())


def test_a_folder_of_images_gets_one_palette_png_each_at_its_size(segmenter, photos, tmp_path):
    metrics = predict(segmenter, tmp_path / "run", f"input={photos}")
    assert metrics["images"] == 6 and metrics["written_now"] == 5
    assert [s["file"] for s in metrics["skipped"]] == [str(photos / "broken.jpg")]
    for image in sorted(photos.glob("*.jpg")):
        if image.name == "broken.jpg":
            continue
        pred = Image.open(tmp_path / "run" / "predictions" / f"{image.stem}.png")
        assert pred.mode == "P" and pred.size == Image.open(image).size
    assert not list((tmp_path / "run").rglob(".*.tmp"))
    # A rerun of the finished run writes nothing and returns 0 written now.
    kept = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()}
    cfg = compose_config("predict", [f"segmenter.ckpt={segmenter}", "progress=false",
                                     f"input={photos}"])  # fmt: skip
    assert run_predict(cfg, tmp_path / "run") == 0
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    # An interrupted one (a prediction and the metrics missing) writes only what is missing.
    missing = sorted((tmp_path / "run" / "predictions").glob("*.png"))[0]
    missing.unlink()
    (tmp_path / "run" / "metrics.json").unlink()
    assert predict(segmenter, tmp_path / "run", f"input={photos}")["written_now"] == 1
    assert missing.is_file()


@pytest.mark.slow
def test_predictions_equal_evaluate_on_the_same_images(segmenter, toy_root, tmp_path):
    overrides = ["scales=[0.75,1.0]", "flip=true", "crf=true"]
    predict(segmenter, tmp_path / "pred", "input=val", *overrides)
    cfg = compose_config(
        "evaluate",
        [
            f"segmenter.ckpt={segmenter}",
            "progress=false",
            "num_workers=0",
            "overlays=0",
            "crf_workers=0",
            *overrides,
        ],
    )
    run_evaluate(cfg, tmp_path / "eval")
    # predict's CRF ran in its pool of processes, evaluate's inline: the same pixels
    for image_id in VOCReader(toy_root, "val").ids:
        a = np.asarray(Image.open(tmp_path / "pred" / "predictions" / f"{image_id}.png"))
        b = np.asarray(Image.open(tmp_path / "eval" / "predictions" / f"{image_id}.png"))
        assert np.array_equal(a, b), image_id


def test_evaluate_and_predict_call_the_one_inference(segmenter, toy_root, tmp_path, monkeypatch):
    """Both stages load the segmenter, compute the multi-scale probabilities and
    hand each image to the test-time CRF through ficklenet.inference, nothing else."""
    calls: list[str] = []

    def spy(name, real):
        def wrapper(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)

        return wrapper

    for name in ("load_segmenter", "on_device", "image_probs"):
        monkeypatch.setattr(inference, name, spy(name, getattr(inference, name)))
    monkeypatch.setattr(inference.TestCRF, "submit", spy("crf", inference.TestCRF.submit))
    n = len(VOCReader(toy_root, "val").ids)
    base = [f"segmenter.ckpt={segmenter}", "progress=false", "scales=[0.75,1.0]", "flip=true"]
    run_evaluate(
        compose_config("evaluate", [*base, "num_workers=0", "overlays=0", "batch_size=5"]),
        tmp_path / "eval",
    )
    assert n % 5 == 0
    # batches of five images: one call for their probabilities, then each to the CRF
    assert calls == ["load_segmenter", "on_device", *(["image_probs"] + ["crf"] * 5) * (n // 5)]
    calls.clear()
    predict(segmenter, tmp_path / "pred", "input=val", *base[2:])
    assert calls == ["load_segmenter", "on_device", *["image_probs", "crf"] * n]  # one by one
    for image_id in VOCReader(toy_root, "val").ids:
        a = np.asarray(Image.open(tmp_path / "pred" / "predictions" / f"{image_id}.png"))
        b = np.asarray(Image.open(tmp_path / "eval" / "predictions" / f"{image_id}.png"))
        assert np.array_equal(a, b), image_id


def test_voc_split_with_a_server_ready_archive(segmenter, toy_root, tmp_path):
    metrics = predict(segmenter, tmp_path / "run", "input=val", "voc_submission=true")
    ids = VOCReader(toy_root, "val").ids
    layout = tmp_path / "run" / "results" / "VOC2012" / "Segmentation" / "comp6_test_cls"
    assert sorted(p.stem for p in layout.glob("*.png")) == sorted(ids)
    with tarfile.open(metrics["voc_submission"]) as tar:
        names = sorted(tar.getnames())
    assert names == sorted(f"results/VOC2012/Segmentation/comp6_test_cls/{i}.png" for i in ids)


def test_bad_input_stops_when_asked_and_leaves_nothing_half_written(segmenter, photos, tmp_path):
    with pytest.raises(VOCDataError, match=r"broken\.jpg.*on_bad_input"):
        predict(segmenter, tmp_path / "run", f"input={photos}", "on_bad_input=stop")
    assert not list((tmp_path / "run").rglob(".*.tmp"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no images here")
    with pytest.raises(VOCDataError, match="no images"):
        predict(segmenter, tmp_path / "run2", f"input={empty}")
    with pytest.raises(VOCDataError, match="no such folder"):
        predict(segmenter, tmp_path / "run3", f"input={tmp_path / 'missing'}")


@pytest.mark.slow
def test_two_processes_write_each_image_once(segmenter, photos, tmp_path):
    shutil.copytree(photos, tmp_path / "ddp_photos")
    out = tmp_path / "two"
    run_ok(
        [
            sys.executable,
            "-m",
            "ficklenet.tasks.predict",
            f"segmenter.ckpt={segmenter}",
            f"input={tmp_path / 'ddp_photos'}",
            "trainer=ddp_cpu",
            "progress=false",
            f"hydra.run.dir={out}",
        ],
        tmp_path,
        ENV,
    )
    one = tmp_path / "one"
    predict(segmenter, one, f"input={photos}")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2 and len(metrics["skipped"]) == 1
    written = sorted(p.name for p in (out / "predictions").glob("*.png"))
    assert written == sorted(p.name for p in (one / "predictions").glob("*.png"))
    for name in written:
        assert (out / "predictions" / name).read_bytes() == (
            one / "predictions" / name
        ).read_bytes()


def test_a_run_directory_refuses_predictions_of_other_settings(segmenter, toy_root, tmp_path):
    """The one run record: evaluate and predict refuse to mix outputs of two settings
    (or two checkpoints) in one run directory, naming the key."""
    base = [f"segmenter.ckpt={segmenter}", "progress=false", "num_workers=0", "overlays=0"]
    run_evaluate(compose_config("evaluate", base), tmp_path / "eval")
    run_evaluate(compose_config("evaluate", base), tmp_path / "eval")  # same: fine
    with pytest.raises(ValueError, match=r"settings\.flip: False -> True"):
        run_evaluate(compose_config("evaluate", [*base, "flip=true"]), tmp_path / "eval")
    predict(segmenter, tmp_path / "pred", "input=val")
    with pytest.raises(ValueError, match=r"settings\.crf: False -> True"):
        predict(segmenter, tmp_path / "pred", "input=val", "crf=true")
