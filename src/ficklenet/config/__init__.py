"""Where the Hydra configs live and how a stage validates its config."""

from __future__ import annotations

import os
from pathlib import Path

from ficklenet.config.schema import register_schemas


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


_REPO_CONF = Path(__file__).resolve().parents[3] / "conf"
_PACKAGED_CONF = Path(__file__).resolve().parents[1] / "conf"


__all__ = ["conf_dir", "config_search_path", "register_schemas"]
