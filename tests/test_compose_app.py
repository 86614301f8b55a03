"""ficklenet.config.compose_app: an app's config, composed as the app composes it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from ficklenet.config import compose_app, conf_dir
from ficklenet.config.experiments import load_experiment
from tests.conftest import ENV

APPS = ("classify", "localize", "segment", "evaluate", "predict", "pipeline", "make_toy")


@pytest.mark.parametrize("app", APPS)
def test_each_app_composes_with_its_defaults_and_an_override(app):
    cfg = compose_app(app)
    # Checked against the app's typed schema (registered by compose_app itself).
    camel = "".join(part.capitalize() for part in app.split("_"))
    assert OmegaConf.get_type(cfg).__name__ == f"{camel}Config"
    # With conf/<app>.yaml's defaults list: the option it names for each group.
    defaults = OmegaConf.load(conf_dir() / f"{app}.yaml").defaults
    named = {k: v for d in defaults if not isinstance(d, str) for k, v in d.items()}
    named = {k: v for k, v in named.items() if v is not None and " " not in k}
    choices = compose_app(app, return_hydra_config=True).hydra.runtime.choices
    assert {k: choices[k] for k in named} == named
    key = "out" if app == "make_toy" else "name"
    assert compose_app(app, [f"{key}=composed"])[key] == "composed"
    assert cfg[key] != "composed", "an override changes one composition only"


def test_an_experiment_is_expanded_for_the_app():
    segment = load_experiment("paper_vgg16")["segment"]
    assert "optim=dsrg_sgd" in segment
    cfg = compose_app("segment", ["experiment=paper_vgg16", "seed=5"])
    assert cfg.backbone.name == "vgg16" and cfg.optim.name == "sgd" and cfg.seed == 5
    assert compose_app("segment").backbone.name != "vgg16"


def test_a_misspelt_key_or_value_fails_as_in_the_app():
    with pytest.raises(ConfigCompositionException):
        compose_app("classify", ["model.dropout=fikle"])
    with pytest.raises(ConfigCompositionException):
        compose_app("classify", ["no_such_key=1"])


def test_the_hydra_node_on_request():
    assert "hydra" not in compose_app("classify")
    hydra = compose_app("classify", ["seed=2"], return_hydra_config=True).hydra
    assert hydra.run.dir and "seed=2" in list(hydra.overrides.task)


def test_a_running_hydra_is_put_back():
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        outer = GlobalHydra.instance().hydra
        assert compose_app("evaluate").crf is False
        assert GlobalHydra.instance().hydra is outer
        assert compose(config_name="classify").seed == 0  # the outer one still works
    assert not GlobalHydra.instance().is_initialized()


@pytest.mark.slow
def test_the_same_config_as_the_console_script(tmp_path: Path):
    """``ficklenet-segment --cfg job`` prints the config the app would run with."""
    args = ["experiment=paper_vgg16", "seed=5", "segmenter.grow_fg_prob=0.8"]
    script = Path(sys.executable).parent / "ficklenet-segment"
    printed = subprocess.run(
        [str(script), "--cfg", "job", *args],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    ours = OmegaConf.to_container(compose_app("segment", args))
    assert OmegaConf.to_container(OmegaConf.create(printed)) == ours
