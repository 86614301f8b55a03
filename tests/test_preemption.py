"""Preemption under SLURM (ficklenet.lit.preemption): the cluster's warning before the
kill makes a training stage save its state at the next whole step and requeue its
job, and localize stop after its group; the same command then resumes exactly.

The end-to-end test runs the pipeline as a SLURM job would see it (SLURM_* variables,
a fake ``scontrol`` on PATH that records what it was asked) and sends the signal from
inside the process at a chosen step (:mod:`tests.fault_injection`): SIGUSR1 in the
middle of the classifier's second epoch, then SIGTERM during localization.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ficklenet.data.datamodule import VOCDataModule
from ficklenet.data.resumable import ResumePoint
from ficklenet.lit.preemption import preemption_settings, slurm_job
from tests.conftest import compose_config, small_toy_overrides
from tests.test_resume import ENV, _weights, tiny_pipeline

JOB = "4242"


def _slurm_env(tmp_path: Path) -> dict[str, str]:
    """A one-task SLURM batch job's environment, with a fake scontrol first on PATH."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(0o755)
    return dict(
        ENV,
        PATH=f"{bin_dir}{os.pathsep}{ENV['PATH']}",
        SLURM_JOB_ID=JOB,
        SLURM_JOB_NAME="ficklenet",
        SLURM_NTASKS="1",
        SLURM_PROCID="0",
        SLURM_LOCALID="0",
        SLURM_NODEID="0",
    )


def _pipeline(args: list[str], cwd: Path, env: dict[str, str], app="pipeline", **kill: str):
    env = dict(env, **{f"FICKLENET_KILL_{k.rstrip('_').upper()}": v for k, v in kill.items()})
    entry = f"ficklenet.tasks.{app}:main"
    cmd = [sys.executable, "-m", "tests.fault_injection", entry, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_preempted_pipeline_requeues_and_resumes_to_the_uninterrupted_result(tmp_path, toy_root):
    tiny = [*tiny_pipeline(toy_root), "data.batch_size=8"]  # 5 steps an epoch (40 images)
    whole, run = tmp_path / "whole", tmp_path / "preempted"
    proc = _pipeline([f"hydra.run.dir={whole}", *tiny], tmp_path, ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]

    slurm = _slurm_env(tmp_path)
    args = [f"hydra.run.dir={run}", *tiny]
    # 1. SIGUSR1 before step 7 (the third batch of epoch 1): saved after it, requeued.
    proc = _pipeline(args, tmp_path, slurm, at="train:7", with_="SIGUSR1", in_="classify")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "preempted (SIGUSR1)" in proc.stderr and f"SLURM job {JOB} requeued" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "scontrol.log").read_text().split("\n") == [f"requeue {JOB}", ""]
    state = torch.load(run / "classify" / "checkpoints" / "last.ckpt", weights_only=False)
    assert (state["epoch"], state["global_step"]) == (1, 8)  # mid-epoch: 3 of 5 batches
    assert not (run / "classify" / "metrics.json").exists()
    info = json.loads((run / "classify" / "run_info.json").read_text())
    assert [a["outcome"] for a in info["attempts"]] == ["preempted"]

    # 2. The requeued job: classify resumes there and finishes; SIGTERM (SLURM's own
    #    preemption, which requeues by itself) during localization's 5th group.
    proc = _pipeline(args, tmp_path, slurm, at="predict:4", with_="SIGTERM", in_="localize")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "preempted (SIGTERM)" in proc.stderr and f"job {JOB} requeued" not in proc.stderr
    assert (tmp_path / "scontrol.log").read_text().count("requeue") == 1
    assert (run / "classify" / "metrics.json").is_file()
    assert not (run / "localize" / "metrics.json").exists()
    assert len(list((run / "localize" / "seeds").glob("*.png"))) == 10  # 5 groups of 2

    # 3. The job again: localize finishes the images left, segment runs.
    proc = _pipeline(args, tmp_path, slurm)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((run / "run_info.json").read_text())
    assert [a["outcome"] for a in info["attempts"]] == ["preempted", "preempted", "finished"]

    a, b = (json.loads((d / "metrics.json").read_text()) for d in (whole, run))
    for stage, key in (("classify", "val/mAP"), ("classify", "train/loss"),
                       ("localize", "seed/miou"), ("segment", "val/miou")):  # fmt: skip
        assert a[stage][key] == b[stage][key], (stage, key)
    wa, wb = (_weights(d / "classify" / "checkpoints" / "last.ckpt") for d in (whole, run))
    assert all(torch.equal(wa[name], wb[name]) for name in wa)
    for seeds in (whole / "localize" / "seeds").glob("*.png"):
        assert seeds.read_bytes() == (run / "localize" / "seeds" / seeds.name).read_bytes()


