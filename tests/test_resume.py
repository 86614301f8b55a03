"""Resume: killed runs (a real SIGKILL) continue where they stopped and end where an
uninterrupted run ends; a rerun sweep or pipeline skips what finished.

The kill comes from :mod:`tests.fault_injection`, which adds a callback to every
Lightning Trainer of the process. Training is 5 steps per epoch (40 images, batch
8); the kill lands inside the second epoch, after the first ``last.ckpt``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ficklenet.tasks.classify import run_classify
from tests.conftest import compose_config, small_toy_overrides

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
ENV = dict(
    os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), WANDB_MODE="offline", PYTHONHASHSEED="0"
)
TRAIN = ["data.batch_size=8", "trainer.max_epochs=3", "trainer.log_every_n_steps=1"]
KILL_STEP = 7  # epoch 1 (0-based) of 5-step epochs: one epoch checkpointed, two left


def _run(
    entry: str, args: list[str], cwd: Path, kill_at: str | None = None, kill_in: str | None = None
) -> subprocess.CompletedProcess:
    env = dict(ENV)
    if kill_at:
        env["FICKLENET_KILL_AT"] = kill_at
    if kill_in:
        env["FICKLENET_KILL_IN"] = kill_in
    cmd = [sys.executable, "-m", "tests.fault_injection", entry, *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if kill_at:
        assert proc.returncode == -9, "the run should have been killed:\n" + proc.stderr[-3000:]
    else:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


def _assert_same_run(a: Path, b: Path, keys: tuple[str, ...]) -> None:
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    for key in keys:
        assert ma[key] == mb[key], (key, ma[key], mb[key])
    wa, wb = _weights(a / "checkpoints" / "last.ckpt"), _weights(b / "checkpoints" / "last.ckpt")
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def _killed_then_resumed(
    entry: str, args: list[str], run: Path, tmp_path: Path, resume: tuple[str, ...] = ()
) -> None:
    _run(entry, [*args, f"hydra.run.dir={run}"], tmp_path, kill_at=f"train:{KILL_STEP}")
    assert not (run / "metrics.json").exists()
    killed_at = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert killed_at["global_step"] == 5 and killed_at["epoch"] == 0
    # Rerunning the same command resumes from last.ckpt (automatically, or as told).
    proc = _run(entry, [*args, f"hydra.run.dir={run}", *resume], tmp_path)
    assert "resuming from" in proc.stdout + proc.stderr
    # The log keeps the killed attempt's rows (flushed every 10 steps: 0..4 here)
    # and continues with the resumed ones.
    with (run / "logs" / "metrics.csv").open() as file:
        steps = [int(r["step"]) for r in csv.DictReader(file) if r.get("train/loss")]
    assert steps[0] == 0 and steps[-1] == 14 and set(range(15)) <= set(steps)


@pytest.mark.slow
def test_killed_classifier_resumes_to_the_same_final_metrics(tmp_path, toy_root):
    args = [*small_toy_overrides(toy_root), *TRAIN, "seed=3"]
    entry = "ficklenet.tasks.classify:main"
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _run(entry, [*args, f"hydra.run.dir={whole}"], tmp_path)
    _killed_then_resumed(entry, args, killed, tmp_path)
    _assert_same_run(whole, killed, ("val/mAP", "val/mAP_best", "train/loss", "steps"))


@pytest.mark.slow
def test_killed_segmenter_resumes_to_the_same_final_metrics(tmp_path, toy_root, toy_seeds):
    args = [
        *small_toy_overrides(toy_root),
        *TRAIN,
        f"seeds={toy_seeds}",
        "seed_eval_split=null",
        "seed=5",
    ]
    entry = "ficklenet.tasks.segment:main"
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _run(entry, [*args, f"hydra.run.dir={whole}"], tmp_path)
    _killed_then_resumed(entry, args, killed, tmp_path, resume=("ckpt_path=last",))
    _assert_same_run(whole, killed, ("val/miou", "val/miou_best", "train/loss", "steps"))


@pytest.mark.slow
def test_rerun_of_a_crashed_sweep_skips_finished_jobs_and_resumes_the_other(tmp_path, toy_root):
    args = ["-m", *small_toy_overrides(toy_root), *TRAIN, "model.p=0.0,0.5"]
    entry = "ficklenet.tasks.classify:main"
    # Job 1 is killed in its second epoch; job 0 had finished.
    _run(entry, args, tmp_path, kill_at=f"train:{KILL_STEP}", kill_in="/1")
    (sweep,) = (tmp_path / "runs" / "classify-multirun").iterdir()
    assert (sweep / "0" / "metrics.json").is_file()
    assert not (sweep / "1" / "metrics.json").exists()
    done = (sweep / "0" / "metrics.json").stat().st_mtime_ns

    proc = _run(entry, args, tmp_path)  # the same command
    assert [p.name for p in (tmp_path / "runs" / "classify-multirun").iterdir()] == [sweep.name]
    assert (sweep / "0" / "metrics.json").stat().st_mtime_ns == done, "job 0 was rerun"
    log = proc.stdout + proc.stderr
    assert "finished earlier" in log and "resuming from" in log
    p = json.loads((sweep / "1" / "metrics.json").read_text())["model.p"]
    assert p == 0.5 and json.loads((sweep / "1" / "metrics.json").read_text())["steps"] == 15


@pytest.mark.slow
def test_a_run_directory_with_other_settings_is_refused(tmp_path, toy_root):
    base = [*small_toy_overrides(toy_root), "debug=fast"]
    run_classify(compose_config("classify", base), run_dir=tmp_path)
    # Same settings: finished, skipped (the stored value comes back).
    stored = json.loads((tmp_path / "metrics.json").read_text())["val/mAP_best"]
    assert run_classify(compose_config("classify", base), run_dir=tmp_path) == stored
    # Where the data is and how many processes: may change.
    moved = [*base, "data.num_workers=1", "trainer.devices=1"]
    assert run_classify(compose_config("classify", moved), run_dir=tmp_path) == stored
    with pytest.raises(ValueError, match=r"model\.p: 0\.9 -> 0\.5.*hydra\.run\.dir"):
        run_classify(compose_config("classify", [*base, "model.p=0.5"]), run_dir=tmp_path)


def tiny_pipeline(toy_root: Path) -> list[str]:
    """A pipeline of seconds on the small toy: classify, localize (2 images a group),
    segment."""
    return [
        f"data.root={toy_root}",
        "data.make_toy_if_missing=false",
        "data.crop_size=64",
        "trainer.enable_progress_bar=false",
        # 20 epochs (a few seconds): earlier, the small toy's maps are mostly all zero.
        "classify.trainer.max_epochs=20",
        "localize.localize.n=2",
        "localize.localize.overlays=0",
        "localize.localize.batch_size=2",
        "segment.trainer.max_epochs=1",
        "stages=[classify,localize,segment]",
    ]


@pytest.mark.slow
def test_killed_pipeline_resumes_at_the_stage_and_image_where_it_stopped(tmp_path, toy_root):
    tiny = tiny_pipeline(toy_root)
    entry = "ficklenet.tasks.pipeline:main"
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _run(entry, [f"hydra.run.dir={whole}", *tiny], tmp_path)
    # Killed before localization's 5th predict step (two images each): 8 done.
    _run(
        entry, [f"hydra.run.dir={killed}", *tiny], tmp_path, kill_at="predict:4", kill_in="localize"
    )
    assert (killed / "classify" / "metrics.json").is_file()
    assert not (killed / "localize" / "metrics.json").exists()
    done_before = sorted(p.name for p in (killed / "localize" / "seeds").glob("*.png"))
    assert len(done_before) == 8
    stamps = {p: p.stat().st_mtime_ns for p in (killed / "localize" / "seeds").glob("*.png")}

    proc = _run(entry, [f"hydra.run.dir={killed}", *tiny], tmp_path)
    log = proc.stdout + proc.stderr
    assert "[classify] finished earlier" in log
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "finished images were redone"
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (whole, killed))
    assert a["localize"]["seed/miou"] == b["localize"]["seed/miou"]
    assert a["segment"]["val/miou"] == b["segment"]["val/miou"]
    for seed in (whole / "localize" / "seeds").glob("*.png"):
        assert seed.read_bytes() == (killed / "localize" / "seeds" / seed.name).read_bytes()
    # Not vacuous: the maps (and so the seeds) compared are not all zero.
    from ficklenet.localization.quality import load_maps

    peaks = [load_maps(m)[0].max() for m in (whole / "localize" / "maps").glob("*.npz")]
    assert np.mean(np.equal(peaks, 1)) > 0.9


def test_sweep_directory_is_named_by_the_command():
    from ficklenet.config.sweeps import pin_sweep_dir

    a = pin_sweep_dir(["-m", "model.p=0,0.5", "seed=1"], "classify")
    b = pin_sweep_dir(["seed=1", "model.p=0,0.5", "--multirun"], "classify")
    assert a[-1].startswith("hydra.sweep.dir=runs/classify-multirun/model.p-0-0.5_seed-1_")
    assert a[-1] == b[-1], "the order of overrides does not matter"
    assert pin_sweep_dir(["-m", "model.p=0,0.9"], "classify")[-1] != a[-1]
    assert pin_sweep_dir(["model.p=0.5"], "classify") == ["model.p=0.5"], "single runs: unchanged"
    mine = ["-m", "model.p=0,0.5", "hydra.sweep.dir=/x"]
    assert pin_sweep_dir(mine, "classify") == mine, "an explicit sweep dir wins"


@pytest.mark.parametrize("app", ["classify", "localize", "segment", "evaluate", "pipeline"])
def test_a_sweep_folder_round_trips_as_a_checkpoint_override(app, tmp_path):
    """Whatever the sweep's overrides, its job folders are paths that can be passed
    back as an override value (no '=' or ',' in them): the folders come from one
    place, conf/hydra/ficklenet.yaml, for every app."""
    from ficklenet.config import compose_app
    from ficklenet.config.sweeps import pin_sweep_dir

    argv = pin_sweep_dir(["-m", "segment.segmenter.grow_fg_prob=0.8,0.9", "data.root=/a=b"], app)
    hydra_cfg = compose_app(app, [argv[-1]], return_hydra_config=True).hydra
    hydra_cfg.job.num = 1
    job_dir = f"{hydra_cfg.sweep.dir}/{hydra_cfg.sweep.subdir}"
    ckpt = str(tmp_path / job_dir / "segment" / "checkpoints" / "last.ckpt")
    assert "=" not in job_dir and "," not in job_dir
    cfg = compose_config("evaluate", [f"segmenter.ckpt={ckpt}"])
    assert cfg.segmenter.ckpt == ckpt
    cfg = compose_config("localize", [f"classifier.ckpt={ckpt}"])
    assert cfg.classifier.ckpt == ckpt


@pytest.mark.slow
def test_killed_pipeline_sweep_resumes_when_the_same_command_is_rerun(tmp_path, toy_root):
    """`ficklenet-pipeline -m model.p=0,0.9`, killed in job 1's segmenter: the same
    command skips job 0 and job 1's finished stages, and resumes its segmenter."""
    args = [
        "-m",
        "model.p=0,0.9",
        *small_toy_overrides(toy_root),
        *TRAIN,
        "localize.localize.n=2",
        "localize.localize.overlays=0",
        "stages=[classify,localize,segment]",
    ]
    entry = "ficklenet.tasks.pipeline:main"
    _run(entry, args, tmp_path, kill_at=f"train:{KILL_STEP}", kill_in="/1/segment")
    (sweep,) = (tmp_path / "runs" / "pipeline-multirun").iterdir()
    assert (sweep / "0" / "metrics.json").is_file()
    assert (sweep / "1" / "localize" / "metrics.json").is_file()
    assert not (sweep / "1" / "segment" / "metrics.json").exists()
    done = {p: p.stat().st_mtime_ns for p in sweep.glob("*/*/metrics.json")}

    proc = _run(entry, args, tmp_path)  # the same command
    log = proc.stdout + proc.stderr
    assert [p.name for p in (tmp_path / "runs" / "pipeline-multirun").iterdir()] == [sweep.name]
    assert {p: p.stat().st_mtime_ns for p in done} == done, "finished stages were rerun"
    assert "[classify] finished earlier" in log and "resuming from" in log
    segment = json.loads((sweep / "1" / "segment" / "metrics.json").read_text())
    assert segment["steps"] == 15
    config = json.loads((sweep / "1" / "metrics.json").read_text())
    assert config["classify"]["model.p"] == 0.9


