"""The package installs like any other: the wheel carries conf/ and the apps find it
from anywhere through Hydra's search path (pkg://ficklenet.conf)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import ENV

pytestmark = pytest.mark.slow  # end to end: builds and installs the wheel

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_carries_the_configs_and_the_apps_find_them(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    (wheel,) = wheels.glob("ficklenet-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for config in (
        "classify.yaml",
        "pipeline.yaml",
        "experiment/paper_vgg16.yaml",
        "hydra/ficklenet.yaml",
        "stage/segment.yaml",
        "__init__.py",
    ):
        assert f"ficklenet/conf/{config}" in names, config
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(ENV, PYTHONPATH=str(target))  # before the editable install of the clone
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ficklenet.tasks.classify",
            "--cfg",
            "job",
            "experiment=paper_vgg16",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["model"]["kernel_size"] == 9 and cfg["data"]["name"] == "voc"
    info = subprocess.run(
        [sys.executable, "-m", "ficklenet.tasks.classify", "--info", "searchpath"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "pkg://ficklenet.conf" in info.stdout, info.stdout[-2000:]
    where = subprocess.run(
        [sys.executable, "-c", "import ficklenet; print(ficklenet.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.stdout.strip().startswith(str(target))


def test_a_users_config_dir_comes_first(tmp_path):
    """--config-dir adds the user's folder: a new experiment there is used."""
    mine = tmp_path / "myconf" / "data"
    mine.mkdir(parents=True)
    (mine / "mydata.yaml").write_text("name: toy\nroot: /my/data\ncrop_size: 77\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ficklenet.tasks.classify",
            "--cfg",
            "job",
            f"--config-dir={tmp_path / 'myconf'}",
            "data=mydata",
        ],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["data"]["root"] == "/my/data" and cfg["data"]["crop_size"] == 77
