"""ficklenet.metric_names: the one table of the figures the stages write to metrics.json."""

from __future__ import annotations

import json

import pytest

from ficklenet import metric_names
from ficklenet.analysis.runs import ALL_FIGURES
from ficklenet.metric_names import STAGE_FIGURES
from ficklenet.tasks.pipeline import results_table, run_pipeline
from tests.conftest import compose_config

#: The stage whose figures each run folder of a pipeline (or of a study) holds.
KIND = {"localize_val": "localize", "evaluate_crf": "evaluate"}


def figures_written(metrics: dict) -> set[str]:
    """The keys of a stage's metrics.json that are figures (the rest describe the run:
    stage, checkpoint, images, epochs, settings)."""
    return {k for k in metrics if "/" in k or k.startswith(("miou", "per_class_iou"))}


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, toy_root) -> dict:
    """Every stage once, on the small toy set, in one tiny pipeline run."""
    run = tmp_path_factory.mktemp("names") / "pipe"
    cfg = compose_config(
        "pipeline",
        [
            f"data.root={toy_root}",
            "data.make_toy_if_missing=false",
            "data.crop_size=64",
            "data.num_workers=0",
            "trainer.enable_progress_bar=false",
            "classify.trainer.max_epochs=1",
            "localize.localize.n=2",
            "localize.localize.overlays=0",
            "segment.trainer.max_epochs=1",
            "evaluate.overlays=0",
            "evaluate_crf.overlays=0",
            "evaluate_crf.crf_workers=0",
        ],
    )
    run_pipeline(cfg, run)
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.slow
def test_the_table_is_what_the_stages_write(pipeline_run) -> None:
    assert set(pipeline_run) == {"classify", "localize", "segment", "evaluate", "evaluate_crf"}
    for stage, metrics in pipeline_run.items():
        table = set(STAGE_FIGURES[KIND.get(stage, stage)])
        written = figures_written(metrics)
        assert written <= table, (stage, written - table)
        if stage == "evaluate":  # no CRF: its figures are absent
            table -= {metric_names.MIOU_CRF, metric_names.PER_CLASS_IOU_CRF}
        assert table <= written, (stage, table - written)


@pytest.mark.slow
def test_every_reader_reads_keys_of_the_table(pipeline_run) -> None:
    """The pipeline's report and the studies' figures find every one of their keys."""
    assert all(value != "-" for _, value in results_table(pipeline_run))
    for name, stage, key in ALL_FIGURES:
        assert key in STAGE_FIGURES[KIND.get(stage, stage)], name
        if stage in pipeline_run:
            assert pipeline_run[stage].get(key) is not None, name


def test_the_names_are_the_documented_ones() -> None:
    """The keys runs on disk and docs/design.md's contracts use."""
    assert metric_names.VAL_MAP == "val/mAP" and metric_names.VAL_MIOU == "val/miou"
    assert metric_names.SEED.miou == "seed/miou"
    assert metric_names.GROWN_SEED.labelled_fraction == "grown_seed/labelled_fraction"
    assert metric_names.TRAIN_MIOU == "train/miou" and metric_names.MIOU == "miou"
