"""Shared fixtures: a small toy VOC and composition of the real Hydra configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from ficklenet.config import conf_dir, register_schemas
from ficklenet.data.toy import write_toy_voc

# Two cores, shared: one intra-op thread avoids oversubscription stalls.
torch.set_num_threads(1)

SMALL_TOY = dict(n_train_aug=40, n_train=20, n_val=20, size=64)


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory) -> Path:
    """A small toy VOC (40 train_aug / 20 train / 20 val, 64×64)."""
    return write_toy_voc(tmp_path_factory.mktemp("toy") / "voc", seed=0, **SMALL_TOY)


@pytest.fixture(scope="session")
def default_toy_root(tmp_path_factory) -> Path:
    """The toy VOC with the default parameters (what `make pipeline` uses)."""
    return write_toy_voc(tmp_path_factory.mktemp("toy_default") / "voc", seed=0)


def compose_config(config_name: str, overrides: list[str] | None = None):
    """Compose ``conf/<config_name>.yaml`` with overrides, as the app would."""
    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides or [])


def small_toy_overrides(root: Path) -> list[str]:
    """Overrides pointing a stage at the small toy set, quietly."""
    return [
        f"data.root={root}",
        "data.make_toy_if_missing=false",
        "data.crop_size=64",
        "data.num_workers=0",
        "trainer.enable_progress_bar=false",
        "logger=csv",
    ]
