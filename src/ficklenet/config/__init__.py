"""Where the Hydra configs live, how a stage validates its config, and composing it
as an app would (:func:`compose_app`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ficklenet.config.stages import register_schemas
from ficklenet.errors import UserValueError


def conf_dir() -> Path:
    """Where the Hydra configs are: ``FICKLENET_CONF``, else the repository's
    ``conf/`` (a clone, installed editable), else the copy an installed wheel carries
    (``ficklenet/conf``)."""
    env = os.environ.get("FICKLENET_CONF")
    candidates = [Path(env)] if env else [_REPO_CONF, _PACKAGED_CONF]
    for path in candidates:
        if (path / "classify.yaml").is_file():
            return path
    raise FileNotFoundError(
        f"ficklenet's Hydra configs were not found at {', '.join(map(str, candidates))}. "
        "Install the package (`pip install .`, or `pip install -e .` from a clone as "
        "`make install` does) or set FICKLENET_CONF to a conf/ directory."
    )


def config_search_path() -> str:
    """The ``config_path`` the apps give Hydra: the repository's conf/ as a file path,
    or ``pkg://ficklenet.conf`` for an installed wheel. A user's own config folder
    can be added before it with ``--config-dir``."""
    path = conf_dir()
    return "pkg://ficklenet.conf" if path == _PACKAGED_CONF else str(path)


def compose_app(
    app: str, overrides: Sequence[str] = (), *, return_hydra_config: bool = False
) -> DictConfig:
    """The config ``ficklenet-<app>`` would run with, given ``overrides`` on its
    command line: ``conf/<app>.yaml`` from :func:`conf_dir`, checked against the
    app's typed schema (:func:`register_schemas`), under Hydra's ``version_base``
    1.3, with ``experiment=NAME`` first replaced by that experiment's overrides for
    the app (:func:`ficklenet.config.experiments.expand_experiment`), as every app
    built by :func:`ficklenet.tasks.entry_point.stage_main` does.

    For benchmarks, studies, notebooks and tests that build a stage's modules from
    its real config without running the app. Hydra's own ``hydra`` node is left out
    unless ``return_hydra_config``; Hydra options (``-m``, ``--cfg``) are not
    accepted. A Hydra already initialised in this process (a running app) is set
    aside while composing and put back afterwards.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ficklenet.config.experiments import expand_experiment

    register_schemas()
    argv = expand_experiment(app, list(overrides))
    outer = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            return compose(config_name=app, overrides=argv, return_hydra_config=return_hydra_config)
    finally:
        GlobalHydra.instance().hydra = outer


def _from_checkpoint() -> None:
    """``${from_checkpoint:}``: the mark conf/data/checkpoint.yaml puts on every data
    key, which evaluate and predict replace by the checkpoint's value
    (:func:`ficklenet.inference.data_settings`) and never resolve; any other app
    resolving it was given ``data=checkpoint`` by mistake."""
    raise UserValueError(
        "data=checkpoint: only ficklenet-evaluate and ficklenet-predict take the data "
        "settings from a checkpoint (segmenter.ckpt); give data=toy or data=voc"
    )


if not OmegaConf.has_resolver("from_checkpoint"):
    OmegaConf.register_new_resolver("from_checkpoint", _from_checkpoint)

_REPO_CONF = Path(__file__).resolve().parents[3] / "conf"
_PACKAGED_CONF = Path(__file__).resolve().parents[1] / "conf"


__all__ = ["compose_app", "conf_dir", "config_search_path", "register_schemas"]
