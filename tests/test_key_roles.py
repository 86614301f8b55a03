"""Key roles stated on the schema's fields: the trainer keys the pipeline shares, the
keys outside a run's record, and the training budget only training stages record."""

from __future__ import annotations

import json

import pytest

from ficklenet.config import compose_app
from ficklenet.config import schema as S
from ficklenet.tasks.run_dir import open_run_dir
from ficklenet.tasks.run_record import DependsOn, compare, unrecorded


def test_shared_trainer_keys_are_the_pipelines_list():
    # The list ficklenet-pipeline shared key by key before roles were on the fields.
    before = {
        "max_epochs", "max_steps", "channels_last", "tf32", "benchmark", "compile",
        "accelerator", "devices", "strategy", "num_nodes", "precision", "deterministic",
        "sync_batchnorm", "enable_progress_bar", "fast_dev_run", "limit_train_batches",
        "limit_val_batches",
    }  # fmt: skip
    added = {"requeue_signal", "timeout_s"}  # since: SLURM preemption, dead ranks
    assert set(S.keys_with_role(S.TrainerConfig, S.SHARED)) == before | added
    cfg = compose_app("pipeline", ["trainer.max_epochs=3", "trainer.tf32=false"])
    for stage in ("classify", "localize", "segment", "evaluate", "evaluate_crf"):
        assert cfg[stage].trainer.max_epochs == 3 and cfg[stage].trainer.tf32 is False
        assert cfg[stage].trainer.log_every_n_steps == 10  # not shared: the stage's own


def test_unrecorded_keys_follow_the_roles():
    # Where and how, as listed by hand before roles were on the fields.
    where_and_how = {
        "ckpt_path", "name", "pipeline", "logger", "run_info", "progress", "data.root",
        "data.num_workers", "data.pin_memory", "data.make_toy_if_missing",
        "trainer.accelerator", "trainer.devices", "trainer.num_nodes", "trainer.strategy",
        "trainer.sync_batchnorm", "trainer.enable_progress_bar", "trainer.profiler",
        "segmenter.crf_workers", "crf_workers", "num_workers", "localize.overwrite",
        "localize.overlays", "overlays", "save_predictions",
        "trainer.requeue_signal", "trainer.timeout_s",  # added since (issue 22)
    }  # fmt: skip
    apps = ("classify", "localize", "segment", "evaluate", "predict")
    union = set().union(*(unrecorded(app) for app in apps))
    training = set(S.keys_with_role(S.TrainerConfig, S.TRAINING))
    assert union - {f"trainer.{k}" for k in training} == where_and_how
    assert "trainer.max_epochs" not in unrecorded("classify")  # a training stage records it
    assert "trainer.max_epochs" in unrecorded("localize")  # localize's maps do not depend on it
    assert "trainer.precision" not in unrecorded("localize")  # its maps do


def test_a_record_from_before_a_key_left_it_still_resumes(tmp_path):
    """A localize record that still holds the training budget (written before it
    left the record) is the same run; a recorded key that differs is refused."""
    cfg = compose_app("localize", ["classifier.ckpt=unused"])
    depends_on = DependsOn()
    run = tmp_path / "run"
    record, _, _ = compare(run, "localize", cfg, depends_on)
    assert "trainer.max_epochs" not in record["settings"]
    old = {**record, "settings": {**record["settings"], "trainer.max_epochs": 10}}
    run.mkdir()
    (run / "metrics.json").write_text("{}")
    (run / "run_record.json").write_text(json.dumps(old))
    with open_run_dir("localize", cfg, depends_on, run, writer=True) as opened:
        assert opened.finished == {}
    other = compose_app("localize", ["classifier.ckpt=unused", "localize.n=7"])
    refused = pytest.raises(ValueError, match="settings.localize.n: 200 -> 7")
    with refused, open_run_dir("localize", other, depends_on, run, writer=True):
        pass
