"""The console entry point of each Hydra app (``ficklenet-<stage>``, ``-pipeline``).

One factory for every app: the app composes ``conf/<app>.yaml`` against its typed
schema; ``experiment=NAME`` is replaced by that experiment's overrides for the app
(:mod:`ficklenet.config.experiments`); and a multirun that names no
``hydra.sweep.dir`` gets one named by its command (:mod:`ficklenet.config.sweeps`),
so rerunning a crashed sweep resumes it.

Around the app's function, before it writes anything: a key the app's schema does not
have (``+modle.p=0.5``) is refused (:mod:`ficklenet.config.known_keys`); and an error
the user can act on (:class:`ficklenet.errors.UserError`, also when raised in a
DataLoader worker) prints as one line, ``ficklenet-<app>: <message>``, on stderr and
exits with status 1. ``HYDRA_FULL_ERROR=1`` shows its full traceback instead.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig

from ficklenet.config import config_search_path, register_schemas
from ficklenet.config.experiments import ExperimentError, expand_experiment
from ficklenet.config.known_keys import check_known_keys
from ficklenet.config.stages import app_schemas, pipeline_schema
from ficklenet.config.sweeps import pin_sweep_dir
from ficklenet.errors import full_error, user_message


def command(app: str) -> str:
    """The console script of ``app``: ``ficklenet-make-toy`` for ``make_toy``."""
    return f"ficklenet-{app.replace('_', '-')}"


def app_schema(app: str) -> type | None:
    """The typed schema ``ficklenet-<app>`` composes against (None: not known)."""
    return pipeline_schema() if app == "pipeline" else app_schemas().get(app)


def checked(app: str, run: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """``run`` refusing unknown keys first, its user errors as one clean line."""

    @functools.wraps(run)
    def task(cfg: DictConfig) -> Any:
        try:
            schema = app_schema(app)
            if schema is not None:
                check_known_keys(cfg, schema, app)
            return run(cfg)
        except Exception as err:
            message = user_message(err)
            if message is None or full_error():
                raise
            # Hydra would print a traceback for any exception; a SystemExit passes
            # through it (and its launcher) as it is.
            print(f"{command(app)}: {message}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None

    return task


def stage_main(app: str, run: Callable[[DictConfig], Any]) -> Callable[[], Any]:
    """``main()`` for ``ficklenet-<app>``: Hydra's app around ``run``."""
    register_schemas()
    hydra_app = hydra.main(config_path=config_search_path(), config_name=app, version_base="1.3")(
        checked(app, run)
    )

    def main() -> Any:
        try:
            argv = expand_experiment(app, sys.argv[1:])
        except ExperimentError as err:
            raise SystemExit(f"{command(app)}: {err}") from None
        sys.argv[1:] = pin_sweep_dir(argv, app)
        return hydra_app()

    main.__doc__ = f"{command(app)}: {run.__doc__ or ''}"
    return main
