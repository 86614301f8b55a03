"""Crash-safe file writing: every output appears whole or not at all.

Each writer goes to a temporary file in the destination's directory and
``os.replace``s it into place, so an interrupted run (a kill, a full disk)
never leaves a half-written file that a later run would trust.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# A full disk, or a full quota: the same remedy.
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched; a
    full disk is re-raised as :func:`disk_full_error`, naming the directory.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise disk_full_error(path) from exc
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            raise disk_full_error(path) from exc
        raise


def disk_full_error(path: str | os.PathLike[str]) -> OSError:
    """The error for a full disk (or quota) while writing ``path``: it names the
    directory and the fix. Its ``errno`` stays ENOSPC, so callers can still test it."""
    path = Path(path)
    return OSError(
        errno.ENOSPC,
        f"disk full: no space left for {path.name} in {path.parent} (nothing half-written "
        "was kept). Free space on that disk and run the same command again, with "
        "hydra.run.dir=<the same run directory> to continue where it stopped, or point "
        "the run at a disk with room (hydra.run.dir=<dir>)",
        str(path),
    )


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically (NaN written as null)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_nan_to_none(data), indent=2, sort_keys=True) + "\n")
    return Path(path)


def existing_path(path: str | os.PathLike[str]) -> str | None:
    """``path`` as a string when the file exists, else None (for metrics.json)."""
    return str(path) if Path(path).is_file() else None


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text())


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {str(k): _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj
