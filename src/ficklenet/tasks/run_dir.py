"""The run directory every stage writes into, and what it records at start.

Hydra chooses the directory (``runs/<stage>/<time>`` or a multirun subdir);
tests and the pipeline may pass one explicitly. At start the stage saves the
resolved config (``config.yaml``) and provenance (``run_info.json``), so a
number in ``metrics.json`` can always be traced to the code and settings.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ficklenet.checkpoints import checkpoint_path
from ficklenet.errors import UserFileExistsError, UserFileNotFoundError
from ficklenet.files import atomic_path, read_json, write_json
from ficklenet.provenance import run_info

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


def prepare_run(cfg: DictConfig, run_dir: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Create the run directory, save config + provenance, return both.

    Returns the directory and the resolved config as a plain dict (what goes
    into checkpoints).
    """
    run_dir = resolve_run_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if "logger" in cfg and cfg.logger.group is None and (group := sweep_group()):
        cfg.logger.group = group
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert isinstance(config, dict)
    info = run_info()  # runs git: once per start
    if is_rank_zero():
        with atomic_path(run_dir / "config.yaml") as tmp:
            tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
        record_attempt(run_dir, info)
    config["run_info"] = info
    return run_dir, config


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
            atexit.register(release_locks)
        _HELD.add(run_dir)
        return
    raise UserFileExistsError(f"{path}: could not be taken; delete it if no run is writing there")


@contextmanager
def held_locks() -> Iterator[None]:
    """Release, when the block ends, the locks taken inside it (a stage's run)."""
    before = set(_HELD)
    try:
        yield
    finally:
        release_locks(set(_HELD) - before)


def release_locks(run_dirs: set[Path] | None = None) -> None:
    """Remove the locks this process holds (all of them at exit)."""
    for run_dir in list(_HELD if run_dirs is None else run_dirs):
        path = run_dir / LOCK
        holder = _lock_holder(path)
        if holder is not None and holder.get("pid") == os.getpid():
            path.unlink(missing_ok=True)
        _HELD.discard(run_dir)


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


# The attempts this process recorded, by run directory: finish_attempts() closes them.
_OPEN_ATTEMPTS: dict[Path, str] = {}


def record_attempt(run_dir: Path, info: dict[str, Any]) -> None:
    """Add this start to ``run_info.json``: its top level describes the latest attempt
    (version, commit, command, machine), and ``attempts`` keeps every attempt that ran
    here (command, time, outcome) instead of replacing them. An outcome stays
    ``running`` until :func:`finish_attempts` (a crash or a kill leaves it so)."""
    path = run_dir / "run_info.json"
    earlier = read_json(path) if path.is_file() else None
    attempts = list(earlier.get("attempts", [])) if isinstance(earlier, dict) else []
    if isinstance(earlier, dict) and not attempts:  # written before attempts were kept
        attempts = [{"command": earlier.get("command"), "started": None, "outcome": "unknown"}]
    started = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    attempts.append({"command": info.get("command"), "started": started, "outcome": "running"})
    write_json(path, {**info, "attempts": attempts})
    _OPEN_ATTEMPTS[run_dir.absolute()] = started


def finish_attempts(outcome: str, under: Path | None = None) -> None:
    """Set the outcome (``finished``, ``failed: ...``) of the attempts this process
    recorded and has not closed yet (those in ``under`` or below it, when given)."""
    top = under.absolute() if under is not None else None
    for run_dir in [d for d in _OPEN_ATTEMPTS if top is None or d == top or top in d.parents]:
        started = _OPEN_ATTEMPTS.pop(run_dir)
        path = run_dir / "run_info.json"
        if not path.is_file():
            continue
        info = read_json(path)
        for attempt in info.get("attempts", []):
            if attempt.get("started") == started and attempt.get("outcome") == "running":
                attempt["outcome"] = outcome
        write_json(path, info)


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
