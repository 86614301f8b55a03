"""The stage registry (ficklenet.config.stages): a throw-away stage declared in one
place is composed into the pipeline, run by it, and refused where it should be."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import MISSING, DictConfig, OmegaConf

from ficklenet.checkpoints import read_checkpoint
from ficklenet.config import compose_app, conf_dir, register_schemas
from ficklenet.config.experiments import ExperimentError, expand_experiment, load_experiment
from ficklenet.config.schema import DataConfig, LoggerConfig, PipelineInfo
from ficklenet.config.stages import STAGES, StageSpec, pipeline_links
from ficklenet.files import read_json, write_json
from ficklenet.tasks.pipeline import run_pipeline
from ficklenet.tasks.run_dir import open_run_dir
from ficklenet.tasks.run_record import DependsOn


@dataclass
class TallyConfig:
    """A stage that doubles the classifier's val mAP (it only reads a file)."""

    source: str = MISSING
    factor: float = 1.0
    data: DataConfig = field(default_factory=DataConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    name: str | None = None
    pipeline: PipelineInfo | None = None


# What the tally's outputs depend on: every setting but where and how; its source's figure.
TALLY_DEPENDS = DependsOn(
    inputs=lambda cfg: {"source": read_json(Path(cfg.source) / "metrics.json")},
    outputs=("metrics.json",),
)


def run_tally(cfg: DictConfig, run_dir: Path) -> None:
    with open_run_dir("tally", cfg, TALLY_DEPENDS, Path(run_dir)) as run:
        if run.finished is not None:
            return
        value = read_json(Path(cfg.source) / "metrics.json")["val/mAP"]
        run.write_metrics({"tally": cfg.factor * value, "seed": cfg.seed})


TALLY = StageSpec(
    "tally",
    "tally",
    TallyConfig,
    "tests.test_stage_registry:run_tally",
    reads={"source": "classify"},
    settings={"factor": 2.0},
    checkpoint="tally table",
    depends_on="tests.test_stage_registry:TALLY_DEPENDS",
)


@pytest.fixture
def tally(monkeypatch, tmp_path):
    """The throw-away stage, declared once; its config file in a copy of conf/."""
    conf = tmp_path / "conf"
    shutil.copytree(conf_dir(), conf)
    (conf / "stage" / "tally.yaml").write_text("factor: 1.5  # the stage's own default\n")
    monkeypatch.setenv("FICKLENET_CONF", str(conf))
    monkeypatch.setitem(STAGES, "tally", TALLY)
    register_schemas()
    yield TALLY
    monkeypatch.undo()
    register_schemas()  # the ConfigStore as the registry is again


def test_declared_stage_is_composed_into_the_pipeline(tally, tmp_path):
    cfg = compose_app("pipeline", ["seed=7", "stages=[tally]"])
    assert list(cfg.stages) == ["tally"]
    assert cfg.tally.factor == 2.0  # the declaration's settings win over its own file
    assert cfg.tally.seed == 7  # shared keys interpolate the pipeline's
    cfg.run_dir = str(tmp_path / "run")
    assert OmegaConf.select(cfg, "tally.source") == f"{tmp_path}/run/classify"
    assert pipeline_links()["tally"] == {"source": "${run_dir}/classify", "factor": 2.0}
    # Every stage keeps its place: the real ones still chain as before.
    assert cfg.localize.classifier.ckpt == f"{tmp_path}/run/classify/checkpoints/last.ckpt"


def test_declared_stage_is_run_by_the_pipeline(tally, tmp_path):
    run = tmp_path / "run"
    write_json(run / "classify" / "metrics.json", {"val/mAP": 0.25})
    cfg = compose_app("pipeline", ["seed=3", "stages=[tally]"])
    cfg.run_dir = str(run)
    run_pipeline(cfg, run_dir=run)
    assert read_json(run / "tally" / "metrics.json") == {"tally": 0.5, "seed": 3}
    assert read_json(run / "metrics.json")["tally"]["tally"] == 0.5
    for where in (run / "tally", run):  # the stage's attempt and the pipeline's
        attempts = read_json(where / "run_info.json")["attempts"]
        assert [a["outcome"] for a in attempts] == ["finished"]
    # Finished with these settings: a rerun reports it again and writes nothing.
    kept = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert math.isnan(run_pipeline(cfg, run_dir=run))  # no evaluation: no final figure
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == kept
    # Other settings: refused before anything is written, naming the stage and the key.
    other = compose_app("pipeline", ["seed=4", "stages=[tally]"])
    other.run_dir = str(run)
    with pytest.raises(ValueError, match=r"\[tally\].*settings.seed: 3 -> 4"):
        run_pipeline(other, run_dir=run)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == kept
    # So are other inputs: the figure it read has changed.
    write_json(run / "classify" / "metrics.json", {"val/mAP": 0.4})
    with pytest.raises(ValueError, match=r"\[tally\].*inputs.source"):
        run_pipeline(cfg, run_dir=run)


def test_declared_stage_is_refused_where_it_should_be(tally, tmp_path):
    with pytest.raises(ConfigCompositionException, match="tallly"):
        compose_app("pipeline", ["stages=[classify,tallly]"])  # no such stage
    with pytest.raises(ConfigCompositionException, match="factor"):
        compose_app("pipeline", ["tally.factor=twice"])  # its schema's type
    # An experiment may set it in its own section, which reaches it under its name.
    experiments = Path(str(conf_dir())) / "experiment"
    (experiments / "tally_more.yaml").write_text("tally:\n  - factor=3.0\n")
    assert load_experiment("tally_more")["tally"] == ["factor=3.0"]
    assert expand_experiment("pipeline", ["experiment=tally_more"]) == ["tally.factor=3.0"]
    (experiments / "tally_typo.yaml").write_text("talley:\n  - factor=3.0\n")
    with pytest.raises(ExperimentError, match="unknown sections \\['talley'\\]"):
        load_experiment("tally_typo")
    # Its checkpoint is no other stage's input, and the reader says what it is.
    fake = tmp_path / "tally.ckpt"
    torch.save({"ficklenet_stage": "tally", "hyper_parameters": {"config": {}}}, fake)
    with pytest.raises(ValueError, match="'tally'-stage checkpoint, not a FickleNet classifier"):
        read_checkpoint(fake, "classify")


def test_registry_matches_the_console_scripts():
    """Every app that runs a stage has its console script and its config files."""
    import tomllib

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    scripts = tomllib.loads(pyproject.read_text())["project"]["scripts"]
    for spec in STAGES.values():
        assert scripts[spec.command] == f"{spec.module}:main", spec.name
        assert (conf_dir() / f"{spec.app}.yaml").is_file(), spec.app
        assert (conf_dir() / "stage" / f"{spec.app}.yaml").is_file(), spec.app
        assert callable(spec.runner())
    order = list(STAGES)
    for spec in STAGES.values():  # each reads only stages before it
        assert all(order.index(dep) < order.index(spec.name) for dep in spec.after), spec.name
