"""No noise (issue 22, item 7): third-party tips and warnings that say nothing to a
ficklenet user are silenced (ficklenet.lit.quiet) or fixed where they arise, the
project's own warnings still show, and wandb groups and run names carry what was
swept, not paths and where-and-how settings (conf/hydra/ficklenet.yaml)."""

from __future__ import annotations

import dataclasses
import logging
import os
import types
import typing
import warnings
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from ficklenet.config import compose_app, conf_dir, schema
from ficklenet.config.stages import app_schemas, pipeline_schema
from ficklenet.config.sweeps import pin_sweep_dir
from ficklenet.lit.quiet import quiet
from ficklenet.lit.trainer import LogIntervalCallback
from tests.conftest import BIN, run_ok

#: What the stages printed before (issue 22): none of it may come back.
NOISE = (
    "💡 Tip",
    "litlogger",
    "litmodels",
    "TPU available",
    "LeafSpec",
    "log_every_n_steps",
    "Loading `train_dataloader`",
    "predict returned None",
    "module(s) in eval mode",
    "exists and is not empty",
    "anonymous setting",
)


RANK_ZERO_PACKAGES = (
    "pytorch_lightning.utilities",
    "lightning_fabric.utilities",
    "lightning_utilities.core",
)


def _exclude_keys() -> set[str]:
    hydra_conf = OmegaConf.load(conf_dir() / "hydra" / "ficklenet.yaml")
    return set(hydra_conf.job.config.override_dirname.exclude_keys)


def _schema_keys(cls: type, prefix: str = "") -> set[str]:
    """Every dotted key of a schema, nested schemas (``X`` or ``X | None``) too."""
    out = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        out.add(prefix + f.name)
        tp = hints[f.name]
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            tp = next((a for a in typing.get_args(tp) if a is not type(None)), None)
        if dataclasses.is_dataclass(tp):
            out |= _schema_keys(tp, f"{prefix}{f.name}.")
    return out


def test_a_sweeps_name_is_what_was_swept():
    """The issue's sweep: its pipeline group read
    `data.root=/tmp/.../toy,debug=fast,logger=wandb,model.p=0`."""
    overrides = [
        "data.root=/tmp/somewhere/toy",
        "debug=fast",
        "logger=wandb",
        "model.p=0",
        "hydra.run.dir=/tmp/run",
        "trainer.enable_progress_bar=false",
        "data.num_workers=0",
        "evaluate.overlays=0",
        "logger.project=mine",
        "trainer=cpu",
        "seed=1",
    ]
    cfg = compose_app("pipeline", overrides, return_hydra_config=True)
    assert cfg.hydra.job.override_dirname == "model.p=0,seed=1"


def test_a_stage_sweeps_folder_and_group_read_as_what_was_swept():
    argv = ["-m", "model.p=0,0.5", "data.root=/tmp/x/toy", "logger=wandb", "debug=fast"]
    folder = pin_sweep_dir(argv, "classify")[-1].rsplit("/", 1)[1]
    assert folder.startswith("model.p-0-0.5_") and len(folder) == len("model.p-0-0.5_") + 8
    other = pin_sweep_dir([*argv[:2], "data.root=/elsewhere", *argv[3:]], "classify")
    assert other[-1] != pin_sweep_dir(argv, "classify")[-1], "the hash covers every override"


def test_every_where_and_how_key_is_left_out_of_the_names_and_no_other():
    apps = {**app_schemas(), "pipeline": pipeline_schema()}
    wanted = {k for cls in apps.values() for k in schema.keys_with_role(cls, schema.WHERE_AND_HOW)}
    listed = _exclude_keys()
    assert not wanted - listed, f"add to conf/hydra/ficklenet.yaml: {sorted(wanted - listed)}"
    # Every listed key is a key (or a config group) some app has.
    known = {"trainer", "logger", "debug"}
    for cls in apps.values():
        known |= _schema_keys(cls)
    assert not listed - known, f"not a key of any app: {sorted(listed - known)}"


def test_quiet_drops_the_listed_messages_and_keeps_the_others():
    from pytorch_lightning.utilities import rank_zero_info

    quiet()
    quiet()  # idempotent
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet()
        for message, category in [
            ("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning),
            ("Checkpoint directory /x/checkpoints exists and is not empty.", UserWarning),
            ("freeze_bn=True on a randomly initialised small backbone: ...", UserWarning),
            ("`isinstance(treespec, LeafSpec)` deprecated elsewhere", UserWarning),
        ]:
            warnings.warn(message, category, stacklevel=1)
    assert [str(w.message)[:9] for w in caught] == ["freeze_bn", "`isinstan"]

    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    # the logger Lightning's rank-zero lines go through: the last of these imported
    loggers = [logging.getLogger(f"{p}.rank_zero") for p in RANK_ZERO_PACKAGES]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        rank_zero_info("💡 Tip: For seamless cloud logging, try installing litlogger")
        rank_zero_info("TPU available: False, using: 0 TPU cores")
        rank_zero_info("GPU available: False, used: False")
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    assert lines == ["GPU available: False, used: False"]


@pytest.mark.parametrize(
    "batches,limit,configured,expected",
    [(3, 1.0, 10, 3), (40, 2, 10, 2), (40, 1.0, 10, 10), (40, 0.5, 10, 10), (8, 0.5, 10, 4)],
)
def test_the_log_interval_is_at_most_an_epoch(batches, limit, configured, expected):
    datamodule = SimpleNamespace(train_dataloader=lambda: range(batches))
    trainer = SimpleNamespace(
        datamodule=datamodule, limit_train_batches=limit, log_every_n_steps=configured
    )
    LogIntervalCallback().setup(trainer, None, "fit")  # type: ignore[arg-type]
    assert trainer.log_every_n_steps == expected


@pytest.mark.slow
def test_the_stages_print_no_noise_and_keep_the_projects_warnings(toy_root, tmp_path):
    """classify (with wandb) then localize on the small toy, as a user runs them:
    none of the old noise, while a warning that matters (freeze_bn on a randomly
    initialised backbone) still shows."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        WANDB_MODE="offline",
        WANDB_DIR=str(tmp_path / "wandb_dir"),
        WANDB_CONFIG_DIR=str(tmp_path / "wandb_config"),
        WANDB_CACHE_DIR=str(tmp_path / "wandb_cache"),
    )
    env.pop("WANDB_API_KEY", None)
    data = [f"data.root={toy_root}", "data.make_toy_if_missing=false", "data.crop_size=64"]
    classify = [str(BIN / "ficklenet-classify"), "debug=fast", *data, "logger=wandb"]
    first = run_ok([*classify, "backbone.freeze_bn=true", "hydra.run.dir=run/c"], tmp_path, env)
    ckpt = tmp_path / "run" / "c" / "checkpoints" / "last.ckpt"
    localize = [str(BIN / "ficklenet-localize"), "debug=fast", *data, f"classifier.ckpt={ckpt}"]
    second = run_ok([*localize, "localize.n=2", "hydra.run.dir=run/l"], tmp_path, env)
    for proc in (first, second):
        printed = proc.stdout + proc.stderr
        assert not [n for n in NOISE if n in printed], printed[-3000:]
    assert "freeze_bn=True on a randomly initialised small backbone" in first.stderr
    assert "GPU available" in first.stderr  # Lightning's line saying where it runs stays
