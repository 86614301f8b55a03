"""notebooks/inspect_run.ipynb runs end to end on a tiny pipeline run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from tests.test_pipeline import pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "inspect_run.ipynb"


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_inspect_run_notebook_executes(tmp_path, toy_root, monkeypatch):
    run = tmp_path / "pipe"
    pipeline(run, toy_root, "stages=[classify,localize,segment,evaluate]")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel inherits this environment: the run to inspect, one thread, no GUI.
    monkeypatch.setenv("FICKLENET_RUN_DIR", str(run))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # "python3" is the kernelspec ipykernel ships with the running environment.
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()  # raises CellExecutionError on any cell error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 1
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "segmenter val mIoU, no CRF" in text
    assert "mask-to-mask variation" in text and "grad_x_act" in text
    assert len(figures) >= 2  # the inspection and the two formulas' maps
    assert os.fspath(run) in text
