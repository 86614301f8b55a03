"""VOCReader on a hand-made mini VOC tree with the real dataset's quirks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from ficklenet.data.classes import (
    CLASS_NAMES,
    CLASS_TO_INDEX,
    NUM_CLASSES,
    VOC_CLASSES,
    save_index_png,
    save_palette_png,
    voc_palette,
)
from ficklenet.data.voc import VOCDataError, VOCReader

H, W = 12, 16
CAT, DOG, PERSON, CAR = (CLASS_TO_INDEX[n] for n in ("cat", "dog", "person", "car"))


def _xml(objects: list[tuple[str, int]]) -> str:
    body = "".join(
        f"<object><name>{name}</name><difficult>{d}</difficult>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>4</ymax></bndbox></object>"
        for name, d in objects
    )
    return f"<annotation><filename>x.jpg</filename>{body}</annotation>"


def _palette_mask() -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[2:8, 2:8] = CAT
    m[1, 1:9] = m[8, 1:9] = m[1:9, 1] = m[1:9, 8] = 255  # void outline, as in VOC
    m[9:12, 10:16] = DOG
    return m


def _sbd_mask() -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[3:10, 4:12] = PERSON
    return m


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    """Three images: RGB with a palette mask, grayscale JPEG with an SBD mask, CMYK JPEG
    without mask; train_aug listed SBD-style under ImageSets/SegmentationAug."""
    root = tmp_path / "VOC2012"
    for d in ("JPEGImages", "Annotations", "SegmentationClass", "SegmentationClassAug"):
        (root / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(
        root / "JPEGImages/2007_000001.jpg"
    )
    Image.fromarray(np.full((H, W), 90, np.uint8)).save(root / "JPEGImages/2007_000002.jpg")
    Image.new("CMYK", (W, H), (0, 255, 255, 0)).save(
        root / "JPEGImages/2007_000003.jpg", quality=95
    )
    (root / "Annotations/2007_000001.xml").write_text(_xml([("cat", 0), ("dog", 1)]))
    (root / "Annotations/2007_000002.xml").write_text(_xml([("person", 0)]))
    (root / "Annotations/2007_000003.xml").write_text(_xml([(" car ", 0)]))
    save_palette_png(_palette_mask(), root / "SegmentationClass/2007_000001.png")
    save_index_png(_sbd_mask(), root / "SegmentationClassAug/2007_000002.png")
    sets = root / "ImageSets/Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("2007_000001\n2007_000002\n2007_000003\n")
    (sets / "val.txt").write_text("2007_000001\n\n")
    aug = root / "ImageSets/SegmentationAug"
    aug.mkdir(parents=True)
    (aug / "train_aug.txt").write_text(
        "".join(
            f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n"
            for i in ("2007_000002", "2007_000003", "2007_000001")
        )
    )
    return root


# ------------------------------------------------------------------------ classes
def test_class_tables_and_palette():
    assert NUM_CLASSES == 20 and len(VOC_CLASSES) == 20 and CLASS_NAMES[0] == "background"
    assert CLASS_NAMES[15] == "person" and CLASS_TO_INDEX["tvmonitor"] == 20
    pal = np.asarray(voc_palette()).reshape(256, 3)
    assert pal[0].tolist() == [0, 0, 0]
    assert pal[1].tolist() == [128, 0, 0]
    assert pal[15].tolist() == [192, 128, 128]  # person
    assert pal[255].tolist() == [224, 224, 192]  # void


# ------------------------------------------------------------------------- reading
def test_ids_from_plain_and_sbd_style_lists(voc: Path):
    assert VOCReader(voc, "train").ids == ["2007_000001", "2007_000002", "2007_000003"]
    assert len(VOCReader(voc, "val")) == 1
    aug = VOCReader(voc, "train_aug")
    assert aug.ids == ["2007_000002", "2007_000003", "2007_000001"]
    assert aug.split_file == voc / "ImageSets/SegmentationAug/train_aug.txt"


def test_train_aug_at_root_is_found(voc: Path):
    (voc / "ImageSets/SegmentationAug/train_aug.txt").rename(voc / "train_aug.txt")
    assert len(VOCReader(voc, "train_aug")) == 3


def test_images_are_rgb_uint8_whatever_the_jpeg_mode(voc: Path):
    r = VOCReader(voc, "train")
    for i in r.ids:
        img = r.image(i)
        assert img.shape == (H, W, 3) and img.dtype == np.uint8
    gray = r.image("2007_000002")
    assert (gray[..., 0] == gray[..., 1]).all() and abs(int(gray.mean()) - 90) <= 2
    cmyk = r.image("2007_000003").reshape(-1, 3).mean(0)  # CMYK (0, 255, 255, 0) is red
    assert cmyk[0] > 200 and cmyk[1] < 50 and cmyk[2] < 50


def test_palette_mask_indices_read_exactly(voc: Path):
    assert Image.open(voc / "SegmentationClass/2007_000001.png").mode == "P"
    m = VOCReader(voc, "train").mask("2007_000001")
    assert m.dtype == np.uint8 and m.shape == (H, W)
    np.testing.assert_array_equal(m, _palette_mask())
    assert set(np.unique(m).tolist()) == {0, CAT, DOG, 255}


def test_sbd_index_mask_read_exactly(voc: Path):
    r = VOCReader(voc, "train")
    np.testing.assert_array_equal(r.mask("2007_000002"), _sbd_mask())
    assert r.has_mask("2007_000002")
    assert r.mask("2007_000003") is None and not r.has_mask("2007_000003")


def test_mask_dirs_searched_in_order(voc: Path):
    save_index_png(_sbd_mask(), voc / "SegmentationClassAug/2007_000001.png")
    first = VOCReader(voc, "train").mask("2007_000001")
    np.testing.assert_array_equal(first, _palette_mask())
    swapped = VOCReader(voc, "train", mask_dirs=("SegmentationClassAug", "SegmentationClass"))
    np.testing.assert_array_equal(swapped.mask("2007_000001"), _sbd_mask())
    only_voc = VOCReader(voc, "train", mask_dirs=("SegmentationClass",))
    assert only_voc.mask("2007_000002") is None


def test_labels_from_xml_and_difficult(voc: Path):
    r = VOCReader(voc, "train")
    np.testing.assert_array_equal(r.labels("2007_000001"), [CAT, DOG])
    assert r.labels("2007_000001").dtype == np.int64
    np.testing.assert_array_equal(r.labels("2007_000003"), [CAR])  # name whitespace stripped
    strict = VOCReader(voc, "train", include_difficult=False)
    np.testing.assert_array_equal(strict.labels("2007_000001"), [CAT])
    vec = r.label_vector("2007_000001")
    assert vec.dtype == np.float32 and vec.shape == (20,)
    assert np.flatnonzero(vec).tolist() == [CAT - 1, DOG - 1]


def test_labels_from_mask(voc: Path):
    r = VOCReader(voc, "train", labels_from="mask")
    np.testing.assert_array_equal(r.labels("2007_000001"), [CAT, DOG])
    np.testing.assert_array_equal(r.labels("2007_000002"), [PERSON])
    with pytest.raises(VOCDataError, match="2007_000003.png"):
        r.labels("2007_000003")


def test_saliency_relative_and_absolute(voc: Path):
    sal_dir = voc / "Saliency"
    sal_dir.mkdir()
    Image.fromarray(np.full((H, W), 255, np.uint8)).save(sal_dir / "2007_000001.png")
    Image.fromarray(np.zeros((H, W), np.uint8)).save(sal_dir / "2007_000002.jpg")
    assert VOCReader(voc, "train").saliency("2007_000001") is None
    for d in ("Saliency", sal_dir):
        r = VOCReader(voc, "train", saliency_dir=d)
        s = r.saliency("2007_000001")
        assert s.dtype == np.float32 and s.shape == (H, W) and s.max() == 1.0
        assert r.saliency("2007_000002").max() <= 0.02
        with pytest.raises(VOCDataError, match="2007_000003"):
            r.saliency("2007_000003")


# -------------------------------------------------------------------------- errors
def test_pil_truncated_loading_stays_off():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_missing_root(tmp_path: Path):
    with pytest.raises(VOCDataError) as e:
        VOCReader(tmp_path / "nowhere", "train")
    assert "nowhere" in str(e.value) and "ficklenet-make-toy" in str(e.value)
    assert "JPEGImages" in str(e.value)


def test_missing_split_lists_places_searched(voc: Path):
    (voc / "ImageSets/SegmentationAug/train_aug.txt").unlink()
    with pytest.raises(VOCDataError) as e:
        VOCReader(voc, "train_aug")
    msg = str(e.value)
    for place in ("Segmentation/train_aug.txt", "SegmentationAug/train_aug.txt"):
        assert place in msg
    assert str(voc / "train_aug.txt") in msg


def test_empty_split(voc: Path):
    (voc / "ImageSets/Segmentation/val.txt").write_text("\n  \n")
    with pytest.raises(VOCDataError, match=r"val\.txt.*empty"):
        VOCReader(voc, "val")


def test_missing_images_reported_together(voc: Path):
    ids = "".join(f"gone_{i}\n" for i in range(7))
    (voc / "ImageSets/Segmentation/train.txt").write_text("2007_000001\n" + ids)
    with pytest.raises(VOCDataError) as e:
        VOCReader(voc, "train")
    msg = str(e.value)
    assert "gone_0.jpg" in msg and "7 of 8" in msg and "gone_4" in msg
    r = VOCReader(voc, "train", check=False)  # lazily: at read time
    with pytest.raises(VOCDataError, match="gone_3.jpg"):
        r.image("gone_3")


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_corrupt_image(voc: Path, how: str):
    path = voc / "JPEGImages/2007_000001.jpg"
    data = path.read_bytes()
    path.write_bytes(b"not a jpeg" if how == "garbage" else data[: len(data) // 2])
    r = VOCReader(voc, "train")  # construction only stats files
    with pytest.raises(VOCDataError, match="2007_000001.jpg"):
        r.image("2007_000001")


def test_truncated_mask(voc: Path):
    path = voc / "SegmentationClass/2007_000001.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VOCDataError, match="2007_000001.png"):
        VOCReader(voc, "train").mask("2007_000001")


def test_mask_size_mismatch(voc: Path):
    save_index_png(np.zeros((H + 1, W), np.uint8), voc / "SegmentationClassAug/2007_000002.png")
    with pytest.raises(VOCDataError) as e:
        VOCReader(voc, "train").mask("2007_000002")
    assert "2007_000002.png" in str(e.value) and "2007_000002.jpg" in str(e.value)


def test_colour_mask_is_refused(voc: Path):
    path = voc / "SegmentationClass/2007_000001.png"
    Image.open(path).convert("RGB").save(path)
    with pytest.raises(VOCDataError, match=r"2007_000001\.png.*mode 'RGB'"):
        VOCReader(voc, "train").mask("2007_000001")


def test_mask_with_impossible_values(voc: Path):
    save_index_png(np.full((H, W), 38, np.uint8), voc / "SegmentationClassAug/2007_000002.png")
    with pytest.raises(VOCDataError, match=r"2007_000002\.png.*\[38\]"):
        VOCReader(voc, "train").mask("2007_000002")


def test_unknown_class_name(voc: Path):
    (voc / "Annotations/2007_000002.xml").write_text(_xml([("persn", 0)]))
    with pytest.raises(VOCDataError) as e:
        VOCReader(voc, "train").labels("2007_000002")
    msg = str(e.value)
    assert "2007_000002.xml" in msg and "persn" in msg and "tvmonitor" in msg


def test_malformed_xml(voc: Path):
    (voc / "Annotations/2007_000002.xml").write_text("<annotation><object><name>cat")
    with pytest.raises(VOCDataError, match=r"2007_000002\.xml.*malformed"):
        VOCReader(voc, "train").labels("2007_000002")


def test_image_without_labels(voc: Path):
    (voc / "Annotations/2007_000002.xml").write_text(_xml([]))
    with pytest.raises(VOCDataError) as e:
        VOCReader(voc, "train").labels("2007_000002")
    assert "2007_000002.xml" in str(e.value) and "Remove the id" in str(e.value)
    # Only difficult objects and include_difficult=False: no labels either.
    with pytest.raises(VOCDataError, match="difficult"):
        r = VOCReader(voc, "train", include_difficult=False)
        (voc / "Annotations/2007_000002.xml").write_text(_xml([("cat", 1)]))
        r.labels("2007_000002")


def test_missing_annotation(voc: Path):
    (voc / "Annotations/2007_000003.xml").unlink()
    with pytest.raises(VOCDataError, match=r"2007_000003\.xml.*labels_from='mask'"):
        VOCReader(voc, "train").labels("2007_000003")
