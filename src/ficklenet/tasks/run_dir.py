"""The run directory of a stage: where it is, and its life for one start, in one owner.

Hydra chooses the directory (``runs/<stage>/<time>`` or a multirun subdir); tests
and the pipeline may pass one explicitly. :func:`open_run_dir` owns what happens to
it during one start of a stage, in this order:

1. **check**: the stage's run record (:mod:`ficklenet.tasks.run_record`) is compared
   with the one an earlier start left; other settings or inputs are refused, naming
   the keys, before anything is written;
2. **lock**: ``run.lock`` (one run at a time; a lock left by a run that is gone is
   taken over);
3. **record**: ``run_record.json``; then, unless the run finished earlier (the stage
   returns its stored metrics and nothing else is written), ``config.yaml`` (the
   resolved config) and a new attempt in ``run_info.json`` (provenance: version,
   commit, command, machine; earlier attempts are kept with their outcomes);
4. the stage writes its outputs (``RunDir.write_metrics`` for ``metrics.json``);
5. **finish**: the attempt's outcome (``finished``, ``preempted``, ``failed: <error>``)
   and the lock released.

Only the writing process (rank 0) checks and writes; the others read.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ficklenet.checkpoints import checkpoint_path
from ficklenet.errors import (
    Preempted,
    UserFileExistsError,
    UserFileNotFoundError,
    UserValueError,
)
from ficklenet.files import atomic_path, read_json, write_json
from ficklenet.provenance import run_info
from ficklenet.tasks.run_record import RECORD, DependsOn, compare, refusal, remove_outputs

log = logging.getLogger(__name__)


def hydra_run_dir() -> Path | None:
    """The Hydra output directory of this job, or None outside a Hydra app."""
    if not HydraConfig.initialized():
        return None
    return Path(HydraConfig.get().runtime.output_dir)


def sweep_group() -> str | None:
    """The sweep directory's name in a multirun (runs of one sweep share a
    wandb group), else None."""
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        return Path(hc.sweep.dir).name
    return None


def resolve_run_dir(run_dir: Path | None = None) -> Path:
    """``run_dir`` when given, else Hydra's output directory, else the cwd."""
    return Path(run_dir) if run_dir is not None else hydra_run_dir() or Path.cwd()


#: The file a run holds while it writes into its run directory.
LOCK = "run.lock"
# The run directories this process holds (released when it exits).
_HELD: set[Path] = set()


def take_lock(run_dir: Path) -> None:
    """Refuse a second run writing into ``run_dir`` at the same time.

    The lock (``run.lock``: pid, host, SLURM job, start time) is taken atomically and released
    when this process exits. A lock left by a process that is gone (killed: the same
    host, a dead pid) or by an earlier start of the same SLURM job (a requeue) is
    taken over; one held by a live process, or by another host's that cannot be
    checked, is refused with the fix.
    """
    run_dir = run_dir.absolute()
    if run_dir in _HELD:
        return
    path = run_dir / LOCK
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "job": os.environ.get("SLURM_JOB_ID"),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _lock_holder(path)
            if holder is None or _abandoned(holder, me):
                log.info(
                    "%s: taking over the lock left by a run that is gone (%s)",
                    run_dir,
                    "unreadable" if holder is None else _describe(holder),
                )
                path.unlink(missing_ok=True)
                continue
            raise UserFileExistsError(
                f"{run_dir} is being written by another run ({_describe(holder)}): wait "
                "for it to end or choose another run "
                f"directory (hydra.run.dir=...). If that run is gone, delete {path}."
            ) from None
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        if not _HELD:
            atexit.register(_release_all)  # a run ended by an uncaught error
        _HELD.add(run_dir)
        return
    raise UserFileExistsError(f"{path}: could not be taken; delete it if no run is writing there")


def release_lock(run_dir: Path) -> None:
    """Remove ``run_dir``'s lock if this process holds it."""
    run_dir = run_dir.absolute()
    holder = _lock_holder(run_dir / LOCK)
    if holder is not None and holder.get("pid") == os.getpid():
        (run_dir / LOCK).unlink(missing_ok=True)
    _HELD.discard(run_dir)


def _release_all() -> None:
    for run_dir in list(_HELD):
        release_lock(run_dir)


def _describe(holder: dict[str, Any]) -> str:
    job = f", SLURM job {holder['job']}" if holder.get("job") else ""
    started = f", started {holder['started']}" if holder.get("started") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{job}{started}"


