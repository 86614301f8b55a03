"""Bad input, clear errors, nothing lost (issue 6).

Each case fails with an error naming the file or key and the fix, and leaves
nothing a later run would trust: a checkpoint from the other stage, a loss
that turns NaN mid-training, a disk that fills while localize writes maps.
Cases tested elsewhere: tests/test_voc_reader.py (dataset files),
tests/test_configs.py (config keys), tests/test_localize_stage.py (localize
values, missing checkpoint), tests/test_segment_evaluate_e2e.py (evaluate
given a classifier checkpoint).
"""

from __future__ import annotations

import errno
import json
import subprocess
from pathlib import Path

import pytest
import torch

import ficklenet.lit.classifier as classifier_module
import ficklenet.lit.localizer as localizer_module
import ficklenet.lit.segmenter as segmenter_module
import ficklenet.viz as viz_module
from ficklenet.data.classes import save_index_png
from ficklenet.data.toy import write_toy_voc
from ficklenet.data.voc import VOCReader, read_label_png
from ficklenet.files import write_json
from ficklenet.lit.classifier import FickleClassifier
from ficklenet.lit.segmenter import DSRGSegmenter
from ficklenet.localization.quality import load_maps
from ficklenet.tasks.classify import run_classify
from ficklenet.tasks.localize import run_localize
from ficklenet.tasks.segment import run_segment
from tests.conftest import BIN, ENV, compose_config, small_toy_overrides
from tests.test_localize_stage import _assert_same, _localize_overrides, _outputs

NAN = float("nan")


def _steps_per_epoch(cfg) -> int:
    """Training steps per epoch (the train loader drops the last partial batch)."""
    return len(VOCReader(cfg.data.root, cfg.data.train_split)) // cfg.data.batch_size


def _nan_run(run_fn, cfg, run: Path, patch_target, name: str, steps: int):
    """Run a training stage with ``patch_target.name`` returning NaN from the first
    training step of epoch 2 on; return (error, training calls made)."""
    calls = {"train": 0}
    original = getattr(patch_target, name)

    def nan_from_epoch_two(*args, **kwargs):
        loss = original(*args, **kwargs)
        if torch.is_grad_enabled():  # a training step; validation runs without grad
            calls["train"] += 1
            if calls["train"] > steps:
                return loss * NAN
        return loss

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(patch_target, name, nan_from_epoch_two)
        with pytest.raises(FloatingPointError) as info:
            run_fn(cfg, run_dir=run)
    return info.value, calls["train"]


@pytest.fixture(scope="module")
def nan_classify(tmp_path_factory, toy_root):
    """A 3-epoch classify whose loss turns NaN at the first step of epoch 2."""
    run = tmp_path_factory.mktemp("nan_classify")
    cfg = compose_config("classify", [*small_toy_overrides(toy_root), "trainer.max_epochs=3"])
    steps = _steps_per_epoch(cfg)
    error, calls = _nan_run(
        run_classify, cfg, run, classifier_module.F, "multilabel_soft_margin_loss", steps
    )
    return run, error, calls, steps


@pytest.fixture(scope="module")
def nan_segment(tmp_path_factory, toy_root):
    """A 3-epoch segment (seeds = ground truth) whose seed loss turns NaN at the
    first step of epoch 2."""
    base = tmp_path_factory.mktemp("nan_segment")
    seeds = base / "localize" / "seeds"
    seeds.mkdir(parents=True)
    reader = VOCReader(toy_root, "train_aug")
    for image_id in reader.ids:
        save_index_png(reader.mask(image_id), seeds / f"{image_id}.png")
    cfg = compose_config(
        "segment",
        [
            *small_toy_overrides(toy_root),
            f"seeds={seeds.parent}",
            "segmenter.crf_workers=0",
            "trainer.max_epochs=3",
        ],
    )
    steps = _steps_per_epoch(cfg)
    run = base / "run"
    error, calls = _nan_run(run_segment, cfg, run, segmenter_module, "balanced_seed_loss", steps)
    return run, error, calls, steps


def _assert_stopped_cleanly(run: Path, calls: int, steps: int, stage: str) -> dict:
    """One epoch finished, the run stopped at the first bad step, last.ckpt holds
    epoch 1 with finite weights, and nothing claims the run finished."""
    assert calls == steps + 1, "stops at the first non-finite step"
    assert not (run / "metrics.json").exists(), "no metrics.json for a failed run"
    assert not list(run.rglob(".*.tmp"))
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["ficklenet_stage"] == stage
    assert ckpt["epoch"] == 0 and ckpt["global_step"] == steps, "the last good epoch"
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    return ckpt


