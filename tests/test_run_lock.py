"""One run at a time in a run directory (run.lock): a live holder is refused, an
abandoned lock (a dead process, an earlier start of the same SLURM job) is taken over."""

from __future__ import annotations

import json
import os
import socket

import pytest

from ficklenet.config import compose_app
from ficklenet.errors import UserFileExistsError
from ficklenet.tasks.run_dir import LOCK, held_locks, take_lock
from ficklenet.tasks.run_record import RECORD, DependsOn, open_run


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


def _hold(run_dir, pid, host=None, job=None):
    run_dir.mkdir(parents=True, exist_ok=True)
    holder = {"pid": pid, "host": host or socket.gethostname(), "job": job, "started": "T0"}
    (run_dir / LOCK).write_text(json.dumps(holder))


def test_a_live_run_holding_the_directory_is_refused_before_anything_is_written(tmp_path):
    run = tmp_path / "run"
    _hold(run, os.getppid())  # a live process on this machine (pytest's parent)
    cfg = compose_app("classify", [f"data.root={tmp_path / 'toy'}"])
    with pytest.raises(
        UserFileExistsError, match=rf"being written by another run \(pid {os.getppid()}"
    ):
        open_run(run, "classify", cfg, DependsOn())
    assert not (run / RECORD).exists()
    _hold(run, os.getppid(), host="elsewhere")  # another machine's: cannot be checked
    with pytest.raises(UserFileExistsError, match="on elsewhere, started T0"):
        take_lock(run)
    # What a lock holds: who, where, since when.
    (tmp_path / "mine").mkdir()
    with held_locks():
        take_lock(tmp_path / "mine")
        mine = json.loads((tmp_path / "mine" / LOCK).read_text())
    assert mine["pid"] == os.getpid() and mine["host"] == socket.gethostname()
    assert mine["started"][:4].isdigit()  # an ISO time


def test_an_abandoned_lock_is_taken_over(tmp_path, monkeypatch, caplog):
    with held_locks():
        dead = _dead_pid()
        _hold(tmp_path / "a", dead)  # killed: its pid is gone
        with caplog.at_level("INFO", logger="ficklenet.tasks.run_dir"):
            take_lock(tmp_path / "a")
        assert f"taking over the lock left by a run that is gone (pid {dead}" in caplog.text
        assert json.loads((tmp_path / "a" / LOCK).read_text())["pid"] == os.getpid()
        # A requeued SLURM job finds its own earlier start's lock, on another node.
        monkeypatch.setenv("SLURM_JOB_ID", "4242")
        _hold(tmp_path / "b", os.getppid(), host="node-7", job="4242")
        take_lock(tmp_path / "b")
        assert json.loads((tmp_path / "b" / LOCK).read_text())["host"] == socket.gethostname()
        take_lock(tmp_path / "b")  # already held by this process: nothing to do
    # The block that took them has ended: both directories are free again.
    assert not (tmp_path / "a" / LOCK).exists() and not (tmp_path / "b" / LOCK).exists()
