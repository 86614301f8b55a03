"""Aggregation of localization maps and the seed rule, on hand-made maps."""

import numpy as np
import pytest
import torch

from ficklenet.data.classes import IGNORE_INDEX as U
from ficklenet.geometry import grid_to_image
from ficklenet.localization import (
    cam_labels,
    combine_maps,
    combine_scales,
    make_seeds,
    normalize_maps,
)

# Two classes on a 1×6 strip. Class 3 is already max-normalised; class 7 is not
# (max 1.2): normalised it reads [0, 0, .25, .0167, .0333, 1].
MAPS = np.array(
    [
        [[1.0, 0.5, 0.25, 0.1, 0.0, 0.3]],
        [[0.0, 0.0, 0.3, 0.02, 0.04, 1.2]],
    ],
    dtype=np.float32,
)
CLASSES = [3, 7]


def test_normalize_divides_each_map_by_its_max_and_keeps_zero_maps_zero():
    maps = torch.tensor([[[[0.0, 2.0], [1.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    out = normalize_maps(maps)
    torch.testing.assert_close(out[0, 0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(out[0, 1], torch.zeros(2, 2))
    assert not out.isnan().any()


def test_combine_maps_max_is_union_mean_is_mean():
    maps = torch.tensor([[[0.0, 1.0]], [[0.5, 0.2]]])
    torch.testing.assert_close(combine_maps(maps), torch.tensor([[0.5, 1.0]]))
    torch.testing.assert_close(combine_maps(maps, "mean"), torch.tensor([[0.25, 0.6]]))
    with pytest.raises(ValueError, match="aggregation"):
        combine_maps(maps, "union")


def test_combine_scales_resizes_unflips_and_combines():
    left = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # peak top-left
    small = torch.tensor([[[0.0, 0.0, 0.5]]])  # another scale: a 1×3 grid
    # The flipped pass saw the peak on the other side; un-flipping puts it back.
    # Stride 3: the 2×2 grid covers pixels 0 and 3 of a (4, 4) image.
    out = combine_scales(
        [left, left.flip(-1), small], (4, 4), 3, [(4, 4), (4, 4), (2, 7)], [False, True, False]
    )
    up = grid_to_image(left, (4, 4), 3)
    assert up[0, 0, 0] == 1 and up[0, 3, 3] == 0 and up[0, 1, 0] == pytest.approx(2 / 3)
    up_small = grid_to_image(small, (4, 4), 3, input_size=(2, 7))
    torch.testing.assert_close(out, torch.maximum(up, up_small))
    mean = combine_scales([left, left.flip(-1)], (4, 4), 3, flipped=[False, True], how="mean")
    torch.testing.assert_close(mean, up)
    with pytest.raises(ValueError, match="flip flags"):
        combine_scales([left], (4, 4), 3, flipped=[True, False])


def test_seeds_overlaps_and_unclaimed_pixels_are_unlabelled():
    seeds = make_seeds(MAPS, CLASSES, fg_threshold=0.2, bg_threshold=0.05)
    # p0, p1: class 3 alone; p2: 3 and 7 (both .25); p3: nobody (3 scores .1);
    # p4: every class < .05 → background; p5: 3 (.3) and 7 (1).
    assert seeds.dtype == np.uint8 and seeds.shape == (1, 6)
    assert seeds.tolist() == [[3, 3, U, U, 0, U]]


def test_seeds_thresholds_move_the_boundaries():
    assert make_seeds(MAPS, CLASSES, 0.2, 0.15).tolist() == [[3, 3, U, 0, 0, U]]
    # fg at .4: p2 loses both classes, p5 loses class 3 and keeps 7.
    assert make_seeds(MAPS, CLASSES, 0.4, 0.05).tolist() == [[3, 3, U, U, 0, 7]]
    # bg threshold above fg: p2 is claimed by 3, 7 and background.
    assert make_seeds(MAPS, CLASSES, 0.2, 0.3).tolist() == [[3, 3, U, 0, 0, U]]


def test_seeds_scale_free_and_resized_to_the_image():
    assert make_seeds(MAPS * 7.0, CLASSES).tolist() == make_seeds(MAPS, CLASSES).tolist()
    flat = np.ones((1, 2, 2), np.float32)
    seeds = make_seeds(flat, [5], image_shape=(4, 4))
    assert seeds.shape == (4, 4) and (seeds == 5).all()


def test_seeds_background_from_saliency():
    sal = np.array([[0.9, 0.05, 0.5, 0.5, 0.02, 0.01]], np.float32)
    # background claims p1, p4, p5 (saliency < .1); bg_threshold is not used.
    want = [[3, U, U, U, 0, U]]
    assert make_seeds(MAPS, CLASSES, saliency=sal, saliency_threshold=0.1).tolist() == want
    sal8 = np.round(sal * 255).astype(np.uint8)
    assert make_seeds(MAPS, CLASSES, saliency=sal8, saliency_threshold=0.1).tolist() == want
    with pytest.raises(ValueError, match="saliency is"):
        make_seeds(MAPS, CLASSES, saliency=np.zeros((2, 6), np.float32))


def test_seeds_without_classes_or_with_an_empty_map():
    assert make_seeds(np.zeros((0, 2, 3), np.float32), []).tolist() == [[0] * 3] * 2
    maps = np.stack([MAPS[0], np.zeros_like(MAPS[0])])
    # the all-zero class claims nothing; the rest is as for class 3 alone.
    assert make_seeds(maps, [3, 9]).tolist() == [[3, 3, 3, U, 0, 3]]


def test_seed_arguments_are_checked():
    with pytest.raises(ValueError, match="2 maps but 1 classes"):
        make_seeds(MAPS, [3])
    with pytest.raises(ValueError, match="palette labels"):
        make_seeds(MAPS, [0, 7])


def test_cam_labels_argmax_with_background_below_threshold():
    # ties (p2: .25 and .25) go to the first class.
    assert cam_labels(MAPS, CLASSES, 0.05).tolist() == [[3, 3, 3, 3, 0, 7]]
    assert cam_labels(MAPS, CLASSES, 0.2).tolist() == [[3, 3, 3, 0, 0, 7]]
    assert cam_labels(torch.from_numpy(MAPS), CLASSES, 0.6).tolist() == [[3, 0, 0, 0, 0, 7]]
    assert cam_labels(np.zeros((0, 1, 2), np.float32), [], 0.1).tolist() == [[0, 0]]
    labels = cam_labels(MAPS, CLASSES, 0.05, image_shape=(3, 12))
    assert labels.shape == (3, 12) and labels.dtype == np.uint8
