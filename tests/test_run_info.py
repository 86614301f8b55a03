"""run_info.json keeps the history of the attempts that ran in a run directory."""

from __future__ import annotations

from ficklenet.files import read_json, write_json
from ficklenet.tasks.run_dir import finish_attempt, record_attempt


def test_attempts_are_kept_with_their_outcomes(tmp_path):
    # A run_info.json written before attempts were kept becomes the first attempt.
    write_json(tmp_path / "run_info.json", {"command": "ficklenet-classify seed=0", "host": "a"})
    first = record_attempt(tmp_path, {"command": "ficklenet-classify seed=0", "host": "b"})
    finish_attempt(tmp_path, first, "failed: KeyboardInterrupt")
    latest = {"command": "ficklenet-classify seed=0 trainer.devices=2", "host": "c"}
    started = record_attempt(tmp_path, latest)
    info = read_json(tmp_path / "run_info.json")
    assert info["host"] == "c"  # the top level describes the latest attempt
    assert [a["outcome"] for a in info["attempts"]] == [
        "unknown",
        "failed: KeyboardInterrupt",
        "running",  # not finished yet (a kill would leave it so)
    ]
    assert info["attempts"][2]["command"].endswith("trainer.devices=2")
    finish_attempt(tmp_path, first, "finished")  # another attempt: closed already
    assert read_json(tmp_path / "run_info.json")["attempts"][2]["outcome"] == "running"
    finish_attempt(tmp_path, started, "finished")
    assert read_json(tmp_path / "run_info.json")["attempts"][2]["outcome"] == "finished"
    finish_attempt(tmp_path, started, "failed: again")  # closed attempts stay as they are
    assert read_json(tmp_path / "run_info.json")["attempts"][2]["outcome"] == "finished"


def test_a_sweep_job_is_named_by_what_it_sweeps(tmp_path):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from ficklenet.config import compose_app
    from ficklenet.tasks.run_dir import run_name

    cfg = compose_app(
        "classify", ["model.p=0.5", f"data.root={tmp_path}", "seed=2"], return_hydra_config=True
    )
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.job.override_dirname = "model.p=0.5,seed=2"  # as Hydra sets it in a job
    HydraConfig.instance().set_config(cfg)
    try:
        assert run_name(cfg, tmp_path / "3") == "model.p=0.5,seed=2"  # not the job number
        cfg.name = "mine"
        assert run_name(cfg, tmp_path / "3") == "mine"
    finally:
        HydraConfig.instance().cfg = None
    assert run_name(compose_app("classify"), tmp_path / "3") == "3"  # outside a Hydra job
