"""Logging with ``logger=wandb`` (offline, no account) and ``logger=tensorboard``:
metrics, the resolved config and validation image panels land in the run."""

from __future__ import annotations

import json
import os
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf.message import DecodeError

from ficklenet.lit.loggers import close_logger
from ficklenet.lit.panels import log_panels, panel_count
from ficklenet.tasks.classify import run_classify
from tests.conftest import compose_config, run_ok, small_toy_overrides

TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "logger.panels=2",
]


def wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf records of an offline run's ``run-*.wandb`` file.

    wandb-core writes no ``wandb-summary.json``/``config.yaml`` for offline runs
    (``wandb sync`` rebuilds them), so read the log itself: a 7-byte header
    (``:W&B``, magic, version), then 32 KiB blocks of chunks, each with a 7-byte
    header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last).
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    block, pos, parts = 32768, 7, []
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (kind == 0 and length == 0):
            pos += left  # block trailer / zero padding
            continue
        parts.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record


def read_offline_run(run_dir: Path) -> tuple[dict, list[dict], int | None]:
    """(config, history rows, exit code or None before the run exits) of an offline
    wandb run directory."""
    (log_file,) = run_dir.glob("run-*.wandb")
    config: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    exit_code = None
    for record in wandb_records(log_file):
        kind = record.WhichOneof("record_type")
        if kind == "config":
            for item in record.config.update:
                config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                *outer, last = [item.key] if item.key else list(item.nested_key)
                node = row
                for key in outer:  # media: ("val/cam", "filenames"), ...
                    node = node.setdefault(key, {})
                node[last] = json.loads(item.value_json)
            history.append(row)
        elif kind == "exit":
            exit_code = int(record.exit.exit_code)
    return config, history, exit_code


def read_run_identity(run_dir: Path) -> tuple[str, str]:
    """(group, display name) of an offline wandb run, from its run record."""
    (log_file,) = run_dir.glob("run-*.wandb")
    for record in wandb_records(log_file):
        if record.WhichOneof("record_type") == "run":
            return record.run.run_group, record.run.display_name
    raise AssertionError(f"{log_file}: no run record")


