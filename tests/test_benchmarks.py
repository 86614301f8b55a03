"""The performance suite runs on a CPU at small sizes, so CI keeps it alive (the GPU
figures come from the same script with --device cuda --size voc)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import ENV, run_ok

pytestmark = pytest.mark.slow  # end to end: runs experiments/benchmarks/suite.py

SUITE = Path(__file__).resolve().parents[1] / "experiments" / "benchmarks" / "suite.py"


def test_the_suite_runs_and_reports_every_figure(tmp_path):
    out = tmp_path / "suite.json"
    proc = run_ok(
        [
            sys.executable,
            str(SUITE),
            "--device",
            "cpu",
            "--size",
            "small",
            "--repeats",
            "1",
            "--crf-workers",
            "0",
            "--threads",
            "1",
            "--out",
            str(out),
        ],
        tmp_path,
        ENV,
    )
    figures = {row["figure"]: row for row in json.loads(out.read_text())["rows"]}
    for kind in ("one-pass CAM", "N=20 gradcam", "N=20 grad_x_act"):
        for precision in ("fp32", "mixed"):
            assert f"localization, {kind}, {precision}" in figures
    assert figures["localization, N=20 gradcam, fp32"]["vs_cam"] > 0
    for name, row in figures.items():
        assert row["images_per_s"] > 0 and row["peak_mb"] > 0, name
    mixed = [r for n, r in figures.items() if "mixed" in n]
    assert len(mixed) == 6 and all(r["speed_up_vs_fp32"] > 0 for r in mixed)
    assert 0 < figures["DSRG segmenter step, float32"]["crf_share"] < 1
    assert 0 < figures["DSRG segmenter step, CRF on the device, float32"]["crf_share"] < 1
    assert "| figure |" in proc.stdout and "$ python" in proc.stdout