@pytest.mark.slow
def test_classifier_nan_loss_stops_and_keeps_last_good_checkpoint(nan_classify):
    run, error, calls, steps = nan_classify
    message = str(error)
    assert "classifier loss became nan" in message
    assert "last good checkpoint is kept" in message and "optim.lr" in message
    ckpt = _assert_stopped_cleanly(run, calls, steps, "classify")
    model = FickleClassifier.from_checkpoint(run / "checkpoints" / "last.ckpt").eval()
    torch.testing.assert_close(model.state_dict(), ckpt["state_dict"])
    assert torch.isfinite(model(torch.randn(1, 3, 64, 64))).all()


@pytest.mark.slow
def test_segmenter_nan_loss_stops_and_keeps_last_good_checkpoint(nan_segment):
    run, error, calls, steps = nan_segment
    message = str(error)
    assert "segmenter loss became nan" in message
    assert "last good checkpoint is kept" in message and "optim.lr" in message
    ckpt = _assert_stopped_cleanly(run, calls, steps, "segment")
    model = DSRGSegmenter.from_checkpoint(run / "checkpoints" / "last.ckpt").eval()
    torch.testing.assert_close(model.state_dict(), ckpt["state_dict"])
    assert torch.isfinite(model(torch.randn(1, 3, 64, 64))).all()


# ---- a checkpoint from the other stage ------------------------------------


@pytest.mark.slow
def test_localize_refuses_a_segmenter_checkpoint(nan_segment, toy_root, tmp_path):
    seg_ckpt = nan_segment[0] / "checkpoints" / "last.ckpt"
    run = tmp_path / "run"
    cfg = compose_config("localize", _localize_overrides(toy_root, seg_ckpt))
    with pytest.raises(ValueError) as info:
        run_localize(cfg, run_dir=run)
    message = str(info.value)
    assert "classifier.ckpt" in message and str(seg_ckpt) in message
    assert "'segment'-stage checkpoint" in message and "ficklenet-classify" in message
    assert not run.exists(), "nothing written for a wrong checkpoint"


@pytest.mark.slow
def test_classifier_refuses_a_segmenter_checkpoint(nan_segment):
    seg_ckpt = nan_segment[0] / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError) as info:
        FickleClassifier.from_checkpoint(seg_ckpt)
    message = str(info.value)
    assert str(seg_ckpt) in message and "not a FickleNet classifier checkpoint" in message
    assert "ficklenet-classify" in message and "ficklenet-evaluate" in message


@pytest.mark.slow
def test_segmenter_refuses_a_classifier_checkpoint(nan_classify):
    cls_ckpt = nan_classify[0] / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError) as info:
        DSRGSegmenter.from_checkpoint(cls_ckpt)
    message = str(info.value)
    assert str(cls_ckpt) in message and "not a segmenter checkpoint" in message
    assert "ficklenet-segment" in message and "ficklenet-localize" in message


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["classify", "segment"])
def test_resuming_from_the_other_stages_checkpoint_is_refused_before_writing(
    stage, nan_classify, nan_segment, toy_root, tmp_path
):
    other = (nan_segment if stage == "classify" else nan_classify)[0] / "checkpoints" / "last.ckpt"
    overrides = [*small_toy_overrides(toy_root), f"ckpt_path={other}"]
    if stage == "segment":
        overrides.append(f"seeds={nan_segment[0].parent / 'localize'}")
    run_fn = run_classify if stage == "classify" else run_segment
    with pytest.raises(ValueError) as info:
        run_fn(compose_config(stage, overrides), run_dir=tmp_path / "run")
    message = str(info.value)
    kind = "FickleNet classifier" if stage == "classify" else "segmenter"
    assert f"ckpt_path={other}" in message and f"not a {kind} checkpoint" in message
    assert f"written by ficklenet-{stage}" in message
    assert not (tmp_path / "run").exists(), "nothing may be written for a refused checkpoint"


@pytest.mark.slow
@pytest.mark.parametrize("loader", [FickleClassifier, DSRGSegmenter])
def test_unreadable_checkpoint_is_a_clear_error(tmp_path, nan_classify, loader):
    """A truncated checkpoint (or any non-checkpoint file) names the file."""
    whole = (nan_classify[0] / "checkpoints" / "last.ckpt").read_bytes()
    path = tmp_path / "cut.ckpt"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="could not be read as a checkpoint") as info:
        loader.from_checkpoint(path)
    assert str(path) in str(info.value)


