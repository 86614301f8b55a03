"""Trainer settings users reach for: gradient accumulation (each micro-batch draws
its own masks), early stopping, val_check_interval, profiler."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pytorch_lightning.profilers import SimpleProfiler

from ficklenet.lit.trainer import build_trainer, step_seed
from ficklenet.models import fickle
from ficklenet.tasks.classify import run_classify
from tests.conftest import compose_config, small_toy_overrides


def test_step_seed_without_accumulation_is_the_step_seed_it_always_was():
    state = np.random.SeedSequence([5, 3, 1]).generate_state(2, np.uint32)
    assert (
        step_seed(5, 3, 1)
        == step_seed(5, 3, 1, micro=0)
        == int(state[0]) << 31 | int(state[1]) >> 1
    )
    assert len({step_seed(5, 3, 1, m) for m in range(4)}) == 4


@pytest.mark.slow
def test_micro_batches_of_one_step_draw_their_own_masks(tmp_path, toy_root, monkeypatch):
    """accumulate_grad_batches=2 with two batches: one optimiser step, two forward
    passes, two different FickleNet mask seeds (the same seed twice before)."""
    drawn = []
    original = fickle._draw_seed
    monkeypatch.setattr(fickle, "_draw_seed", lambda: drawn.append(original()) or drawn[-1])
    cfg = compose_config(
        "classify",
        [
            *small_toy_overrides(toy_root),
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "trainer.accumulate_grad_batches=2",
            "model.p=0.9",
        ],
    )
    run_classify(cfg, run_dir=tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 1
    assert len(drawn) == 2 and drawn[0] != drawn[1], drawn


@pytest.mark.slow
def test_early_stopping_ends_training_when_the_metric_stalls(tmp_path, toy_root):
    cfg = compose_config(
        "classify",
        [
            *small_toy_overrides(toy_root),
            "trainer.max_epochs=6",
            "trainer.limit_train_batches=1",
            "trainer.limit_val_batches=1",
            "callbacks=early_stopping",
            "callbacks.early_stopping.patience=1",
            "callbacks.early_stopping.min_delta=1.0",  # no epoch can improve by 1
        ],
    )
    run_classify(cfg, run_dir=tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 2, "stopped after the second validation"


@pytest.mark.parametrize(
    "overrides,check",
    [
        (["trainer.val_check_interval=2"], lambda t: t.val_check_interval == 2),
        (["trainer.profiler=simple"], lambda t: isinstance(t.profiler, SimpleProfiler)),
        (["trainer.accumulate_grad_batches=4"], lambda t: t.accumulate_grad_batches == 4),
        (["trainer.gradient_clip_val=1.5"], lambda t: t.gradient_clip_val == 1.5),
    ],
)
def test_trainer_keys_reach_the_lightning_trainer(tmp_path, overrides, check):
    cfg = compose_config("segment", overrides)
    trainer = build_trainer(cfg.trainer, tmp_path, None, monitor="val/miou")
    assert check(trainer)
