"""Loggers from the ``logger`` config, for every stage: csv, tensorboard, wandb.

One place builds them, so every stage logs the same metric names to whichever logger
is configured: the training stages through Lightning, the others (localize,
evaluate) through :func:`log_results` (scalars, plus tables and curves where the
logger has them: ``wandb.Table`` and line plots on wandb, CSV files beside csv and
tensorboard logs).

wandb runs are offline unless the user is logged in (``logger.offline=null``, the
default: online when ``WANDB_API_KEY`` is set or ``~/.netrc`` holds a key for
api.wandb.ai; ``true``/``false`` force it; ``WANDB_MODE`` wins over both). Runs of
one pipeline share a group and are named ``<pipeline run>/<stage>``
(:mod:`ficklenet.tasks.pipeline`); the run summary keeps each metric's best and last
value (:data:`SUMMARIES`).
"""

from __future__ import annotations

import csv
import logging
import netrc
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from ficklenet.choices import LoggerName
from ficklenet.files import atomic_path
from ficklenet.metric_names import TRAIN_LOSS, VAL_F1, VAL_LOSS, VAL_MAP, VAL_MIOU

log = logging.getLogger(__name__)


#: Summaries wandb keeps for a metric, by its name: higher-is-better metrics keep
#: their max and their last value, losses their min and last.
SUMMARIES: dict[str, tuple[str, ...]] = {
    VAL_MIOU: ("max", "last"),
    VAL_MAP: ("max", "last"),
    VAL_F1: ("max", "last"),
    TRAIN_LOSS: ("min", "last"),
    VAL_LOSS: ("min", "last"),
}


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts;
    this one continues it (a resumed run keeps the rows of the attempts before)."""

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if path.is_file():
            with path.open(newline="") as file:
                self.metrics_keys = sorted(next(csv.reader(file), []))


class ResumableCSVLogger(CSVLogger):
    """``logs/metrics.csv`` across resumes: the rows of every attempt, in order
    (steps replayed after a kill appear again; the later rows are the ones kept
    in the checkpoint's history)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def wandb_offline(setting: bool | None) -> bool:
    """Whether a wandb run is offline: ``setting`` when given, else offline unless
    an API key is present (the user ran ``wandb login`` or set WANDB_API_KEY)."""
    if setting is not None:
        return bool(setting)
    if os.environ.get("WANDB_API_KEY"):
        return False
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is None
    except (OSError, netrc.NetrcParseError):
        return True


def build_logger(logger_cfg: Any, run_dir: Path, name: str, config: dict | None) -> Logger | None:
    """csv (default), tensorboard or wandb, with ``config`` as hyper-parameters."""
    kind = LoggerName.parse(logger_cfg.name, "logger.name")
    if kind == LoggerName.none:
        return None
    if kind == LoggerName.csv:
        logger: Logger = ResumableCSVLogger(
            save_dir=str(run_dir), name="logs", version="", flush_logs_every_n_steps=10
        )
    elif kind == LoggerName.tensorboard:
        logger = TensorBoardLogger(save_dir=str(run_dir), name="logs", version="")
    else:
        logger = WandbLogger(
            project=logger_cfg.project,
            entity=logger_cfg.entity,
            group=logger_cfg.group,
            tags=list(logger_cfg.tags),
            name=name,
            save_dir=str(run_dir),
            offline=wandb_offline(logger_cfg.get("offline")),
            log_model=bool(logger_cfg.get("log_checkpoints", False)),
        )
        # Lightning passes wandb.init an `anonymous` setting that this wandb no
        # longer has (it warns "has no effect"); ours is never set.
        getattr(logger, "_wandb_init", {}).pop("anonymous", None)
        run = logger.experiment
        if hasattr(run, "define_metric"):
            for metric, summaries in SUMMARIES.items():
                for summary in summaries:
                    run.define_metric(metric, summary=summary)
    if config is not None:
        logger.log_hyperparams(config)
    return logger


def close_logger(logger: Logger | None) -> None:
    """Flush a logger; finish a wandb run (also after a crash, so its files are
    complete).

    Called from the stages' ``finally``: when an exception is propagating the run
    is finished with exit code 1 (shown as failed once synced). Errors while
    finishing are logged, never raised over the original one.
    """
    if logger is None:
        return
    if not isinstance(logger, WandbLogger):
        logger.finalize("failed" if sys.exc_info()[0] is not None else "success")
        return
    import wandb

    if wandb.run is None:
        return
    crashed = sys.exc_info()[0] is not None
    try:
        wandb.finish(exit_code=1 if crashed else 0)
    except Exception:  # noqa: BLE001 - never mask the stage's own error
        log.exception("could not finish the wandb run")


class Table:
    """A small table of results: ``columns`` and ``rows``; a ``curve`` (x, y) pair
    of column names makes it a line plot on wandb."""

    def __init__(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        curve: tuple[str, str] | None = None,
    ) -> None:
        self.columns = list(columns)
        self.rows = [list(r) for r in rows]
        self.curve = curve


def log_results(
    logger: Logger | None,
    scalars: dict[str, float | None],
    tables: dict[str, Table] | None = None,
    run_dir: Path | None = None,
) -> None:
    """Log a stage's final results: ``scalars`` (None values skipped) under the same
    names on every logger, and ``tables`` as ``wandb.Table`` (a line plot when the
    table is a curve) on wandb, as ``<run_dir>/logs/<name>.csv`` on the others."""
    if logger is None:
        return
    values = {k: float(v) for k, v in scalars.items() if v is not None}
    if values:
        logger.log_metrics(values, step=0)
    for name, table in (tables or {}).items():
        if isinstance(logger, WandbLogger):
            import wandb

            wb = wandb.Table(columns=table.columns, data=table.rows)
            logger.experiment.log({name: wb})
            if table.curve is not None:
                x, y = table.curve
                plot = wandb.plot.line(wb, x, y, title=name)
                logger.experiment.log({f"{name}_plot": plot})
        elif run_dir is not None:
            path = run_dir / "logs" / f"{name.replace('/', '_')}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(table.columns)
                writer.writerows(table.rows)