@pytest.mark.slow
def test_a_signal_in_an_epochs_last_batch_stops_after_its_validation(tmp_path, toy_root):
    run = tmp_path / "run"
    args = [*small_toy_overrides(toy_root), "data.batch_size=8", "trainer.max_epochs=3",
            f"hydra.run.dir={run}"]  # fmt: skip
    proc = _pipeline(args, tmp_path, _slurm_env(tmp_path), app="classify", at="train:4",
                     with_="SIGUSR1")  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "(the end of epoch 0)" in proc.stderr
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert (state["epoch"], state["global_step"]) == (0, 5)  # epoch 0's own last.ckpt
    with (run / "logs" / "metrics.csv").open() as file:
        validated = [r for r in csv.DictReader(file) if r.get("val/mAP")]
    assert [int(r["epoch"]) for r in validated] == [0]


def test_a_checkpoints_resume_point_makes_the_next_loader_start_after_the_batches_done(
    toy_root,
):
    cfg = compose_config("classify", [*small_toy_overrides(toy_root), "data.batch_size=8"])
    whole = VOCDataModule(cfg.data, rng_seed=3)
    whole.setup("fit")
    loader = whole.train_dataloader()
    loader.sampler.set_epoch(2)
    whole.train_set.set_epoch(2)
    epoch_2 = list(loader)  # 5 batches of 8
    order = [batch["id"] for batch in epoch_2]
    assert len(order) == 5

    resumed = VOCDataModule(cfg.data, rng_seed=3)
    resumed.setup("fit")
    resumed.load_state_dict({"resume": ResumePoint(epoch=2, batches_done=3).state()})
    loader = resumed.train_dataloader()
    assert len(loader) == 5  # Lightning counts the whole epoch and stops when it ends
    rest = list(loader)
    assert [batch["id"] for batch in rest] == order[3:]
    # The augmentation is epoch 2's too (random crops of the same images).
    assert all(torch.equal(b["image"], a["image"]) for b, a in zip(rest, epoch_2[3:], strict=True))
    # The skip is for the first pass only; the next epoch starts from its first batch.
    loader.sampler.set_epoch(3)
    whole_next = whole.train_dataloader()
    whole_next.sampler.set_epoch(3)
    assert [b["id"] for b in loader] == [b["id"] for b in whole_next]


def test_preemption_is_on_only_in_a_slurm_job_with_a_requeue_signal(monkeypatch):
    from omegaconf import OmegaConf

    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    cfg = OmegaConf.create({"requeue_signal": "SIGUSR1"})
    assert preemption_settings(cfg, None) == {"plugins": [], "callbacks": []}
    for key, value in {"SLURM_JOB_ID": JOB, "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "x"}.items():
        monkeypatch.setenv(key, value)
    on = preemption_settings(cfg, Path("last.ckpt"))
    (environment,), (callback,) = on["plugins"], on["callbacks"]
    assert not environment.auto_requeue  # Lightning's own handler off: ours acts
    assert callback.requeue_signal == signal.SIGUSR1
    off = preemption_settings(OmegaConf.create({"requeue_signal": None}), None)
    assert off == {"plugins": [], "callbacks": []}
    assert slurm_job() == JOB
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert slurm_job() == "77_3"  # an array task is requeued by its array name
