"""The toy VOC writer: determinism, caching, and that VOCReader reads it like VOC."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ficklenet.data.classes import NUM_CLASSES
from ficklenet.data.toy import (
    TOY_MARKER,
    _render,
    body_style,
    is_toy_voc,
    part_style,
    write_toy_voc,
)
from ficklenet.data.voc import VOCReader

SMALL = dict(n_train_aug=40, n_train=20, n_val=20, size=64)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_voc(tmp_path_factory.mktemp("toy") / "VOC2012", seed=0, **SMALL)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_byte_identical_other_seed_differs(tmp_path: Path):
    a = _files(write_toy_voc(tmp_path / "a", seed=3, **SMALL))
    b = _files(write_toy_voc(tmp_path / "b", seed=3, **SMALL))
    c = _files(write_toy_voc(tmp_path / "c", seed=4, **SMALL))
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    differing = [k for k in a if k.startswith("JPEGImages") and a[k] != c.get(k)]
    assert len(differing) > 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no tmp dirs left


def test_layout_and_splits(toy: Path):
    assert is_toy_voc(toy)
    sets = toy / "ImageSets/Segmentation"
    ids = {s: (sets / f"{s}.txt").read_text().split() for s in ("train_aug", "train", "val")}
    assert [len(ids[s]) for s in ("train_aug", "train", "val")] == [40, 20, 20]
    assert set(ids["train"]) <= set(ids["train_aug"])
    assert not set(ids["val"]) & set(ids["train_aug"])
    assert (sets / "trainval.txt").read_text().split() == ids["train"] + ids["val"]
    with_palette = {p.stem for p in (toy / "SegmentationClass").glob("*.png")}
    assert with_palette == set(ids["train"]) | set(ids["val"])
    with_aug = {p.stem for p in (toy / "SegmentationClassAug").glob("*.png")}
    assert with_aug == set(ids["train_aug"]) | set(ids["val"])
    meta = json.loads((toy / TOY_MARKER).read_text())
    assert meta["params"]["seed"] == 0 and meta["params"]["size"] == 64


@pytest.mark.parametrize(
    "split, mask_dir, mode",
    [
        ("train", "SegmentationClass", "P"),
        ("val", "SegmentationClass", "P"),
        ("train_aug", "SegmentationClassAug", "L"),
        ("val", "SegmentationClassAug", "L"),
    ],
)
def test_read_back_with_both_mask_kinds(toy: Path, split: str, mask_dir: str, mode: str):
    r = VOCReader(toy, split, mask_dirs=(mask_dir,))
    strict = VOCReader(toy, split, mask_dirs=(mask_dir,), include_difficult=False)
    from_mask = VOCReader(toy, split, mask_dirs=(mask_dir,), labels_from="mask")
    for i in r.ids:
        assert Image.open(toy / mask_dir / f"{i}.png").mode == mode
        img, mask = r.image(i), r.mask(i)
        assert img.shape == (64, 64, 3) and mask.shape == (64, 64)
        assert 1 <= len(r.labels(i)) <= 4
        # Difficult objects are void in the masks, as in VOC.
        np.testing.assert_array_equal(strict.labels(i), from_mask.labels(i))
        assert set(strict.labels(i)) <= set(r.labels(i))


def test_every_class_in_every_split(toy: Path):
    for split, at_least in (("train_aug", 2), ("train", 1), ("val", 1)):
        r = VOCReader(toy, split)
        counts = np.sum([r.label_vector(i) for i in r.ids], axis=0)
        assert counts.shape == (NUM_CLASSES,) and counts.min() >= at_least, split


def test_masks_have_void_border_between_regions(toy: Path):
    r = VOCReader(toy, "train")
    for i in r.ids:
        m = r.mask(i)
        assert (m == 255).any()
        for a, b in ((m[:, 1:], m[:, :-1]), (m[1:], m[:-1])):
            touching = (a != b) & (a != 255) & (b != 255)
            assert not touching.any(), f"{i}: two labels touch without a void border"


def test_mask_covers_whole_object_not_just_part():
    size = 96
    for k in range(30):
        sample = _render(np.random.default_rng([7, k]), size, primary=k % NUM_CLASSES + 1)
        for obj in sample.objects:
            assert not (obj.part & ~obj.body).any()
            # Small "difficult" objects are void in the masks; their parts may be larger.
            assert obj.difficult or obj.body.sum() >= 6 * obj.part.sum()
        # And in the mask: a class's region is mostly body, not part colour.
        for obj in sample.objects:
            if obj.difficult:
                continue
            region = sample.mask == obj.cls
            assert region.sum() >= 4 * (obj.part & region).sum()


def test_part_is_a_feature_cell_wide_and_at_one_end_of_the_body():
    """At 96 pixels a part spans at least one cell of a stride-8 map, and it sits
    towards an end of its body (a head), not at the centre."""
    size = 96
    for k in range(30):
        sample = _render(np.random.default_rng([8, k]), size, primary=k % NUM_CLASSES + 1)
        for obj in (o for o in sample.objects if not o.difficult):
            ys, xs = np.nonzero(obj.part)
            assert np.ptp(ys) + 1 >= 8 and np.ptp(xs) + 1 >= 8
            by, bx = np.nonzero(obj.body)
            length = max(np.ptp(by), np.ptp(bx)) + 1
            offset = np.hypot(ys.mean() - by.mean(), xs.mean() - bx.mean())
            assert offset >= 0.15 * length, (k, offset, length)  # typically 0.3-0.35


def test_part_identifies_class_body_is_shared():
    parts = {part_style(c) for c in range(1, NUM_CLASSES + 1)}
    assert len(parts) == NUM_CLASSES
    styles = [body_style(c) for c in range(1, NUM_CLASSES + 1)]
    assert all(styles.count(s) == 4 for s in set(styles))
    for s in set(styles):  # classes sharing a body differ in part shape and colour
        group = [part_style(c) for c in range(1, NUM_CLASSES + 1) if body_style(c) == s]
        assert len({shape for shape, _ in group}) == 4 and len({col for _, col in group}) == 4


def test_saliency_brighter_on_objects(toy: Path):
    # The default level misses some objects: brighter on objects over the split.
    r = VOCReader(toy, "val", saliency_dir="Saliency")
    on, off = [], []
    for i in r.ids:
        sal, mask = r.saliency(i), r.mask(i)
        assert sal.dtype == np.float32 and sal.min() >= 0.0 and sal.max() <= 1.0
        on.append(sal[(mask > 0) & (mask < 255)].mean())
        off.append(sal[mask == 0].mean())
    assert np.mean(on) > np.mean(off) + 0.3


def test_second_call_is_a_no_op(tmp_path: Path):
    root = write_toy_voc(tmp_path / "toy", seed=1, **SMALL)
    stamp = {p: p.stat().st_mtime_ns for p in (root / TOY_MARKER, root / "JPEGImages")}
    jpg = next((root / "JPEGImages").iterdir())
    jpg_stamp = jpg.stat().st_mtime_ns
    assert write_toy_voc(tmp_path / "toy", seed=1, **SMALL) == root
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp
    assert jpg.stat().st_mtime_ns == jpg_stamp
    # Other parameters replace the old toy set.
    write_toy_voc(tmp_path / "toy", seed=1, **{**SMALL, "n_val": 21})
    assert len(VOCReader(root, "val")) == 21
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]


def test_refuses_to_overwrite_foreign_directory(tmp_path: Path):
    precious = tmp_path / "VOC2012"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="VOC2012"):
        write_toy_voc(precious, **SMALL)
    assert (precious / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["VOC2012"]


def test_bad_parameters():
    with pytest.raises(ValueError, match="n_val"):
        write_toy_voc("/nonexistent/never", n_val=5)
    with pytest.raises(ValueError, match="n_train"):
        write_toy_voc("/nonexistent/never", n_train=500)
