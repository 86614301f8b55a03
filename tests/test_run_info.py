"""run_info.json keeps the history of the attempts that ran in a run directory."""

from __future__ import annotations

from ficklenet.files import read_json, write_json
from ficklenet.tasks.run_dir import finish_attempts, record_attempt


def test_attempts_are_kept_with_their_outcomes(tmp_path):
    # A run_info.json written before attempts were kept becomes the first attempt.
    write_json(tmp_path / "run_info.json", {"command": "ficklenet-classify seed=0", "host": "a"})
    record_attempt(tmp_path, {"command": "ficklenet-classify seed=0", "host": "b"})
    finish_attempts("failed: KeyboardInterrupt")
    latest = {"command": "ficklenet-classify seed=0 trainer.devices=2", "host": "c"}
    record_attempt(tmp_path, latest)
    info = read_json(tmp_path / "run_info.json")
    assert info["host"] == "c"  # the top level describes the latest attempt
    assert [a["outcome"] for a in info["attempts"]] == [
        "unknown",
        "failed: KeyboardInterrupt",
        "running",  # not finished yet (a kill would leave it so)
    ]
    assert info["attempts"][2]["command"].endswith("trainer.devices=2")
    finish_attempts("finished", under=tmp_path.parent / "elsewhere")  # not this directory
    assert read_json(tmp_path / "run_info.json")["attempts"][2]["outcome"] == "running"
    finish_attempts("finished", under=tmp_path)
    assert read_json(tmp_path / "run_info.json")["attempts"][2]["outcome"] == "finished"
    finish_attempts("failed: again")  # closed attempts stay as they are
    assert read_json(tmp_path / "run_info.json")["attempts"][2]["outcome"] == "finished"
