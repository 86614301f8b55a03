"""Where the Hydra configs live and how a stage validates its config."""

from __future__ import annotations

import os
from pathlib import Path

from ficklenet.config.schema import register_schemas


def conf_dir() -> Path:
    """The repository's ``conf/`` directory (``FICKLENET_CONF`` overrides)."""
    env = os.environ.get("FICKLENET_CONF")
    path = Path(env) if env else Path(__file__).resolve().parents[3] / "conf"
    if not (path / "classify.yaml").is_file():
        raise FileNotFoundError(
            f"ficklenet's Hydra configs were not found at {path}. Install the package "
            "editable from a clone (`pip install -e .`, as `make install` does) or set "
            "FICKLENET_CONF to the clone's conf/ directory."
        )
    return path


__all__ = ["conf_dir", "register_schemas"]
