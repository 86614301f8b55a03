"""Every config composes and builds its model offline; typos fail at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from ficklenet.config import conf_dir
from ficklenet.lit.classifier import FickleClassifier
from ficklenet.models.backbones import BackboneWeightsError
from ficklenet.tasks.classify import run_classify, validate_classify
from tests.conftest import compose_config

CONF = conf_dir()


def _names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("experiment", _names("experiment"))
def test_every_experiment_composes_and_builds_offline(experiment):
    cfg = compose_config(
        "classify", [f"experiment={experiment}", "data.root=/nowhere", "backbone.pretrained=false"]
    )
    validate_classify(cfg)
    assert cfg.data.name == "voc" and cfg.model.kernel_size == 9
    model = FickleClassifier(OmegaConf.to_container(cfg, resolve=True))
    assert model.head.p == cfg.model.p


@pytest.mark.parametrize("backbone", _names("backbone"))
def test_every_backbone_builds_offline(backbone):
    cfg = compose_config("classify", [f"backbone={backbone}", "backbone.pretrained=false"])
    model = FickleClassifier(OmegaConf.to_container(cfg, resolve=True))
    assert model.head.in_channels == model.backbone.out_channels
    assert model.head.kernel_size == cfg.backbone.fickle_kernel_size


@pytest.mark.parametrize("group", ["data", "trainer", "logger", "optim", "model", "debug"])
def test_every_group_option_composes(group):
    for option in _names(group):
        cfg = compose_config("classify", [f"{group}={option}"])
        assert cfg.trainer.max_epochs >= 1


def test_defaults_are_the_toy_quick_start():
    cfg = compose_config("classify")
    assert cfg.data.name == "toy" and cfg.data.make_toy_if_missing
    assert cfg.backbone.name == "small" and cfg.model.kernel_size == 3
    assert cfg.trainer.accelerator == "cpu" and cfg.logger.name == "csv"


@pytest.mark.parametrize(
    "override,error",
    [
        ("model.pp=0.5", (ConfigCompositionException, ConfigAttributeError, ConfigKeyError)),
        ("data.rooot=/x", (ConfigCompositionException, ConfigAttributeError, ConfigKeyError)),
        ("model.p=high", (ConfigCompositionException, ValidationError)),
        ("trainer.max_epochs=ten", (ConfigCompositionException, ValidationError)),
    ],
)
def test_typos_and_wrong_types_fail_at_start_up(override, error):
    with pytest.raises(error) as info:
        compose_config("classify", [override])
    key = override.lstrip("+").split("=")[0].split(".")[-1]
    assert key in str(info.value) or key in str(info.value.__cause__)


@pytest.mark.parametrize(
    "override,key",
    [
        ("model.p=1.0", "model.p"),
        ("model.p=-0.2", "model.p"),
        ("model.kernel_size=4", "model.kernel_size"),
        ("model.dropout=spatial", "model.dropout"),
    ],
)
def test_out_of_range_values_name_the_key(override, key):
    cfg = compose_config("classify", [override])
    with pytest.raises(ValueError, match=key):
        validate_classify(cfg)


def test_pretrained_without_weights_says_where_to_put_the_file(tmp_path, monkeypatch, toy_root):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cfg = compose_config("classify", [f"data.root={toy_root}", "backbone=vgg16"])
    with pytest.raises(BackboneWeightsError) as info:
        run_classify(cfg, run_dir=tmp_path / "run")
    message = str(info.value)
    assert str(Path(tmp_path / "hub" / "checkpoints")) in message
    assert "backbone.weights=" in message


def test_slurm_launcher_config_composes():
    """hydra/launcher=slurm_ddp resolves to the submitit plugin with DDP-sized tasks."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ficklenet.config import register_schemas

    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "classify",
            ["hydra/launcher=slurm_ddp", "hydra.launcher.partition=gpu", "trainer=ddp"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert "submitit" in launcher._target_ and launcher.partition == "gpu"
    assert launcher.tasks_per_node == launcher.gpus_per_node == 4
