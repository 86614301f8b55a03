"""The same masks' maps under both formulas: the variation measure and its figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ficklenet.inspection import FormulaMaps, plot_formula_maps  # noqa: E402


def test_variation_is_the_mean_std_over_masks():
    same = np.ones((4, 1, 3, 3), np.float32)
    moving = np.zeros((2, 1, 1, 2), np.float32)
    moving[0, 0, 0, 0] = 1.0  # cell 0: values (1, 0) -> std 0.5; cell 1: (0, 0) -> 0
    fm = FormulaMaps(
        image_id="x",
        image=np.zeros((16, 16, 3), np.uint8),
        classes=[3],
        maps={"gradcam": same, "grad_x_act": moving},
        aggregate={"gradcam": same[0], "grad_x_act": moving.max(0)},
        map_input_size=(16, 16),
        map_stride=8,
    )
    assert fm.variation() == {"gradcam": 0.0, "grad_x_act": pytest.approx(0.25)}
    fig = plot_formula_maps(fm)
    assert len(fig.axes) == 2 * (4 + 1)  # a row per formula: N maps and the union