@pytest.mark.slow
def test_killed_run_with_gradient_accumulation_resumes_exactly(tmp_path, toy_root):
    """accumulate_grad_batches=2 (5 batches an epoch: 3 optimiser steps): killed in
    the second epoch and resumed, it ends with the weights of an uninterrupted run."""
    args = [
        *small_toy_overrides(toy_root),
        *TRAIN,
        "trainer.accumulate_grad_batches=2",
        "model.p=0.9",
    ]
    entry = "ficklenet.tasks.classify:main"
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _run(entry, [*args, f"hydra.run.dir={whole}"], tmp_path)
    _run(entry, [*args, f"hydra.run.dir={killed}"], tmp_path, kill_at="train:4")
    assert torch.load(killed / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 3
    proc = _run(entry, [*args, f"hydra.run.dir={killed}"], tmp_path)
    assert "resuming from" in proc.stdout + proc.stderr
    _assert_same_run(whole, killed, ("val/mAP", "train/loss", "steps"))
    assert json.loads((whole / "metrics.json").read_text())["steps"] == 9


def test_options_and_overrides_keep_their_order_when_overrides_are_added():
    from ficklenet.config.experiments import expand_experiment
    from ficklenet.config.sweeps import pin_sweep_dir, split_options

    argv = ["model.p=0.5", "--cfg", "job", "--info", "defaults", "seed=1", "--resolve"]
    assert split_options(argv) == (
        ["--cfg", "job", "--info", "defaults", "--resolve"],
        ["model.p=0.5", "seed=1"],
    )
    pinned = pin_sweep_dir(["-m", "model.p=0,1", "--package", "model", "seed=1"], "classify")
    assert pinned[:3] == ["-m", "--package", "model"]
    assert pinned[3:5] == ["model.p=0,1", "seed=1"] and pinned[5].startswith("hydra.sweep.dir=")
    expanded = expand_experiment("classify", ["--cfg", "job", "experiment=paper_vgg16", "seed=2"])
    assert expanded[:2] == ["--cfg", "job"] and expanded[-1] == "seed=2"
    assert "data=voc" in expanded and "optim=sgd" in expanded