def read_finished_run(run_dir: Path, timeout: float = 20.0) -> tuple[dict, list[dict], int | None]:
    """:func:`read_offline_run` once the run's exit record is in its file.

    ``wandb.finish`` hands the run to the wandb-core process, which may still be
    writing the file's last records when it returns; wait for them.
    """
    deadline = time.monotonic() + timeout
    config: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    while True:
        try:
            config, history, exit_code = read_offline_run(run_dir)
        except DecodeError:  # a record only partly written yet
            exit_code = None
        if exit_code is not None or time.monotonic() > deadline:
            return config, history, exit_code
        time.sleep(0.1)


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """wandb offline, its files and settings in tmp_path, never asking to log in."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path


@pytest.mark.slow
def test_classify_logs_metrics_config_and_panels_to_offline_wandb(offline_wandb, toy_root):
    run = offline_wandb / "run"
    cfg = compose_config(
        "classify",
        [*small_toy_overrides(toy_root), "logger=wandb", "model.p=0.3", *TINY],
    )
    run_classify(cfg, run_dir=run)

    offline_runs = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1, list((run / "wandb").iterdir())
    config, history, exit_code = read_finished_run(offline_runs[0])
    assert exit_code == 0, "the run was not finished (or not as a success)"

    logged = {key: row[key] for row in history for key in row}  # last value of each
    for key in ("val/mAP", "val/mAP_best", "val/f1", "val/loss", "train/loss"):
        assert key in logged, sorted(logged)
    # The same number metrics.json reports (same names in every logger).
    metrics = json.loads((run / "metrics.json").read_text())
    assert logged["val/mAP"] == pytest.approx(metrics["val/mAP"])

    # The resolved config, top-level keys as in config.yaml.
    assert config["model"]["p"] == pytest.approx(0.3)
    assert config["logger"]["name"] == "wandb" and config["logger"]["panels"] == 2
    assert config["data"]["root"] == str(toy_root)

    # logger.panels=2 validation images with their CAMs, once (one epoch, no panels
    # during the sanity check).
    panels = [row["val/cam"] for row in history if "val/cam" in row]
    assert len(panels) == 1 and panels[0]["count"] == 2, panels
    files = offline_runs[0] / "files"
    images = sorted((files / "media" / "images").rglob("*.png"))
    assert len(images) == 2, images
    assert sorted(str(p.relative_to(files)) for p in images) == sorted(panels[0]["filenames"])
    assert panels[0]["width"] > panels[0]["height"] > 0  # image | heat map
    assert all(caption for caption in panels[0]["captions"])  # the classes shown


@pytest.mark.slow
def test_classify_logs_panels_to_tensorboard(tmp_path, toy_root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    cfg = compose_config("classify", [*small_toy_overrides(toy_root), "logger=tensorboard", *TINY])
    run_classify(cfg, run_dir=run)

    events = EventAccumulator(str(run / "logs"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"val/mAP", "val/mAP_best", "val/f1", "train/loss"} <= set(tags["scalars"])
    assert sorted(tags["images"]) == ["val/cam/0", "val/cam/1"]
    image = events.Images("val/cam/0")[0]
    assert image.width > image.height > 0  # image and heat map side by side


@pytest.mark.slow
def test_csv_logger_logs_no_panels(tmp_path, toy_root):
    run = tmp_path / "run"
    cfg = compose_config("classify", [*small_toy_overrides(toy_root), *TINY])
    run_classify(cfg, run_dir=run)
    assert (run / "logs" / "metrics.csv").is_file()
    assert not list(run.rglob("*.png"))


def test_log_panels_ignores_loggers_without_images(tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    image = np.zeros((8, 8, 3), np.uint8)
    log_panels(None, "val/x", [image], step=0)
    log_panels(CSVLogger(str(tmp_path)), "val/x", [image], step=0)
    assert not list(tmp_path.rglob("*.png"))
    assert panel_count({"logger": {"name": "wandb", "panels": 3}}) == 3
    assert panel_count({"model": {}}) == 0  # checkpoints from before the key


def test_close_logger_finishes_the_wandb_run_after_a_crash(offline_wandb):
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    logger = WandbLogger(project="ficklenet", save_dir=str(offline_wandb), offline=True)
    logger.log_metrics({"val/mAP": 0.5}, step=0)
    with pytest.raises(RuntimeError, match="boom"):
        try:
            raise RuntimeError("boom")
        finally:
            close_logger(logger)
    assert wandb.run is None
    (run_dir,) = (offline_wandb / "wandb").glob("offline-run-*")
    _config, history, exit_code = read_finished_run(run_dir)
    assert exit_code == 1  # marked failed
    assert history[0]["val/mAP"] == 0.5


@pytest.mark.slow
def test_segmenter_logs_prediction_and_truth_panels(tmp_path):
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.data import DataLoader

    from ficklenet.data.datamodule import pad_collate
    from ficklenet.lit.segmenter import DSRGSegmenter

    cfg = compose_config(
        "segment",
        ["seeds=unused", "segmenter.crf_workers=0", "data.crop_size=48", "logger.panels=1"],
    )
    torch.manual_seed(0)
    model = DSRGSegmenter(cfg)
    items = []
    for i, (h, w) in enumerate([(40, 48), (48, 32)]):
        target = torch.zeros(h, w, dtype=torch.long)
        target[8:24, 8:24] = 3
        labels = torch.zeros(20)
        labels[2] = 1.0
        items.append(
            {"image": torch.randn(3, h, w), "target": target, "labels": labels, "id": f"x{i}"}
        )
    loader = DataLoader(items, batch_size=2, collate_fn=pad_collate)
    logger = TensorBoardLogger(str(tmp_path), name="logs", version="")
    trainer = pl.Trainer(
        logger=logger, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False
    )
    trainer.validate(model, dataloaders=loader, verbose=False)

    events = EventAccumulator(str(tmp_path / "logs"), size_guidance={"images": 0})
    events.Reload()
    assert events.Tags()["images"] == ["val/segmentation/0"]  # logger.panels=1
    (image,) = events.Images("val/segmentation/0")
    # image | prediction | ground truth of the first item, batch padding cropped away
    assert (image.height, image.width) == (40, 3 * 48 + 2 * 4)


def test_cam_panels_show_the_present_classes():
    import torch

    from ficklenet.lit.panels import cam_panels

    images = torch.zeros(2, 3, 16, 24)
    maps = torch.zeros(2, 20, 4, 6)
    maps[0, 4, 1, 1] = 5.0  # class 4 ("bottle") peaks top-left
    maps[0, 7] = -1.0  # negative scores are rectified
    labels = torch.zeros(2, 20)
    labels[0, [4, 7]] = 1.0
    panels, captions = cam_panels(images, maps, labels, stride=4)
    assert [p.shape for p in panels] == [(16, 2 * 24 + 4, 3)] * 2
    assert captions == ["bottle, cat", "(no class)"]
    heat = panels[0][:, 24 + 4 :]
    assert heat[4, 4].sum() > heat[-1, -1].sum()  # hot where the class scores


@pytest.mark.slow
def test_pipeline_sweep_logs_each_setting_as_one_named_group(offline_wandb, toy_root):
    """`ficklenet-pipeline -m model.p=0,0.9 logger=wandb debug=fast` through the
    submitit_local launcher (SLURM's local twin): two whole pipelines, each in its
    own run directory; read back from the offline runs, each setting's stage runs
    share one group named after that pipeline run, are named <run>/<stage>, carry
    its model.p, and its evaluations log the mIoU without and with the CRF."""
    args = [
        "-m",
        "hydra/launcher=submitit_local",
        "model.p=0,0.9",
        "logger=wandb",
        "debug=fast",
        f"data.root={toy_root}",
        "data.make_toy_if_missing=false",
        "data.crop_size=64",
        "localize.localize.n=4",
        "localize.localize.overlays=0",
        "evaluate.overlays=0",
        "evaluate_crf.overlays=0",
        "evaluate_crf.crf_workers=0",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run_ok([sys.executable, "-m", "ficklenet.tasks.pipeline", *args], offline_wandb, env)
    (sweep,) = (offline_wandb / "runs" / "pipeline-multirun").iterdir()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()) == ["0", "1"]
    groups = {}
    for job, p in (("0", 0.0), ("1", 0.9)):
        run = sweep / job
        assert json.loads((run / "metrics.json").read_text()).keys() == {
            "classify",
            "localize",
            "segment",
            "evaluate",
            "evaluate_crf",
        }
        names = {}
        for stage in ("classify", "localize", "segment", "evaluate", "evaluate_crf"):
            (offline,) = (run / stage / "wandb").glob("offline-run-*")
            group, name = read_run_identity(offline)
            config, history, exit_code = read_finished_run(offline)
            assert exit_code == 0, (job, stage)
            assert name == f"{group}/{stage}", (group, name)
            assert config["pipeline"]["model_p"] == pytest.approx(p)
            assert config["pipeline"]["name"] == group
            names[stage] = group
            logged = {key: row[key] for row in history for key in row}
            if stage.startswith("evaluate"):
                metrics = json.loads((run / stage / "metrics.json").read_text())
                assert logged["val/miou_no_crf"] == pytest.approx(metrics["miou_no_crf"])
                assert logged["val/miou"] == pytest.approx(metrics["miou"])
                assert ("val/miou_crf" in logged) == (stage == "evaluate_crf")
                assert "val/per_class_iou" in logged
            if stage == "localize":
                assert "seed/miou" in logged and "cam/miou_curve" in logged
        assert len(set(names.values())) == 1, names  # one group per pipeline run
        groups[job] = names["classify"]
    assert "model.p=0.9" in groups["1"] and groups["0"] != groups["1"]
