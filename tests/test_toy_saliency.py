"""The toy's saliency levels: what each writes, that the images never change, that
the failures happen at the rates stated, and that quality falls level by level."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from ficklenet.choices import SaliencyQuality
from ficklenet.data.toy import TOY_MARKER, toy_settings, write_toy_voc
from ficklenet.data.toy_saliency import SALIENCY_LEVELS, SaliencyLevel, render_saliency
from ficklenet.data.voc import VOCReader
from ficklenet.metrics import SaliencyScore

SMALL = dict(n_train_aug=40, n_train=20, n_val=20, size=64)
# sha256 over the images, annotations, masks and split lists of write_toy_voc(seed=0,
# **SMALL) as generator version 3 wrote them (before saliency levels existed):
# the levels must leave every one of those files as it was.
V3_DIGEST = "1005e3bb3a1127e4d49cefa60dcc7f2855278a19b3c55734b282edc8df4a171c"


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for d in (
        "JPEGImages",
        "Annotations",
        "SegmentationClass",
        "SegmentationClassAug",
        "ImageSets",
    ):
        for f in sorted((root / d).rglob("*")):
            if f.is_file():
                h.update(str(f.relative_to(root)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def levels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("levels")
    return {
        q.value: write_toy_voc(base / q.value, seed=0, saliency=q.value, **SMALL)
        for q in SaliencyQuality
    }


def test_images_masks_and_labels_identical_at_every_level_and_to_version_3(levels):
    for root in levels.values():
        assert _digest(root) == V3_DIGEST


def test_none_writes_no_maps_and_the_others_do(levels):
    assert not (levels["none"] / "Saliency").exists()
    for name, root in levels.items():
        if name != "none":
            assert len(list((root / "Saliency").glob("*.png"))) == 60


def test_perfect_is_the_object_mask(levels):
    r = VOCReader(levels["perfect"], "val", saliency_dir="Saliency")
    for image_id in r.ids:
        sal, mask = r.saliency(image_id), r.mask(image_id)
        assert set(np.unique(sal)) <= {0.0, 1.0}
        assert (sal[(mask > 0) & (mask < 255)] == 1).all()
        assert (sal[mask == 0] == 0).all()


def test_quality_falls_level_by_level(levels):
    scores = {}
    for name in ("perfect", "good", "realistic", "poor"):
        r = VOCReader(levels[name], "train_aug", saliency_dir="Saliency")
        score = SaliencyScore()
        for image_id in r.ids:
            score.update(r.saliency(image_id), r.mask(image_id))
        scores[name] = score.result()
    assert scores["perfect"].max_f_beta == 1.0 and scores["perfect"].mae == 0.0
    f = [scores[n].max_f_beta for n in ("perfect", "good", "realistic", "poor")]
    mae = [scores[n].mae for n in ("perfect", "good", "realistic", "poor")]
    assert f == sorted(f, reverse=True) and mae == sorted(mae)


def _one_object(size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return (yy - 32) ** 2 / 15**2 + (xx - 32) ** 2 / 10**2 <= 1


def test_failures_happen_at_the_stated_rates():
    """Each failure, alone, over many images of one object, at its stated rate."""
    body = _one_object()
    n = 600

    def maps(level: SaliencyLevel) -> list[np.ndarray]:
        rng = np.random.default_rng(0)
        return [render_saliency(level, rng, [body]).astype(float) / 255 for _ in range(n)]

    missed = maps(SaliencyLevel(SaliencyQuality.realistic, miss=0.3, missed_level=0.3, low=1.0))
    weak = np.mean([m[body].mean() <= 0.3 for m in missed])
    assert abs(weak - 0.3) < 4 * np.sqrt(0.3 * 0.7 / n)
    assert all(m[body].mean() == 1.0 or m[body].mean() <= 0.3 for m in missed)

    partial = maps(SaliencyLevel(SaliencyQuality.realistic, partial=0.4, low=1.0))
    faded = np.mean([(m[body] < 0.5).mean() > 0.2 for m in partial])
    assert abs(faded - 0.4) < 4 * np.sqrt(0.4 * 0.6 / n)
    # Faded on one side only: the salient rest is still there.
    assert all((m[body] > 0.5).mean() > 0.03 for m in partial)

    uneven = maps(SaliencyLevel(SaliencyQuality.realistic, low=0.5))
    level = np.array([m[body].mean() for m in uneven])
    assert level.min() >= 0.5 and level.max() <= 1.0 and abs(level.mean() - 0.75) < 0.02

    clutter = maps(SaliencyLevel(SaliencyQuality.realistic, clutter=1.5))
    fires = np.array([(m[~body] > 0.35).sum() > 0 for m in clutter])
    # At least one of six candidate blobs kept with probability 1.5/6 each.
    expected = 1 - (1 - 1.5 / 6) ** 6
    assert abs(fires.mean() - expected) < 4 * np.sqrt(expected * (1 - expected) / n)


def test_blur_bleeds_edges_and_noise_is_zero_mean():
    body = _one_object()
    rng = np.random.default_rng(1)
    sharp = render_saliency(SALIENCY_LEVELS[SaliencyQuality.perfect], rng, [body])
    blurred = render_saliency(SaliencyLevel(SaliencyQuality.realistic, blur=1 / 16), rng, [body])
    outside = ~body
    assert sharp[outside].max() == 0 and blurred[outside].max() > 50  # bled outside
    noisy = render_saliency(SaliencyLevel(SaliencyQuality.realistic, noise=0.1), rng, [body])
    inside = noisy[body].astype(float) / 255
    assert abs(inside.mean() - 0.96) < 0.02  # noise clipped at 1: a little below it
    assert 0.05 < inside.std() < 0.1


def test_levels_share_their_draws_so_a_harsher_level_keeps_a_milder_ones_misses():
    body = _one_object()
    good, realistic = (
        SALIENCY_LEVELS[SaliencyQuality.good],
        SALIENCY_LEVELS[SaliencyQuality.realistic],
    )
    for seed in range(200):
        a = render_saliency(good, np.random.default_rng(seed), [body]).astype(float) / 255
        b = render_saliency(realistic, np.random.default_rng(seed), [body]).astype(float) / 255
        if a[body].mean() < 0.25:  # missed at the milder level
            assert b[body].mean() < 0.3


def test_versions_up_to_3_recorded_saliency_as_a_flag(tmp_path: Path):
    root = write_toy_voc(tmp_path / "toy", seed=0, saliency="none", **SMALL)
    meta = json.loads((root / TOY_MARKER).read_text())
    meta["params"]["saliency"] = True
    (root / TOY_MARKER).write_text(json.dumps(meta))
    assert toy_settings(root)["params"]["saliency"] == "realistic"


def test_unknown_level_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="perfect"):
        write_toy_voc(tmp_path / "toy", saliency="excellent", **SMALL)
