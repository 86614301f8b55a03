"""The console entry point of a stage's Hydra app (``ficklenet-<stage>``).

One factory for the four stages: the app composes ``conf/<stage>.yaml`` against
its typed schema, and a multirun that names no ``hydra.sweep.dir`` gets one named
by its command (:mod:`ficklenet.config.sweeps`), so rerunning a crashed sweep
resumes it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig

from ficklenet.config import conf_dir, register_schemas
from ficklenet.config.sweeps import pin_sweep_dir


def stage_main(stage: str, run: Callable[[DictConfig], Any]) -> Callable[[], Any]:
    """``main()`` for ``ficklenet-<stage>``: Hydra's app around ``run``."""
    register_schemas()
    app = hydra.main(config_path=str(conf_dir()), config_name=stage, version_base="1.3")(run)

    def main() -> Any:
        sys.argv[1:] = pin_sweep_dir(sys.argv[1:], stage)
        return app()

    main.__doc__ = f"ficklenet-{stage}: {run.__doc__ or ''}"
    return main
