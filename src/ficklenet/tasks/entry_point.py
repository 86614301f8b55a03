"""The console entry point of each Hydra app (``ficklenet-<stage>``, ``-pipeline``).

One factory for every app: the app composes ``conf/<app>.yaml`` against its typed
schema; ``experiment=NAME`` is replaced by that experiment's overrides for the app
(:mod:`ficklenet.config.experiments`); and a multirun that names no
``hydra.sweep.dir`` gets one named by its command (:mod:`ficklenet.config.sweeps`),
so rerunning a crashed sweep resumes it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig

from ficklenet.config import config_search_path, register_schemas
from ficklenet.config.experiments import ExperimentError, expand_experiment
from ficklenet.config.sweeps import pin_sweep_dir


def stage_main(app: str, run: Callable[[DictConfig], Any]) -> Callable[[], Any]:
    """``main()`` for ``ficklenet-<app>``: Hydra's app around ``run``."""
    register_schemas()
    hydra_app = hydra.main(config_path=config_search_path(), config_name=app, version_base="1.3")(
        run
    )

    def main() -> Any:
        try:
            argv = expand_experiment(app, sys.argv[1:])
        except ExperimentError as err:
            raise SystemExit(f"ficklenet-{app}: {err}") from None
        sys.argv[1:] = pin_sweep_dir(argv, app)
        return hydra_app()

    main.__doc__ = f"ficklenet-{app}: {run.__doc__ or ''}"
    return main
