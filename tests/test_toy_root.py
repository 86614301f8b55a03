"""Toy data is written only where asked (issue 22, item 5).

With ``data=toy`` (``data.make_toy_if_missing=true``) a ``data.root`` that does not
exist gets the toy, with one log line saying where and why; a toy already there is
used only when it was made with the settings ``data.toy`` asks, and anything else
at ``data.root`` is refused before anything is written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from ficklenet.data.datamodule import check_toy_root, ensure_dataset
from ficklenet.data.toy import TOY_MARKER, toy_settings, write_toy_voc
from ficklenet.errors import UserError
from ficklenet.tasks.classify import validate_classify
from tests.conftest import compose_config

TINY = dict(n_train_aug=20, n_train=20, n_val=20, size=32, saliency="none")


def _data_cfg(root: Path, make: bool = True, **toy) -> DictConfig:
    """A ``data`` config asking for the tiny toy (``toy`` overrides its settings)."""
    asked = {"seed": 0, "part": "shown", "body_evidence": 0.0, **TINY, **toy}
    return OmegaConf.create({"root": str(root), "make_toy_if_missing": make, "toy": asked})


def _toy_log(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ficklenet.data.datamodule"]


def test_a_missing_root_gets_the_toy_with_one_log_line(tmp_path, caplog):
    root = tmp_path / "mistyped"
    cfg = _data_cfg(root)
    with caplog.at_level(logging.INFO, logger="ficklenet.data.datamodule"):
        assert ensure_dataset(cfg) == root
    assert _toy_log(caplog) == [
        f"data.root={root} does not exist; writing the toy dataset there "
        "(data.make_toy_if_missing=true)"
    ]
    assert toy_settings(root)["params"]["size"] == TINY["size"]
    caplog.clear()
    stamp = (root / TOY_MARKER).stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="ficklenet.data.datamodule"):
        ensure_dataset(cfg)  # there now, as asked: used as it is, silently
    assert _toy_log(caplog) == []
    assert (root / TOY_MARKER).stat().st_mtime_ns == stamp


def test_without_make_toy_if_missing_nothing_is_written(tmp_path, caplog):
    root = tmp_path / "absent"
    with caplog.at_level(logging.INFO, logger="ficklenet.data.datamodule"):
        assert ensure_dataset(_data_cfg(root, make=False)) == root
    assert not root.exists() and _toy_log(caplog) == []


def test_a_toy_made_with_other_settings_is_refused(tmp_path):
    root = write_toy_voc(tmp_path / "toy", seed=3, **TINY)
    stamp = (root / TOY_MARKER).stat().st_mtime_ns
    cfg = _data_cfg(root, seed=0, size=64)
    with pytest.raises(UserError) as info:
        ensure_dataset(cfg)
    message = str(info.value)
    assert f"data.root={root} holds a toy dataset made with other settings" in message
    assert "data.toy.seed=0 (the toy there has 3)" in message
    assert "data.toy.size=64 (the toy there has 32)" in message
    assert "another data.root" in message and f"delete {root}" in message
    assert "data.toy.seed=3 data.toy.size=32" in message  # or use it as it is
    assert "n_train" not in message, "only the settings that differ"
    assert isinstance(info.value, ValueError)
    assert (root / TOY_MARKER).stat().st_mtime_ns == stamp, "nothing rewritten"
    # Asking for the settings it was made with uses it.
    assert ensure_dataset(_data_cfg(root, seed=3)) == root
    assert (root / TOY_MARKER).stat().st_mtime_ns == stamp


def test_a_stage_refuses_the_other_toy_before_writing(tmp_path):
    """The check runs with the stage's value checks, before its run directory."""
    root = write_toy_voc(tmp_path / "toy", seed=0, **TINY)  # not data.toy's defaults
    cfg = compose_config("classify", [f"data.root={root}"])
    with pytest.raises(UserError, match=r"data.toy.n_train_aug=400 \(the toy there has 20\)"):
        validate_classify(cfg)
    validate_classify(compose_config("classify", [f"data.root={root}", *_toy_overrides()]))
    validate_classify(
        compose_config("classify", [f"data.root={root}", "data.make_toy_if_missing=false"])
    )


def _toy_overrides() -> list[str]:
    return [f"data.toy.{k}={v}" for k, v in TINY.items()]


def test_a_folder_that_is_not_a_toy_is_refused(tmp_path):
    root = tmp_path / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    with pytest.raises(UserError) as info:
        check_toy_root(_data_cfg(root))
    message = str(info.value)
    assert f"data.root={root}: exists and is not a toy dataset" in message
    assert "data=voc" in message and "data.make_toy_if_missing=false" in message
    assert isinstance(info.value, FileExistsError)
    assert sorted(p.name for p in root.iterdir()) == ["JPEGImages"]


def test_an_empty_folder_gets_the_toy(tmp_path, caplog):
    root = tmp_path / "empty"
    root.mkdir()
    with caplog.at_level(logging.INFO, logger="ficklenet.data.datamodule"):
        ensure_dataset(_data_cfg(root))
    assert _toy_log(caplog) == [
        f"data.root={root} is empty; writing the toy dataset there (data.make_toy_if_missing=true)"
    ]
    assert toy_settings(root) is not None


def test_a_toy_from_an_older_generator_is_rewritten_with_the_same_settings(tmp_path, caplog):
    root = write_toy_voc(tmp_path / "toy", seed=3, **TINY)
    meta = json.loads((root / TOY_MARKER).read_text())
    meta["generator_version"] = 0
    (root / TOY_MARKER).write_text(json.dumps(meta))
    assert not toy_settings(root)["current"]
    with pytest.raises(UserError, match="data.toy.seed=0"):
        ensure_dataset(_data_cfg(root))  # other settings: refused, as for a current one
    with caplog.at_level(logging.INFO, logger="ficklenet.data.datamodule"):
        ensure_dataset(_data_cfg(root, seed=3))
    assert _toy_log(caplog) == [
        f"data.root={root} holds a toy dataset from an older generator; rewriting it "
        "with the same settings"
    ]
    made = toy_settings(root)
    assert made["current"] and made["params"]["seed"] == 3
    assert made["params"]["size"] == TINY["size"]
