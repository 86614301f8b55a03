"""evaluate and predict take the data settings from the segmenter's checkpoint:
``data.root=...`` alone moves them (conf/data/checkpoint.yaml, issue 22 item 2),
``data=toy|voc`` states them anew, and config.yaml shows the settings that ran."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

from ficklenet.config import conf_dir
from ficklenet.config.schema import DataConfig
from ficklenet.inference import FROM_CHECKPOINT, data_settings
from ficklenet.tasks.evaluate import run_evaluate
from ficklenet.tasks.segment import run_segment
from tests.conftest import BIN, compose_config, run_ok, small_toy_overrides


def _leaves(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _stored(**changes) -> dict:
    """A segment run's data settings as its checkpoint stores them (plain values)."""
    cfg = compose_config(
        "segment", ["data.root=/trained/here", *(f"{k}={v}" for k, v in changes.items())]
    )
    return OmegaConf.to_container(cfg.data, resolve=True, enum_to_str=True)


def test_the_checkpoint_option_marks_every_data_key():
    """A key the file forgot would take the schema's default over the checkpoint's."""
    marks = _leaves(yaml.safe_load((conf_dir() / "data" / "checkpoint.yaml").read_text()))
    keys = _leaves(OmegaConf.to_container(OmegaConf.structured(DataConfig)))
    assert marks == dict.fromkeys(keys, FROM_CHECKPOINT)


@pytest.mark.parametrize("app", ["evaluate", "predict"])
def test_a_data_key_alone_changes_that_key_of_the_checkpoints_settings(app):
    cfg = compose_config(
        app, ["segmenter.ckpt=x", "data.root=/elsewhere", "data.toy.size=64", "data.mask_dirs=[M]"]
    )
    stored = _stored(**{"data.crop_size": 48, "data.toy.n_val": 7, "data.val_split": "train"})
    data = data_settings(cfg.data, stored)
    assert data.root == "/elsewhere" and data.toy.size == 64 and list(data.mask_dirs) == ["M"]
    assert data.crop_size == 48 and data.toy.n_val == 7 and data.val_split == "train"
    assert data.name == "toy" and data.saliency_dir == "Saliency"
    assert OmegaConf.get_type(data) is DataConfig


def test_without_a_data_key_the_settings_are_the_checkpoints():
    cfg = compose_config("evaluate", ["segmenter.ckpt=x"])
    stored = _stored(**{"data.crop_size": 48})
    assert _leaves(OmegaConf.to_container(data_settings(cfg.data, stored))) == _leaves(stored)
    assert data_settings(None, stored).crop_size == 48


def test_a_data_choice_states_them_all_anew():
    cfg = compose_config("evaluate", ["segmenter.ckpt=x", "data=voc", "data.root=/voc"])
    data = data_settings(cfg.data, _stored(**{"data.crop_size": 48}))
    assert data.name == "voc" and data.root == "/voc" and data.crop_size == 321


def test_keys_the_schema_no_longer_has_are_left_out():
    stored = _stored()
    stored["retired_key"] = 1
    stored["toy"]["retired_too"] = 2
    data = data_settings(compose_config("evaluate", ["segmenter.ckpt=x"]).data, stored)
    assert "retired_key" not in data and "retired_too" not in data.toy


def test_another_app_given_data_checkpoint_is_told_what_to_give():
    cfg = compose_config("classify", ["data=checkpoint"])
    with pytest.raises(InterpolationResolutionError, match="give data=toy or data=voc"):
        _ = cfg.data.root


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory, toy_root) -> Path:
    """A segmenter trained one epoch on the small toy."""
    run = tmp_path_factory.mktemp("seg") / "run"
    overrides = [*small_toy_overrides(toy_root), "data.pixel_labels=train_aug"]
    run_segment(compose_config("segment", [*overrides, "trainer.max_epochs=1"]), run)
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture
def moved_toy(toy_root, tmp_path) -> Path:
    """A copy of the toy elsewhere, its val split cut to 5 images (so a run shows
    which one it read)."""
    copy = shutil.copytree(toy_root, tmp_path / "moved")
    split = copy / "ImageSets" / "Segmentation" / "val.txt"
    split.write_text("\n".join(split.read_text().split()[:5]) + "\n")
    return copy


@pytest.mark.slow
def test_evaluate_with_data_root_alone_runs_on_that_root(segmenter, moved_toy, tmp_path):
    overrides = ["progress=false", "num_workers=0", "overlays=0", f"data.root={moved_toy}"]
    cfg = compose_config("evaluate", [f"segmenter.ckpt={segmenter}", *overrides])
    run_evaluate(cfg, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["images"] == 5 and metrics["data_root"] == str(moved_toy)
    # The record shows what ran: the checkpoint's settings, data.root the one given.
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    trained = yaml.safe_load((segmenter.parent.parent / "config.yaml").read_text())["data"]
    assert written == {**trained, "root": str(moved_toy)}
    assert FROM_CHECKPOINT not in (tmp_path / "run" / "config.yaml").read_text()


@pytest.mark.slow
def test_the_documented_commands_run_with_data_root_alone(segmenter, moved_toy, tmp_path):
    """`ficklenet-evaluate segmenter.ckpt=... data.root=PATH` and predict's twin, as
    written in docs/usage.md and the README (no data=toy|voc first)."""
    ckpt = f"segmenter.ckpt={segmenter}"
    run_ok([str(BIN / "ficklenet-evaluate"), ckpt, f"data.root={moved_toy}"], tmp_path)
    (run,) = (tmp_path / "runs" / "evaluate").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["images"] == 5 and metrics["data_root"] == str(moved_toy)
    run_ok([str(BIN / "ficklenet-predict"), ckpt, "input=val", f"data.root={moved_toy}"], tmp_path)
    (run,) = (tmp_path / "runs" / "predict").iterdir()
    assert len(list((run / "predictions").glob("*.png"))) == 5
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["root"] == str(moved_toy)
