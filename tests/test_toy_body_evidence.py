"""The toy's premise settings: parts erased, and class evidence in the bodies. Each
changes exactly the pixels it says, and nothing else in the dataset."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from ficklenet.data import toy as toy_mod
from ficklenet.data.toy import (
    BODY_TINT_LEVELS,
    TOY_MARKER,
    body_style,
    body_tint,
    toy_settings,
    write_toy_voc,
)

SMALL = dict(n_train_aug=40, n_train=20, n_val=20, size=64)


def _render(index: int, **kwargs) -> toy_mod._Sample:
    rng = np.random.default_rng([0, 2, index])
    return toy_mod._render(rng, 96, 1 + index % 20, **kwargs)


def test_erased_parts_are_painted_as_their_bodies():
    for index in range(6):
        shown, erased = _render(index), _render(index, parts=False)
        parts = np.zeros(shown.mask.shape, dtype=bool)
        for obj in shown.objects:
            parts |= obj.part
        differs = (shown.image != erased.image).any(axis=2)
        assert parts.any() and differs.any()
        assert not (differs & ~parts).any()  # nothing but the parts changed
        np.testing.assert_array_equal(shown.mask, erased.mask)
        assert shown.boxes == erased.boxes and shown.jpeg_quality == erased.jpeg_quality
        # Where a part was, the erased image has the body's texture: far from the part's
        # saturated colour, and on average inside the range of the body's other pixels.
        for obj in shown.objects:
            body = erased.image[obj.body & ~obj.part].reshape(-1, 3).astype(float)
            where = erased.image[obj.part].reshape(-1, 3).astype(float)
            colour = np.asarray(toy_mod.part_style(obj.cls)[1], dtype=float)
            assert np.linalg.norm(where - colour, axis=1).mean() > 80
            mean = where.mean(axis=0)
            assert (mean >= body.min(axis=0)).all() and (mean <= body.max(axis=0)).all()


def test_body_evidence_shifts_each_body_by_its_class_tint():
    for index in range(6):
        tints = [7.0, 11.0, 13.0, 17.0]
        plain, tinted = _render(index), _render(index, tints=tints)
        np.testing.assert_array_equal(plain.mask, tinted.mask)
        for k, obj in enumerate(plain.objects):
            visible = obj.body & ~obj.part & (plain.mask == obj.cls)
            # Later objects occlude earlier ones: count a pixel where this body is on top.
            for later in plain.objects[k + 1 :]:
                visible &= ~later.body
            a = plain.image[visible].astype(float)
            b = tinted.image[visible].astype(float)
            unclipped = ((a > 0) & (a < 255) & (b > 0) & (b < 255)).all(axis=1)
            shift = (b - a)[unclipped].mean(axis=0)
            # The same noise and texture on both: the shift is the tint, to rounding.
            np.testing.assert_allclose(shift, tints[k] * body_tint(obj.cls), atol=0.6)
        bare = np.zeros(plain.mask.shape, dtype=bool)
        for obj in plain.objects:
            bare |= obj.body
        np.testing.assert_array_equal(plain.image[~bare], tinted.image[~bare])


def test_tints_are_zero_mean_unit_hues_distinct_within_each_texture_group():
    for c in range(1, 21):
        d = body_tint(c)
        assert abs(d.sum()) < 1e-9 and abs(np.linalg.norm(d) - 1) < 1e-9
    for style in range(5):
        group = [c for c in range(1, 21) if body_style(c) == style]
        assert len(group) == 4
        dots = [float(body_tint(a) @ body_tint(b)) for a, b in combinations(group, 2)]
        # Four hues 90 degrees apart: neighbours orthogonal, opposites opposite.
        assert sorted(round(x, 9) for x in dots) == [-1, -1, 0, 0, 0, 0]


def test_tint_sizes_follow_the_setting():
    rng = np.random.default_rng(5)
    assert toy_mod._tints(rng, 0.0) == [0.0] * 4
    sizes = toy_mod._tints(np.random.default_rng(5), 2.0)
    assert all(2 * BODY_TINT_LEVELS * 0.5 <= s <= 2 * BODY_TINT_LEVELS * 1.5 for s in sizes)


def test_written_and_recorded(tmp_path: Path):
    plain = write_toy_voc(tmp_path / "plain", **SMALL)
    erased = write_toy_voc(tmp_path / "erased", part="erased", **SMALL)
    tinted = write_toy_voc(tmp_path / "tinted", body_evidence=0.5, **SMALL)
    assert toy_settings(erased)["params"]["part"] == "erased"
    assert toy_settings(tinted)["params"]["body_evidence"] == 0.5
    for other in (erased, tinted):
        for d in ("SegmentationClassAug", "Saliency", "Annotations"):
            for f in sorted((plain / d).iterdir()):
                assert f.read_bytes() == (other / d / f.name).read_bytes(), f
    with pytest.raises(ValueError, match="part"):
        write_toy_voc(tmp_path / "bad", part="hidden", **SMALL)
    with pytest.raises(ValueError, match="body_evidence"):
        write_toy_voc(tmp_path / "bad", body_evidence=-1, **SMALL)


def test_a_marker_from_before_the_settings_reads_as_their_defaults(tmp_path: Path):
    root = write_toy_voc(tmp_path / "toy", **SMALL)
    meta = json.loads((root / TOY_MARKER).read_text())
    del meta["params"]["part"], meta["params"]["body_evidence"]
    (root / TOY_MARKER).write_text(json.dumps(meta))
    stamp = (root / TOY_MARKER).stat().st_mtime_ns
    assert toy_settings(root)["params"]["part"] == "shown"
    write_toy_voc(root, **SMALL)  # the same toy: nothing rewritten
    assert (root / TOY_MARKER).stat().st_mtime_ns == stamp
