"""Shared fixtures: a small toy VOC and composition of the real Hydra configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ficklenet.config import compose_app
from ficklenet.data.classes import IGNORE_INDEX, save_index_png
from ficklenet.data.toy import write_toy_voc
from ficklenet.data.voc import VOCReader

# Two cores, shared: one intra-op thread avoids oversubscription stalls.
torch.set_num_threads(1)

BIN = Path(sys.executable).parent  # the virtualenv's console scripts
ENV = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline")


def run_ok(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command (a console script, a module); fail the test with its output
    when it does not exit 0."""
    proc = subprocess.run(
        args, cwd=cwd, env=env or ENV, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


SMALL_TOY = dict(n_train_aug=40, n_train=20, n_val=20, size=64)


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory) -> Path:
    """A small toy VOC (40 train_aug / 20 train / 20 val, 64×64)."""
    return write_toy_voc(tmp_path_factory.mktemp("toy") / "voc", seed=0, **SMALL_TOY)


@pytest.fixture(scope="session")
def default_toy_root(tmp_path_factory) -> Path:
    """The toy VOC with the default parameters (what `make pipeline` uses)."""
    return write_toy_voc(tmp_path_factory.mktemp("toy_default") / "voc", seed=0)


#: GPU-only checks: marked ``gpu`` (``pytest -m gpu`` runs just them on a GPU
#: machine) and skipped, with the reason, where CUDA is absent (CI).
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def gpu_only(test):
    return pytest.mark.gpu(needs_cuda(test))


def compose_config(config_name: str, overrides: list[str] | None = None):
    """Compose ``conf/<config_name>.yaml`` with overrides, as the app would
    (:func:`ficklenet.config.compose_app`)."""
    return compose_app(config_name, overrides or [])


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


def eroded_seeds(mask: np.ndarray, rng: np.random.Generator, radius: int = 1) -> np.ndarray:
    """Keep a pixel's label only where its (2r+1)² neighbourhood has that label too,
    then unlabel a random half of the pixels: seeds that look like localisation's."""
    padded = np.pad(mask, radius, mode="edge")
    keep = np.ones(mask.shape, bool)
    size = 2 * radius + 1
    for dy in range(size):
        for dx in range(size):
            keep &= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]] == mask
    seeds = np.where(keep, mask, IGNORE_INDEX).astype(np.uint8)
    seeds[rng.random(mask.shape) < 0.5] = IGNORE_INDEX
    return seeds


def write_eroded_seeds(root: Path, out: Path, split: str = "train_aug") -> Path:
    """``out/seeds/<id>.png`` for every id of ``split``: a stand-in localize run."""
    (out / "seeds").mkdir(parents=True, exist_ok=True)
    reader = VOCReader(root, split)
    for index, image_id in enumerate(reader.ids):
        seeds = eroded_seeds(reader.mask(image_id), np.random.default_rng(index))
        save_index_png(seeds, out / "seeds" / f"{image_id}.png")
    return out


@pytest.fixture(scope="session")
def toy_seeds(toy_root, tmp_path_factory) -> Path:
    """Eroded ground truth of the small toy set as seeds (a stand-in localize run)."""
    return write_eroded_seeds(toy_root, tmp_path_factory.mktemp("seeds") / "localize")
