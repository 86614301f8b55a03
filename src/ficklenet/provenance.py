"""What produced a run: package version, git commit, resolved config, command.

Saved at the start of every stage into the run directory (``run_info.json``,
``config.yaml``) and into checkpoints, so any number can be traced back to the
exact code and settings (a habit taken from DINO).
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import ficklenet


def git_sha(path: str | Path | None = None) -> str | None:
    """The commit of the source tree (with ``-dirty`` when it has local edits)."""
    where = Path(path) if path else Path(ficklenet.__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("-dirty" if dirty else "")


def run_info() -> dict[str, Any]:
    """Version, commit, command line and machine of this process."""
    return {
        "ficklenet_version": ficklenet.__version__,
        "git_sha": git_sha(),
        "command": " ".join(sys.argv),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "cuda_available": torch.cuda.is_available(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        # CPU float sums are ordered by thread count: same seed, same threads, same numbers.
        "torch_threads": torch.get_num_threads(),
        "host": platform.node(),
    }
