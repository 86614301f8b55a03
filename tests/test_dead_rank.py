"""A dead rank (ficklenet.lit.rank_watch): under ``trainer=ddp_cpu`` one of the two
training processes is killed (SIGKILL) in the middle of an epoch; the job ends with
one clear line and status 1, without hanging, and the same command resumes to the
uninterrupted run's weights and metrics, with nothing duplicated or half-written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pytest
import torch
from omegaconf import OmegaConf

from ficklenet.errors import UserError
from ficklenet.lit.processes import process_settings
from ficklenet.lit.rank_watch import RankWatch, ended, lost_peer
from tests.conftest import small_toy_overrides
from tests.test_resume import ENV, _assert_same_run

# 2 processes x 20 images, batches of 4: 5 steps an epoch.
ARGS = ["data.batch_size=4", "trainer.max_epochs=3", "trainer=ddp_cpu", "trainer.timeout_s=60"]


def _classify(args: list[str], cwd, **env: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tests.fault_injection", "ficklenet.tasks.classify:main", *args]
    return subprocess.run(
        cmd, cwd=cwd, env=dict(ENV, **env), capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_a_killed_rank_ends_the_job_cleanly_and_the_same_command_resumes(tmp_path, toy_root):
    args = [*small_toy_overrides(toy_root), *ARGS, "seed=4"]
    whole, run = tmp_path / "whole", tmp_path / "run"
    proc = _classify([*args, f"hydra.run.dir={whole}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # Rank 1 killed before step 7 (epoch 1): the subprocess timeout is the hang check.
    proc = _classify(
        [*args, f"hydra.run.dir={run}"],
        tmp_path,
        FICKLENET_KILL_AT="train:7",
        FICKLENET_KILL_RANK="1",
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ficklenet") and "Run the same command again to resume" in last
    assert "rank 1" in last or "another process of this 2-process job" in last
    assert "Traceback" not in proc.stderr
    assert not (run / "metrics.json").exists()
    kept = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert kept["epoch"] == 0  # the epoch-0 checkpoint, whole

    proc = _classify([*args, f"hydra.run.dir={run}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "resuming from" in log
    _assert_same_run(whole, run, ("val/mAP", "val/mAP_best", "train/loss", "steps"))
    # Nothing duplicated or half-written: the checkpoints are the two of a run, no
    # temporary file is left, and the run directory holds one record and one result.
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert not [p for p in run.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    assert not list(run.glob("hpc_ckpt_*.ckpt"))
    info = json.loads((run / "run_info.json").read_text())
    assert [a["outcome"] for a in info["attempts"]][-1] == "finished"


def test_the_collective_timeout_is_configurable():
    cfg = OmegaConf.create(
        {
            "accelerator": "cpu",
            "devices": 2,
            "strategy": "ddp",
            "num_nodes": 1,
            "precision": "32-true",
            "timeout_s": 90,
        }  # fmt: skip
    )
    for fabric in (False, True):
        strategy = process_settings(cfg, fabric=fabric)["strategy"]
        assert strategy._timeout == timedelta(seconds=90)
    cfg.timeout_s = None  # torch's default: the strategy stays a name
    assert process_settings(cfg)["strategy"] == "ddp"


def test_a_lost_peer_is_told_in_one_line_and_other_errors_pass():
    closed = RuntimeError("[pair.cc:598] Connection closed by peer [127.0.0.1]:5000\nmore")
    message = lost_peer(closed, world_size=2)
    assert isinstance(message, UserError)
    assert "2-process job" in str(message) and "Connection closed by peer" in str(message)
    assert "\n" not in str(message)
    assert lost_peer(closed, world_size=1) is None  # one process: not a lost peer
    assert lost_peer(RuntimeError("CUDA out of memory"), world_size=2) is None
    assert ended(-9) == "killed by SIGKILL" and ended(1) == "status 1"


def test_the_watch_ends_the_job_when_a_child_rank_dies(monkeypatch, capsys):
    class Child:
        def __init__(self, pid: int, code: int | None) -> None:
            self.pid, self.code, self.killed = pid, code, False

        def poll(self) -> int | None:
            return self.code

        def kill(self) -> None:
            self.killed = True

    def exit_(status: int) -> None:
        raise SystemExit(status)

    monkeypatch.setattr("ficklenet.lit.rank_watch.os._exit", exit_)
    alive, dead = Child(101, None), Child(102, -9)
    with pytest.raises(SystemExit) as stopped:
        RankWatch(period_s=0.01)._watch([alive, dead])
    assert stopped.value.code == 1
    assert alive.killed and not dead.killed  # the others are stopped, not left waiting
    err = capsys.readouterr().err
    assert "rank 2 (pid 102) ended (killed by SIGKILL); the job stops" in err
