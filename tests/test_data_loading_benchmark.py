"""experiments/benchmarks/data_loading.py runs in-process on tiny settings."""

from __future__ import annotations

import importlib
import json

import pytest

pytestmark = pytest.mark.slow  # runs the data-loading benchmark


@pytest.fixture(scope="module")
def bench():
    return importlib.import_module("experiments.benchmarks.data_loading")


def test_data_loading_benchmark_tiny(bench, tmp_path, capsys):
    out = tmp_path / "result.json"
    batch, epochs = 8, 1
    # A toy set of 28 train_aug images written to a temp folder by the benchmark itself.
    argv = ["--images", "28", "--toy-size", "48", "--workers", "0", "--crop-size", "48"]
    argv += ["--batch-size", str(batch), "--epochs", str(epochs), "--warmup", "1"]
    result = bench.main([*argv, "--threads", "1", "--out", str(out)])

    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    printed = capsys.readouterr().out
    assert "| num_workers |" in printed and "threads=1" in printed
    assert result["machine"]["threads"] == 1 and len(result["machine"]["load_avg"]) == 3
    train_images = result["settings"]["train_images"]
    assert train_images == 28 and result["settings"]["data"] == "toy"
    (row,) = result["rows"]
    assert row["num_workers"] == 0 and row["pin_memory"] is False
    # drop_last: every full batch of each epoch, and the in-memory loop sees the same.
    seen = (train_images // batch) * batch * epochs
    assert row["images"] == row["memory_images"] == seen
    assert row["steps"] == train_images // batch * epochs
    for key in ("real_images_per_s", "memory_images_per_s", "real_seconds", "memory_seconds"):
        assert row[key] > 0
    assert row["real_images_per_s"] == pytest.approx(row["images"] / row["real_seconds"])
    assert row["ratio"] == pytest.approx(row["real_images_per_s"] / row["memory_images_per_s"])
    assert 0 <= row["data_wait_fraction"] <= 1 and row["startup_seconds"] >= 0
