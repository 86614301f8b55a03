"""One run record for every stage: resume, skip or refuse to mix, from one declaration.

A stage declares once what its outputs depend on (:class:`DependsOn`): which settings
(every key of its config, except where the work runs and how it is spread; or only
the keys it lists) and which input files (their fingerprints: the classifier's
checkpoint for localize, the seeds' origin for segment, ...). At start the stage
opens its run directory (:func:`ficklenet.tasks.run_dir.open_run_dir`), which
compares that (:func:`compare`) with ``run_record.json`` left there by an earlier
start:

- no record: a new run; the record is written before any output;
- the same: the same run: a finished one (``metrics.json``) is skipped, an
  interrupted one resumes (training from ``last.ckpt``, localization at the next
  image);
- different: refused, naming the keys that differ, unless the stage is told to
  overwrite (``localize.overwrite=true``), which deletes the outputs first.

So a new option of a stage is covered as soon as it is in the stage's config: outputs
made with different settings never mix silently.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ficklenet.checkpoints import CHECKPOINT_DIR
from ficklenet.config import schema
from ficklenet.config.stages import app_schemas, trains
from ficklenet.files import read_json

log = logging.getLogger(__name__)

RECORD = "run_record.json"

#: Keys added to a stage's config at run time (provenance), outside its record.
RUNTIME_KEYS = ("run_info",)


def unrecorded(app: str) -> tuple[str, ...]:
    """The keys of ``app``'s config outside its run record: those whose field has the
    role WHERE_AND_HOW (where the work runs and how it is spread, shown and named),
    and, for an app that does not train, those with the role TRAINING."""
    cls = app_schemas()[app]
    keys = schema.keys_with_role(cls, schema.WHERE_AND_HOW)
    if not trains(app):
        keys += schema.keys_with_role(cls, schema.TRAINING)
    return (*RUNTIME_KEYS, *keys)


@dataclass(frozen=True)
class DependsOn:
    """What a stage's outputs depend on.

    Attributes:
        only: the config keys (dotted prefixes) that matter; None: every key but
            :func:`unrecorded`'s.
        inputs: fingerprints of the input files (a function of the config).
        outputs: the files and folders an overwrite deletes.
    """

    only: tuple[str, ...] | None = None
    inputs: Callable[[DictConfig], dict[str, Any]] | None = None
    outputs: tuple[str, ...] = field(default=(CHECKPOINT_DIR, "logs", "metrics.json"))

    def record(self, stage: str, cfg: DictConfig) -> dict[str, Any]:
        flat = flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
        if self.only is None:
            skip = unrecorded(stage)
            settings = {k: v for k, v in flat.items() if not _under(k, skip)}
        else:
            settings = {k: v for k, v in flat.items() if _under(k, self.only)}
        inputs = self.inputs(cfg) if self.inputs is not None else {}
        return {"stage": stage, "settings": settings, "inputs": inputs}


def _under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (an empty mapping stays a leaf)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def file_digest(path: str | Path) -> str:
    """sha256 of a file (an input's fingerprint). Computed once per version of the
    file (its inode, size and modification time) in a process: a resumed pipeline
    checks a checkpoint before it runs and again in the stage that reads it."""
    stat = os.stat(path)
    return _digest(str(Path(path).resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest(path: str, inode: int, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_input(name: str) -> Callable[[DictConfig], dict[str, Any]]:
    """``DependsOn.inputs`` of a stage that reads the checkpoint ``<name>.ckpt``: its
    path and fingerprint, as ``<name>_ckpt`` and ``<name>_sha256``."""

    def inputs(cfg: DictConfig) -> dict[str, Any]:
        path = Path(cfg[name].ckpt)
        return {f"{name}_ckpt": str(path.resolve()), f"{name}_sha256": file_digest(path)}

    return inputs


def differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Keys (``settings.<key>`` / ``inputs.<key>``) whose values differ."""
    out = []
    for part in ("settings", "inputs"):
        a, b = before.get(part, {}) or {}, now.get(part, {}) or {}
        out += [f"{part}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return out


def remove_outputs(run_dir: Path, depends_on: DependsOn) -> None:
    """Delete the outputs ``depends_on`` names (an overwrite)."""
    for name in depends_on.outputs:
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)


def compare(
    run_dir: Path, stage: str, cfg: DictConfig, depends_on: DependsOn
) -> tuple[dict[str, Any], dict[str, Any] | None, list[str]]:
    """(this start's record, the run directory's record or None, the keys in which
    they differ), writing nothing. An earlier start that wrote no output differs in
    nothing: there is nothing to mix."""
    now = depends_on.record(stage, cfg)
    path = run_dir / RECORD
    if not path.is_file():
        return now, None, []
    before = read_json(path)
    if depends_on.only is None:
        # A record written before a key left the record (a key this stage no
        # longer depends on) is read as if it never had it.
        skip = unrecorded(stage)
        kept = {k: v for k, v in (before.get("settings") or {}).items() if not _under(k, skip)}
        before = {**before, "settings": kept}
    differ = differences(before, now)
    if not any((run_dir / name).exists() for name in depends_on.outputs):
        differ = []
    return now, before, differ


def refusal(
    run_dir: Path,
    stage: str,
    before: dict[str, Any],
    now: dict[str, Any],
    differ: list[str],
    overwrite_key: str | None = None,
) -> str:
    """Why a run directory made with other settings or inputs is refused, and the fixes."""
    shown = ", ".join(f"{k}: {_value(before, k)!r} -> {_value(now, k)!r}" for k in differ[:6])
    fix = f", or pass {overwrite_key}=true to delete them" if overwrite_key else ""
    return (
        f"{run_dir} holds a {stage} run made with other settings or inputs ({shown}"
        f"{', ...' if len(differ) > 6 else ''}; see {run_dir / RECORD}). Resuming or skipping "
        "it would mix two experiments: choose another run directory "
        f"(hydra.run.dir=...){fix}, or delete the folder to start over."
    )


def _value(record: dict[str, Any], key: str) -> Any:
    part, _, name = key.partition(".")
    return (record.get(part) or {}).get(name, "(absent)")


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """A run directory's record, or None."""
    path = Path(run_dir) / RECORD
    return read_json(path) if path.is_file() else None