# ---- a full disk while localize writes maps/seeds -------------------------


@pytest.fixture(scope="module")
def classifier_ckpt(nan_classify) -> Path:
    """A real one-epoch classifier (the NaN run's last good checkpoint)."""
    return nan_classify[0] / "checkpoints" / "last.ckpt"


LIMIT = ("localize.limit=8",)


@pytest.fixture(scope="module")
def localize_reference(tmp_path_factory, toy_root, classifier_ckpt) -> Path:
    run = tmp_path_factory.mktemp("loc_ref")
    run_localize(
        compose_config("localize", [*_localize_overrides(toy_root, classifier_ckpt), *LIMIT]),
        run_dir=run,
    )
    return run


# directory -> (module, name of the function its files are written with, files
# written before the disk fills, images finished by then). Overlays are made for the
# first two images (localize.overlays=2): the disk fills at the second one's, after
# its maps were written.
FULL_DISK_CASES = {
    "maps": (localizer_module.np, "savez_compressed", 3, 3),
    "seeds": (localizer_module, "save_palette_png", 3, 3),
    "overlays": (viz_module, "side_by_side", 1, 1),
}


@pytest.mark.slow
@pytest.mark.parametrize("where", sorted(FULL_DISK_CASES))
def test_full_disk_stops_clearly_and_rerun_resumes_identically(
    tmp_path, monkeypatch, toy_root, classifier_ckpt, localize_reference, where
):
    target, name, writes_before_full, done = FULL_DISK_CASES[where]
    cfg = compose_config("localize", [*_localize_overrides(toy_root, classifier_ckpt), *LIMIT])
    run = tmp_path / "run"
    original = getattr(target, name)
    calls = {"n": 0}

    def fills_the_disk(*args, **kwargs):
        if calls["n"] == writes_before_full:
            # Part of the file reaches the disk before it is full.
            if where == "maps":  # savez_compressed(fh, maps=..., classes=...)
                args[0].write(b"PK\x03\x04 half a file")
            elif where == "seeds":  # save_palette_png(seeds, path)
                Path(args[1]).write_bytes(b"\x89PNG half a file")
            raise OSError(errno.ENOSPC, "No space left on device")
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, fills_the_disk)
    with pytest.raises(OSError) as info:
        run_localize(cfg, run_dir=run)
    error = info.value
    assert error.errno == errno.ENOSPC
    assert "disk full" in str(error) and str(run / where) in str(error)
    assert "hydra.run.dir" in str(error)
    assert not list(run.rglob(".*.tmp")), "no temporary files left"
    assert not (run / "metrics.json").exists()
    seeds = sorted((run / "seeds").glob("*.png"))
    assert len(seeds) == done
    for path in seeds:
        read_label_png(path)
    for path in (run / "maps").glob("*.npz"):
        load_maps(path)  # every map file there loads fully

    monkeypatch.setattr(target, name, original)  # space freed
    run_localize(cfg, run_dir=run)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["images"] == 8 and metrics["localized_now"] == 8 - done
    _assert_same(_outputs(run), _outputs(localize_reference))
    overlays = sorted(p.name for p in (run / "overlays").glob("*.png"))
    assert overlays == sorted(p.name for p in (localize_reference / "overlays").glob("*.png"))
    assert len(overlays) == 2


