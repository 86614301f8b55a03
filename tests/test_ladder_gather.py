"""experiments/ladder/gather.py on a hand-written sweep folder, against numbers
worked out by hand."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

GATHER = Path(__file__).resolve().parents[1] / "experiments" / "ladder" / "gather.py"


@pytest.fixture(scope="module")
def gather_mod():
    spec = importlib.util.spec_from_file_location("ladder_gather", GATHER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _job(sweep: Path, num: int, overrides: list[str], miou: float, seed_miou: float | None):
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    metrics = {"evaluate": {"miou": miou}, "evaluate_crf": {"miou": miou + 0.02}}
    if seed_miou is not None:
        metrics["classify"] = {"val/mAP": 0.9}
        (job / "localize_val").mkdir()
        (job / "localize_val" / "metrics.json").write_text(
            json.dumps({"seed/miou": seed_miou, "cam/object_recall": 0.5})
        )
    (job / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    table5 = tmp_path / "table5"
    fickle = {0: 0.50, 1: 0.46, 2: 0.48}
    determ = {0: 0.44, 1: 0.45, 2: 0.43}
    num = 0
    for seed in (0, 1, 2):
        _job(table5, num, ["table5=fickle_0.9", f"seed={seed}"], fickle[seed], 0.6)
        _job(table5, num + 1, ["table5=deterministic", f"seed={seed}"], determ[seed], 0.55)
        num += 2
    for seed, value in ((0, 0.8), (1, 0.82)):
        _job(tmp_path / "supervised", seed, [f"seed={seed}", "stages=[segment]"], value, None)
    return tmp_path


def test_rows_means_and_standard_deviations(gather_mod, runs):
    result = gather_mod.gather(runs)
    assert set(result["rows"]) == {"fickle_0.9", "deterministic", "supervised"}
    cell = result["rows"]["fickle_0.9"]["summary"]["segmenter mIoU"]
    assert cell["n"] == 3 and cell["mean"] == pytest.approx(0.48)
    assert cell["std"] == pytest.approx(0.02)  # sqrt(((.02)^2 + (.02)^2 + 0) / 2)
    sup = result["rows"]["supervised"]["summary"]["segmenter mIoU + CRF"]
    assert sup["mean"] == pytest.approx(0.83) and sup["std"] == pytest.approx(math.sqrt(2e-4))
    assert result["rows"]["deterministic"]["summary"]["seed mIoU"]["mean"] == pytest.approx(0.55)


def test_paired_comparison_by_seed(gather_mod, runs):
    comp = gather_mod.gather(runs)["fickle_0.9_minus_deterministic"]["segmenter mIoU"]
    # differences by seed: +0.06, +0.01, +0.05 -> mean 0.04, std sqrt(0.0007)
    assert comp["differences"] == pytest.approx([0.06, 0.01, 0.05])
    assert comp["mean"] == pytest.approx(0.04) and comp["std"] == pytest.approx(math.sqrt(7e-4))
    t = 0.04 / (math.sqrt(7e-4) / math.sqrt(3))
    assert comp["t"] == pytest.approx(t)
    # Student's t with 2 degrees of freedom: P(|T| > t) = 1 - t / sqrt(2 + t^2).
    assert comp["p_t"] == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-6)
    # All three differences positive: of the 8 sign patterns only all-+ and all-- reach
    # a mean as large.
    assert comp["p_permutation"] == pytest.approx(2 / 8)


def test_markdown_and_plots(gather_mod, runs, tmp_path):
    result = gather_mod.gather(runs)
    text = gather_mod.markdown(result)
    assert "| fully supervised (ceiling) | 2 |" in text
    assert "48.0 ± 2.0" in text and "61.2" in text  # the paper's Table 5 beside ours
    gather_mod.plot(result, tmp_path / "t5.png")
    assert (tmp_path / "t5.png").stat().st_size > 1000


def test_student_t_against_closed_forms(gather_mod):
    p = gather_mod.student_t_two_sided
    for t in (0.3, 1.0, 2.5, 7.0):
        assert p(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(t), abs=1e-6)  # Cauchy
        assert p(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-6)
    assert p(0.0, 5) == pytest.approx(1.0)