def _lock_holder(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # gone, or half-written by a start that died: not a holder


def _abandoned(holder: dict[str, Any], me: dict[str, Any]) -> bool:
    if holder.get("job") and holder.get("job") == me["job"]:
        return True  # an earlier start of this SLURM job: requeued after preemption
    if holder.get("host") != me["host"]:
        return False  # another machine's process: it cannot be checked from here
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid == me["pid"]:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def record_attempt(run_dir: Path, info: dict[str, Any]) -> str:
    """Add this start to ``run_info.json`` and return its stamp (start time): the top
    level describes the latest attempt (version, commit, command, machine), and
    ``attempts`` keeps every attempt that ran here (command, time, outcome) instead of
    replacing them. An outcome stays ``running`` until :func:`finish_attempt` (a kill
    leaves it so)."""
    path = run_dir / "run_info.json"
    earlier = read_json(path) if path.is_file() else None
    attempts = list(earlier.get("attempts", [])) if isinstance(earlier, dict) else []
    if isinstance(earlier, dict) and not attempts:  # written before attempts were kept
        attempts = [{"command": earlier.get("command"), "started": None, "outcome": "unknown"}]
    started = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    attempts.append({"command": info.get("command"), "started": started, "outcome": "running"})
    write_json(path, {**info, "attempts": attempts})
    return started


def finish_attempt(run_dir: Path, started: str, outcome: str) -> None:
    """Set the outcome of the attempt stamped ``started`` (if it is still running)."""
    path = run_dir / "run_info.json"
    if not path.is_file():
        return
    info = read_json(path)
    for attempt in info.get("attempts", []):
        if attempt.get("started") == started and attempt.get("outcome") == "running":
            attempt["outcome"] = outcome
    write_json(path, info)


def outcome_of(error: BaseException | None) -> str:
    """An attempt's outcome: ``finished``, ``preempted`` or ``failed: <error type>``."""
    if error is None:
        return "finished"
    return "preempted" if isinstance(error, Preempted) else f"failed: {type(error).__name__}"


@dataclass
class RunDir:
    """One start of a stage in its run directory (:func:`open_run_dir`).

    Attributes:
        path: the directory.
        writer: whether this process writes its files (rank 0).
        finished: the stored ``metrics.json`` of an earlier start that finished with
            the same record (the stage returns it and writes nothing), else None.
        config: the resolved config as a plain dict with ``run_info`` (what goes into
            checkpoints and loggers); empty for a finished run.
    """

    path: Path
    writer: bool
    finished: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """``metrics.json`` (written whole), by the writing process."""
        if self.writer:
            write_json(self.path / "metrics.json", metrics)


@contextmanager
def open_run_dir(
    stage: str,
    cfg: DictConfig,
    depends_on: DependsOn | None,
    run_dir: Path | None = None,
    writer: bool | None = None,
    overwrite: bool = False,
    overwrite_key: str | None = None,
) -> Iterator[RunDir]:
    """The life of ``run_dir`` for one start of ``stage`` (module docstring).

    ``depends_on``: what the stage's outputs depend on (its run record; None: no
    record, as for the pipeline's own directory). ``writer``: this process writes
    (default: rank 0). ``overwrite``: delete outputs made with other settings instead
    of refusing (``overwrite_key`` names the setting in the refusal).
    """
    path = resolve_run_dir(run_dir)
    writer = is_rank_zero() if writer is None else writer
    now = before = None
    differ: list[str] = []
    if depends_on is not None and writer:
        now, before, differ = compare(path, stage, cfg, depends_on)
        if before is not None and differ and not overwrite:
            raise UserValueError(refusal(path, stage, before, now, differ, overwrite_key))
    if writer:
        path.mkdir(parents=True, exist_ok=True)
        take_lock(path)  # before removing or writing anything: one run at a time
    try:
        run = RunDir(path, writer)
        if depends_on is not None and writer:
            if differ:
                log.warning("%s=true: removing outputs made with other settings", overwrite_key)
                remove_outputs(path, depends_on)
            elif before is not None and (path / "metrics.json").is_file():
                run.finished = read_json(path / "metrics.json")
            if before != now:  # else the record there is this start's already
                write_json(path / RECORD, now)
        if run.finished is not None:
            log.info(
                "%s finished earlier with these settings (%s exists): skipped. Delete the "
                "folder or choose another run directory to run it again.",
                path,
                path / "metrics.json",
            )
            yield run
            return
        if "logger" in cfg and cfg.logger.group is None and (group := sweep_group()):
            cfg.logger.group = group
        config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        assert isinstance(config, dict)
        info = run_info()  # runs git: once per start
        started = None
        if writer:
            with atomic_path(path / "config.yaml") as tmp:
                tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
            started = record_attempt(path, info)
        run.config = {**config, "run_info": info}
        error: BaseException | None = None
        try:
            yield run
        except BaseException as err:
            error = err
            raise
        finally:
            if started is not None:
                finish_attempt(path, started, outcome_of(error))
    finally:
        if writer:
            release_lock(path)


def resolve_resume(ckpt_path: str | None, run_dir: Path) -> str | None:
    """``ckpt_path`` for ``Trainer.fit``: an explicit path, ``"last"`` (the run
    directory's last.ckpt), or automatically last.ckpt when it exists."""
    last = checkpoint_path(run_dir)
    if ckpt_path == "last" or (ckpt_path is None and last.is_file()):
        if not last.is_file():
            raise UserFileNotFoundError(
                f"ckpt_path=last but {last} does not exist; run without ckpt_path to start "
                "fresh or give the checkpoint's path."
            )
        log.info("resuming from %s", last)
        return str(last)
    if ckpt_path is not None and not Path(ckpt_path).is_file():
        raise UserFileNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file")
    return ckpt_path


def run_name(cfg: DictConfig, run_dir: Path) -> str:
    """Name shown in loggers: ``name`` when set; in a multirun, what this job sweeps
    (Hydra's override names, without where-and-how keys: conf/hydra/ficklenet.yaml);
    else the run directory's name."""
    if cfg.get("name"):
        return str(cfg.name)
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN and hc.job.override_dirname:
            return str(hc.job.override_dirname)
    return run_dir.name


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Lightning's callback metrics as plain floats."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[key] = float(value.item())
        elif isinstance(value, (int, float)):
            out[key] = float(value)
    return out


def is_rank_zero() -> bool:
    """Whether this is the process that writes shared files (rank 0)."""
    from pytorch_lightning.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0
