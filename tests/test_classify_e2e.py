"""Stage 1 end to end on toy data: the console scripts, a sweep, and learning."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ficklenet.data.voc import VOCReader
from ficklenet.lit.classifier import FickleClassifier
from ficklenet.tasks.classify import run_classify
from tests.conftest import BIN, SMALL_TOY, compose_config, small_toy_overrides
from tests.conftest import run_ok as _run

pytestmark = pytest.mark.slow  # end to end: console scripts and trainings


def test_make_toy_console_script_writes_voc_layout(tmp_path):
    out = tmp_path / "toy"
    sizes = [f"toy.{k}={v}" for k, v in SMALL_TOY.items()]
    _run([str(BIN / "ficklenet-make-toy"), f"out={out}", *sizes], cwd=tmp_path)
    for sub in ("JPEGImages", "Annotations", "SegmentationClass", "SegmentationClassAug"):
        assert any((out / sub).iterdir()), sub
    assert len(VOCReader(out, "train_aug")) == SMALL_TOY["n_train_aug"]
    assert not list(tmp_path.glob("*.log")), "make-toy must not litter the working directory"


def test_classify_console_script_fast_dev_run(tmp_path, toy_root):
    run = tmp_path / "run"
    _run(
        [
            str(BIN / "ficklenet-classify"),
            *small_toy_overrides(toy_root),
            "debug=fast",
            f"hydra.run.dir={run}",
        ],
        cwd=tmp_path,
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stage"] == "classify" and 0.0 <= metrics["val/mAP"] <= 1.0
    assert (run / "config.yaml").is_file()
    info = json.loads((run / "run_info.json").read_text())
    assert info["ficklenet_version"] and "git_sha" in info


def test_dropout_rate_multirun_sweep(tmp_path, toy_root):
    sweep = tmp_path / "sweep"
    _run(
        [
            str(BIN / "ficklenet-classify"),
            "-m",
            "model.p=0,0.9",
            *small_toy_overrides(toy_root),
            "debug=fast",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    runs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert len(runs) == 2
    assert sorted(json.loads((r / "metrics.json").read_text())["model.p"] for r in runs) == [
        0.0,
        0.9,
    ]


def _chance_map(root: Path) -> float:
    """Expected mAP of random scores: the mean prevalence of each class."""
    reader = VOCReader(root, "val")
    labels = np.stack([reader.label_vector(i) for i in reader.ids])
    return float(labels.mean(axis=0).mean())


def _epoch_losses(run: Path) -> list[float]:
    with open(run / "logs" / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("train/epoch_loss")]
    return [float(r["train/epoch_loss"]) for r in sorted(rows, key=lambda r: int(r["epoch"]))]


def test_two_epoch_training_learns_and_checkpoint_rebuilds(tmp_path, default_toy_root):
    run = tmp_path / "run"
    cfg = compose_config(
        "classify",
        [
            f"data.root={default_toy_root}",
            "data.num_workers=0",
            "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false",
            "model.p=0.9",
        ],
    )
    best = run_classify(cfg, run_dir=run)
    losses = _epoch_losses(run)
    assert len(losses) == 2 and losses[1] < losses[0]
    chance = _chance_map(default_toy_root)
    assert best > 2 * chance, (best, chance)

    ckpt = run / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["ficklenet_stage"] == "classify"
    assert state["hyper_parameters"]["config"]["model"]["p"] == 0.9
    model = FickleClassifier.from_checkpoint(str(ckpt)).eval()
    assert model.head.p == 0.9 and model.head.kernel_size == 3
    x = torch.randn(2, 3, 64, 64)
    again = FickleClassifier.from_checkpoint(str(ckpt)).eval()
    torch.testing.assert_close(model(x), again(x))


def test_from_checkpoint_refuses_a_foreign_file(tmp_path):
    bogus = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}}, bogus)
    with pytest.raises(ValueError, match="not a FickleNet classifier checkpoint"):
        FickleClassifier.from_checkpoint(str(bogus))


def test_ddp_cpu_two_processes_share_one_run_directory(tmp_path, toy_root):
    """trainer=ddp_cpu: 2 gloo processes, one run dir, one checkpoint set, one log."""
    run = tmp_path / "run"
    _run(
        [
            str(BIN / "ficklenet-classify"),
            *small_toy_overrides(toy_root),
            "trainer=ddp_cpu",
            "trainer.max_epochs=1",
            f"hydra.run.dir={run}",
        ],
        cwd=tmp_path,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "no duplicate output folders"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert len(list(run.rglob("metrics.csv"))) == 1
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val/mAP_best"] >= metrics["val/mAP"] >= 0.0
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["hyper_parameters"]["config"]["trainer"]["devices"] == 2
    # val/mAP is over all 20 val images (both ranks' halves gathered): one process
    # validating the same weights agrees.
    import pytorch_lightning as pl

    from ficklenet.data.datamodule import VOCDataModule

    model = FickleClassifier.from_checkpoint(run / "checkpoints" / "last.ckpt")
    datamodule = VOCDataModule(compose_config("classify", small_toy_overrides(toy_root)).data)
    single = pl.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False
    ).validate(model, datamodule=datamodule, verbose=False)[0]
    assert metrics["val/mAP"] == pytest.approx(single["val/mAP"], abs=1e-6)
