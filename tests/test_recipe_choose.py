"""experiments/recipe/choose.py: the grids a run is scored over (the module's, or the
command line's)."""

from __future__ import annotations

import importlib

import pytest
from omegaconf import OmegaConf

from ficklenet.localization.tuning import FG_GRID


@pytest.mark.parametrize(
    ("fg", "bg", "want_fg"), [(None, None, list(FG_GRID)), ([0.01, 0.02], [0.03], [0.01, 0.02])]
)
def test_score_run_scores_over_the_grids_asked(monkeypatch, tmp_path, toy_root, fg, bg, want_fg):
    choose = importlib.import_module("experiments.recipe.choose")
    seen = {}

    def grid_scores(maps_dir, reader, saliency, fg_grid, bg_grid):
        seen.update(maps=maps_dir, fg=list(fg_grid), bg=bg_grid, split=reader.split)
        return {(fg_grid[0], 0.5): {"coverage_miou": 0.25}}

    monkeypatch.setattr(choose, "grid_scores", grid_scores)
    OmegaConf.save({"data": {"root": str(toy_root)}}, tmp_path / "config.yaml")
    run = {"row": "deterministic", "formula": "gradcam", "seed": 0, "dir": str(tmp_path)}
    rows = choose.score_run(run, "train", None, fg, bg)
    assert seen == {"maps": tmp_path / "maps", "fg": want_fg, "bg": bg, "split": "train"}
    assert rows == [
        {
            **{k: run[k] for k in ("row", "formula", "seed")},
            "fg": want_fg[0],
            "bg": 0.5,
            "coverage_miou": 0.25,
        }
    ]
