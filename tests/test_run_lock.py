"""One run at a time in a run directory (run.lock): a live holder is refused, an
abandoned lock (a dead process, an earlier start of the same SLURM job) is taken over."""

from __future__ import annotations

import json
import os
import socket

import pytest

from ficklenet.config import compose_app
from ficklenet.errors import Preempted, UserFileExistsError
from ficklenet.tasks.run_dir import LOCK, open_run_dir, release_lock, take_lock
from ficklenet.tasks.run_record import RECORD, DependsOn


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
    with (
        pytest.raises(
            UserFileExistsError, match=rf"being written by another run \(pid {os.getppid()}"
        ),
        open_run_dir("classify", cfg, DependsOn(), run, writer=True),
    ):
        pass
    assert not (run / RECORD).exists()
    _hold(run, os.getppid(), host="elsewhere")  # another machine's: cannot be checked
    with pytest.raises(UserFileExistsError, match="on elsewhere, started T0"):
        take_lock(run)
    # What a lock holds: who, where, since when.
    (tmp_path / "mine").mkdir()
    take_lock(tmp_path / "mine")
    mine = json.loads((tmp_path / "mine" / LOCK).read_text())
    release_lock(tmp_path / "mine")
    assert not (tmp_path / "mine" / LOCK).exists()
    assert mine["pid"] == os.getpid() and mine["host"] == socket.gethostname()
    assert mine["started"][:4].isdigit()  # an ISO time


def test_an_abandoned_lock_is_taken_over(tmp_path, monkeypatch, caplog):
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
    for held in ("a", "b"):
        release_lock(tmp_path / held)
        assert not (tmp_path / held / LOCK).exists()


def test_a_run_directory_is_unlocked_and_its_attempt_closed_however_the_start_ends(tmp_path):
    cfg = compose_app("classify", [f"data.root={tmp_path / 'toy'}"])
    run = tmp_path / "run"
    with pytest.raises(RuntimeError), open_run_dir("classify", cfg, DependsOn(), run, True):
        assert (run / LOCK).exists()  # held while the stage runs
        raise RuntimeError("a bug")
    with pytest.raises(Preempted), open_run_dir("classify", cfg, DependsOn(), run, writer=True):
        raise Preempted("the cluster's warning")
    with open_run_dir("classify", cfg, DependsOn(), run, writer=True) as opened:
        opened.write_metrics({"val/mAP_best": 0.5})
    attempts = json.loads((run / "run_info.json").read_text())["attempts"]
    assert [a["outcome"] for a in attempts] == ["failed: RuntimeError", "preempted", "finished"]
    assert not (run / LOCK).exists()
    # Finished: the next start is told so and writes nothing, not even an attempt.
    kept = {p: p.read_bytes() for p in run.iterdir()}
    with open_run_dir("classify", cfg, DependsOn(), run, writer=True) as again:
        assert again.finished == {"val/mAP_best": 0.5}
    assert {p: p.read_bytes() for p in run.iterdir()} == kept
