"""Every config composes and builds its model offline; typos fail at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from ficklenet.config import compose_app, conf_dir
from ficklenet.config.experiments import load_experiment
from ficklenet.lit.classifier import FickleClassifier
from ficklenet.models.backbones import BackboneWeightsError
from ficklenet.tasks.classify import run_classify, validate_classify
from tests.conftest import compose_config

CONF = conf_dir()


def _names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


APPS = ("classify", "localize", "segment", "evaluate", "predict", "pipeline")


@pytest.mark.parametrize("app", APPS)
@pytest.mark.parametrize("experiment", _names("experiment"))
def test_every_experiment_composes_for_every_app(experiment, app, tmp_path):
    """One experiment file serves every app; the models build offline."""
    from ficklenet.lit.segmenter import DSRGSegmenter
    from ficklenet.tasks.pipeline import stage_configs

    overrides = [f"experiment={experiment}", "data.root=/nowhere", "backbone.pretrained=false"]
    if app in ("localize", "evaluate", "predict"):
        overrides.remove("backbone.pretrained=false")
    cfg = compose_config(app, overrides)
    stages = stage_configs(cfg, tmp_path) if app == "pipeline" else {app: cfg}
    paper = experiment.startswith("paper_")
    for stage, stage_cfg in stages.items():
        if stage_cfg.get("data") is not None:
            assert stage_cfg.data.name == ("voc" if paper else "toy"), (stage, experiment)
    if "classify" in stages:
        classify = stages["classify"]
        validate_classify(classify)
        # The window is the experiment's own where it sets one, else the backbone's.
        window = [
            int(o.split("=", 1)[1])
            for o in load_experiment(experiment)["shared"]
            if o.startswith("backbone.fickle_kernel_size=")
        ]
        assert classify.model.kernel_size == (window or [9 if paper else 3])[0]
        model = FickleClassifier(OmegaConf.to_container(classify, resolve=True))
        assert model.head.p == classify.model.p
    if "segment" in stages:
        segment = OmegaConf.to_container(stages["segment"], resolve=True)
        assert DSRGSegmenter(segment, load_pretrained=False).net is not None
    if "localize" in stages and paper:
        assert stages["localize"].localize.fg_threshold == 0.2
    if app == "predict" and paper:
        assert cfg.crf and cfg.flip and list(cfg.scales) == [0.75, 1.0, 1.25]


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
    ],
)
def test_out_of_range_values_name_the_key(override, key):
    cfg = compose_config("classify", [override])
    with pytest.raises(ValueError, match=key):
        validate_classify(cfg)


def test_pretrained_without_weights_says_where_to_put_the_file(tmp_path, monkeypatch, toy_root):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cfg = compose_config(
        "classify", [f"data.root={toy_root}", "data.make_toy_if_missing=false", "backbone=vgg16"]
    )
    with pytest.raises(BackboneWeightsError) as info:
        run_classify(cfg, run_dir=tmp_path / "run")
    message = str(info.value)
    assert str(Path(tmp_path / "hub" / "checkpoints")) in message
    assert "backbone.weights=" in message


def test_slurm_launcher_config_composes():
    """hydra/launcher=slurm_ddp resolves to the submitit plugin with DDP-sized tasks."""
    cfg = compose_app(
        "classify",
        ["hydra/launcher=slurm_ddp", "hydra.launcher.partition=gpu", "trainer=ddp"],
        return_hydra_config=True,
    )
    launcher = cfg.hydra.launcher
    assert "submitit" in launcher._target_ and launcher.partition == "gpu"
    assert launcher.tasks_per_node == launcher.gpus_per_node == 4


@pytest.mark.parametrize(
    "app,override",
    [
        ("classify", "model.dropout=fikle"),
        ("classify", "optim.name=adamw"),
        ("classify", "optim.schedule=cosine"),
        ("classify", "data.labels_from=json"),
        ("classify", "logger.name=mlflow"),
        ("segment", "segmenter.head=asp"),
        ("segment", "segmenter.crf.unary=log"),
        ("localize", "localize.formula=gradcampp"),
        ("localize", "localize.aggregate=union"),
        ("pipeline", "checkpoint=latest"),
        ("pipeline", "stages=[classify,segmnt]"),
        ("predict", "on_bad_input=ignore"),
    ],
)
def test_a_choice_typo_fails_when_the_config_is_composed(app, override):
    """Each choice is an enum in the schema: Hydra refuses a misspelt one at start-up,
    naming the key and the options."""
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(app, [override])
    message = str(info.value) + str(info.value.__cause__)
    assert override.split("=")[0] in message and "expected one of" in message