def test_disk_full_error_names_the_directory(tmp_path, monkeypatch):
    """Any atomic write (config, metrics, predictions) that hits a full disk."""

    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", no_space)
    with pytest.raises(OSError, match="disk full") as info:
        write_json(tmp_path / "out" / "metrics.json", {"a": 1})
    assert str(tmp_path / "out") in str(info.value) and info.value.errno == errno.ENOSPC
    assert not list((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_resumed_segmenter_refuses_seeds_from_another_classifier(tmp_path, toy_root, toy_seeds):
    import shutil

    localize_run = tmp_path / "localize"
    shutil.copytree(toy_seeds, localize_run)
    record = {"stage": "localize", "inputs": {"classifier_sha256": "a" * 64}}
    write_json(localize_run / "run_record.json", {**record, "settings": {"localize.n": 4}})
    overrides = [
        *small_toy_overrides(toy_root),
        f"seeds={localize_run}",
        "seed_eval_split=null",
        "segmenter.crf_workers=0",
        "trainer.max_epochs=1",
    ]
    run = tmp_path / "run"
    run_segment(compose_config("segment", overrides), run_dir=run)
    recorded = json.loads((run / "run_record.json").read_text())["inputs"]["seeds_from"]
    assert isinstance(recorded, str) and len(recorded) == 64
    # Interrupted (no metrics.json, a last.ckpt), and meanwhile localize was redone
    # with another classifier: resuming on those seeds would mix two experiments.
    (run / "metrics.json").unlink()
    write_json(
        localize_run / "run_record.json",
        {**record, "inputs": {"classifier_sha256": "b" * 64}, "settings": {"localize.n": 4}},
    )
    with pytest.raises(ValueError, match=r"other settings or inputs.*inputs\.seeds_from"):
        run_segment(compose_config("segment", overrides), run_dir=run)


# ---- as the console scripts show them (issue 22, items 3 and 4) ------------
# One line on stderr, `ficklenet-<app>: <message>`, exit status 1, no traceback;
# HYDRA_FULL_ERROR=1 shows the traceback.


def _script(app: str, args: list[str], cwd: Path, full_error: bool = False):
    env = {k: v for k, v in ENV.items() if k != "HYDRA_FULL_ERROR"}
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    return subprocess.run(
        [str(BIN / f"ficklenet-{app}"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _one_clean_line(proc, app: str) -> str:
    """The message: the last line of stderr, with no traceback anywhere."""
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ficklenet-{app}: "), output[-3000:]
    return last


@pytest.mark.slow
def test_an_unknown_key_added_with_plus_is_refused_by_the_script(tmp_path):
    run = tmp_path / "run"
    proc = _script("classify", ["+modle.p=0.5", f"hydra.run.dir={run}"], tmp_path)
    last = _one_clean_line(proc, "classify")
    assert "unknown config key modle.p (did you mean model.p?)" in last
    assert not (run / "config.yaml").exists() and not (run / "run_info.json").exists()


@pytest.mark.slow
def test_a_missing_checkpoint_is_one_clean_line(tmp_path):
    missing = tmp_path / "missing.ckpt"
    args = [f"segmenter.ckpt={missing}", f"hydra.run.dir={tmp_path / 'run'}"]
    last = _one_clean_line(_script("evaluate", args, tmp_path), "evaluate")
    assert f"segmenter.ckpt={missing}: no such file" in last
    assert "pass the checkpoint written by ficklenet-segment" in last
    assert not (tmp_path / "run" / "config.yaml").exists()


def _toy_with_a_corrupt_mask(base: Path) -> tuple[Path, Path]:
    """A tiny toy whose train mask of one image is a truncated PNG (both copies)."""
    root = write_toy_voc(
        base / "toy", n_train_aug=20, n_train=20, n_val=20, size=32, saliency="none"
    )
    bad = "toy_000003"
    for folder in ("SegmentationClass", "SegmentationClassAug"):
        path = root / folder / f"{bad}.png"
        path.write_bytes(path.read_bytes()[:100])
    return root, root / "SegmentationClass" / f"{bad}.png"


@pytest.mark.slow
def test_a_corrupt_mask_read_in_a_loader_worker_is_one_clean_line(tmp_path):
    root, bad = _toy_with_a_corrupt_mask(tmp_path)
    args = [
        f"data.root={root}",
        "data.make_toy_if_missing=false",
        "data.labels_from=mask",  # the masks are read in the loader workers
        "data.num_workers=1",
        "data.crop_size=32",
        "data.saliency_dir=null",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
    ]
    proc = _script("classify", [*args, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    last = _one_clean_line(proc, "classify")
    assert last == (
        f"ficklenet-classify: {bad}: cannot decode label mask (OSError: Truncated File "
        "Read). The file is corrupt or truncated: re-download / re-extract it, or remove "
        "its id from the split list."
    )
    assert "DataLoader worker" not in proc.stderr

    full = _script(
        "classify", [*args, f"hydra.run.dir={tmp_path / 'full'}"], tmp_path, full_error=True
    )
    assert full.returncode == 1
    assert "Traceback (most recent call last)" in full.stderr
    assert "Caught VOCDataError in DataLoader worker process 0" in full.stderr
    assert (
        full.stderr.strip()
        .splitlines()[-1]
        .startswith(f"ficklenet.data.voc.VOCDataError: {bad}: cannot decode label mask")
    )
