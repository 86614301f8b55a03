"""The one reader for PASCAL VOC 2012 (+ SBD ``train_aug``) and the toy dataset.

One VOC reader for toy and real data (docs/design.md): the toy writer
(:mod:`ficklenet.data.toy`) produces the exact VOC layout, and everything downstream
reads both through :class:`VOCReader`.  Layout under ``root`` (docs/method.md, "Data
and evaluation conventions")::

    JPEGImages/<id>.jpg             RGB photos (a few are grayscale or CMYK JPEGs)
    Annotations/<id>.xml            objects -> image-level labels
    SegmentationClass/<id>.png      palette PNG, the palette *indices* are labels, 255 void
    SegmentationClassAug/<id>.png   SBD masks: index-valued PNG (mode "L"), no palette
    ImageSets/Segmentation/<split>.txt   train / val / trainval / train_aug id lists

Masks are read with PIL and never converted to RGB or grayscale, which would turn
palette indices into colours or luminances.  Every data problem raises
:class:`VOCDataError` with the offending path and what to do about it, because a
bad file found deep inside a multi-GPU run is otherwise a bare ``OSError``.
"""

from __future__ import annotations

import copy
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ficklenet.choices import LabelsFrom
from ficklenet.data.classes import CLASS_TO_INDEX, IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES
from ficklenet.errors import UserError

__all__ = ["VOCDataError", "VOCReader", "read_label_png", "split_file_candidates"]

# Decoding may fail in any of these ways on a corrupt or truncated file; PIL's
# ImageFile.LOAD_TRUNCATED_IMAGES is deliberately left False so truncation is an error
# instead of a silently grey lower half.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG")
_SALIENCY_EXTENSIONS = (".png", ".jpg")


class VOCDataError(UserError):
    """A problem with the dataset on disk; the message names the file and the fix (an
    app prints it as one line: :mod:`ficklenet.errors`)."""


def split_file_candidates(root: str | os.PathLike[str], split: str) -> list[Path]:
    """Where the id list of ``split`` may live under ``root``, in search order.

    ``train_aug`` (SBD) is distributed in several places: DeepLab-style setups put it
    beside the VOC lists, others in ``ImageSets/SegmentationAug`` or at the root.
    """
    root = Path(root)
    candidates = [root / "ImageSets" / "Segmentation" / f"{split}.txt"]
    if split == "train_aug":
        candidates += [
            root / "ImageSets" / "SegmentationAug" / "train_aug.txt",
            root / "train_aug.txt",
        ]
    return candidates


def read_label_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an index PNG (VOC palette mode ``"P"`` or SBD/seed mode ``"L"``) as uint8.

    Returns the stored indices as they are (labels 0..20, 255 void).  Raises
    :class:`VOCDataError` if the file cannot be decoded or holds colours rather than
    indices.
    """
    path = Path(path)
    img = _open_fully(path, what="label mask")
    if img.mode not in ("P", "L"):
        raise VOCDataError(
            f"{path}: label PNG has mode {img.mode!r}, expected a palette ('P', like VOC's "
            "SegmentationClass) or index ('L', like SBD's SegmentationClassAug) PNG whose "
            "pixel values are class indices. An RGB/colour-coded mask cannot be read as "
            "labels: re-extract the original dataset file, or save masks with "
            "ficklenet.data.classes.save_palette_png / save_index_png."
        )
    return np.asarray(img, dtype=np.uint8)


def _open_fully(path: Path, what: str) -> Image.Image:
    """Open and fully decode an image file, turning every decoder error into VOCDataError."""
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError as e:
        raise VOCDataError(f"{path}: {what} file not found.") from e
    except (UnidentifiedImageError, *_DECODE_ERRORS) as e:
        raise VOCDataError(
            f"{path}: cannot decode {what} ({type(e).__name__}: {e}). The file is corrupt "
            "or truncated: re-download / re-extract it, or remove its id from the split list."
        ) from e
    return img


def read_rgb_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as uint8 ``(H, W, 3)`` RGB, fully decoded (grayscale, CMYK and
    palette images converted); an unreadable file raises :class:`VOCDataError`
    naming it."""
    img = _open_fully(Path(path), what="image")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


class VOCReader:
    """Read one split of a VOC2012-layout directory (real VOC, VOC + SBD, or toy).

    Args:
        root: the VOC2012 directory (the one holding ``JPEGImages/``).
        split: ``train``, ``val``, ``trainval``, ``train_aug`` or any other list name
            under ``ImageSets/Segmentation/``; a path to a ``.txt`` id list also works
            (e.g. a custom semi-supervised subset).
        labels_from: ``"xml"`` (object names in ``Annotations/<id>.xml``) or ``"mask"``
            (the classes present in the segmentation mask).
        mask_dirs: directories (relative to ``root`` or absolute) searched in order for
            ``<id>.png``; the first existing file wins.  VOC's own masks come first by
            default because SBD re-annotated some VOC images less carefully.
        saliency_dir: optional directory of saliency maps ``<id>.png`` / ``<id>.jpg``
            (relative to ``root`` or absolute), used for background seeds.
        include_difficult: with ``labels_from="xml"``, whether objects marked
            ``<difficult>1</difficult>`` count as present.
        check: verify at construction (one directory listing, no decoding) that every
            id's image exists; all missing ids are reported in one error.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str,
        labels_from: str = "xml",
        mask_dirs: Sequence[str | os.PathLike[str]] = ("SegmentationClass", "SegmentationClassAug"),
        saliency_dir: str | os.PathLike[str] | None = None,
        include_difficult: bool = True,
        check: bool = True,
    ) -> None:
        labels_from = LabelsFrom.parse(labels_from, "labels_from")
        if isinstance(mask_dirs, (str, os.PathLike)):
            mask_dirs = (mask_dirs,)
        self.root = Path(root).expanduser()
        self.split = split
        self.labels_from = labels_from
        self.include_difficult = include_difficult
        self._check_root()
        self.image_dir = self.root / "JPEGImages"
        self.annotation_dir = self.root / "Annotations"
        self.mask_dirs: tuple[Path, ...] = tuple(self.root / d for d in mask_dirs)
        self.saliency_dir: Path | None = None
        if saliency_dir is not None:
            self.saliency_dir = self.root / saliency_dir
            if not self.saliency_dir.is_dir():
                raise VOCDataError(
                    f"{self.saliency_dir}: saliency directory not found. Point saliency_dir "
                    "(relative to the VOC root or absolute) at a folder of <id>.png saliency "
                    "maps, or set it to null (data.saliency_dir=null) to use low class scores "
                    "for background seeds (a toy written with toy.saliency=none has no maps)."
                )
        self.split_file = self._find_split_file(split)
        self.ids: list[str] = self._read_split_file(self.split_file)
        self._labels_cache: dict[str, np.ndarray] = {}
        if check:
            self._check_images_exist()

    # ----------------------------------------------------------------- set-up checks
    def _check_root(self) -> None:
        if not (self.root / "JPEGImages").is_dir():
            state = "does not exist" if not self.root.exists() else "has no JPEGImages/ folder"
            raise VOCDataError(
                f"{self.root}: not a VOC2012 root ({state}). A VOC2012 root must contain "
                "JPEGImages/<id>.jpg, Annotations/<id>.xml, ImageSets/Segmentation/<split>.txt "
                "and, for masks, SegmentationClass/ (and SBD's SegmentationClassAug/ plus "
                "train_aug.txt for train_aug). Point data.root at VOCdevkit/VOC2012, or run "
                "`ficklenet-make-toy` to write a small synthetic dataset in this layout."
            )

    def _find_split_file(self, split: str) -> Path:
        as_path = Path(split).expanduser()
        if split.endswith(".txt") or as_path.is_absolute():
            if as_path.is_file():
                return as_path
            candidates = [as_path if as_path.is_absolute() else self.root / as_path]
        else:
            candidates = split_file_candidates(self.root, split)
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        searched = "\n  ".join(str(c) for c in candidates)
        hint = (
            " train_aug.txt comes with the SBD augmentation (10,582 ids); copy it to one "
            "of these places."
            if split == "train_aug"
            else " Use one of train, val, trainval, train_aug, or a path to an id list."
        )
        raise VOCDataError(
            f"{candidates[0]}: split list for {split!r} not found. Searched:\n  {searched}\n"
            + hint.strip()
        )

    @staticmethod
    def _read_split_file(path: Path) -> list[str]:
        ids: list[str] = []
        seen: set[str] = set()
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            # SBD-style lines are "/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png";
            # VOC lines are just "<id>"; either way the id is the first field's stem.
            first = line.split()[0]
            name = first.rsplit("/", 1)[-1]
            stem, ext = os.path.splitext(name)
            image_id = stem if ext in _IMAGE_EXTENSIONS else name
            if image_id not in seen:  # a repeated id would silently weight that image twice
                seen.add(image_id)
                ids.append(image_id)
        if not ids:
            raise VOCDataError(
                f"{path}: split list is empty. Write one image id per line (e.g. 2007_000032), "
                "or regenerate the list."
            )
        return ids

    def _check_images_exist(self) -> None:
        # One listing instead of 10k stat calls: cheap even on network file systems.
        try:
            present = set(os.listdir(self.image_dir))
        except OSError as e:
            raise VOCDataError(f"{self.image_dir}: cannot list images ({e}).") from e
        missing = [i for i in self.ids if not any(i + ext in present for ext in _IMAGE_EXTENSIONS)]
        if missing:
            shown = ", ".join(missing[:5])
            raise VOCDataError(
                f"{self.image_dir / (missing[0] + '.jpg')}: image missing for "
                f"{len(missing)} of {len(self.ids)} ids in {self.split_file} (first: {shown}). "
                "Restore the images (is the VOC/SBD download complete?) or remove these ids "
                "from the split list."
            )

    # ----------------------------------------------------------------------- paths
    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, ids: Sequence[str]) -> VOCReader:
        """The same reader over ``ids`` only (one process's share, a limit)."""
        view = copy.copy(self)
        view.ids = list(ids)
        return view

    def __repr__(self) -> str:
        return (
            f"VOCReader(root={str(self.root)!r}, split={self.split!r}, n={len(self.ids)}, "
            f"labels_from={self.labels_from.value!r})"
        )

    def image_path(self, image_id: str) -> Path:
        """Path of the image of ``image_id`` (``JPEGImages/<id>.jpg`` unless another
        extension exists and the ``.jpg`` does not)."""
        default = self.image_dir / f"{image_id}.jpg"
        if default.exists():
            return default
        for ext in _IMAGE_EXTENSIONS[1:]:
            candidate = self.image_dir / f"{image_id}{ext}"
            if candidate.exists():
                return candidate
        return default

    def annotation_path(self, image_id: str) -> Path:
        return self.annotation_dir / f"{image_id}.xml"

    def mask_path(self, image_id: str) -> Path | None:
        """First existing ``<mask_dir>/<id>.png`` over ``mask_dirs``, or None."""
        for d in self.mask_dirs:
            candidate = d / f"{image_id}.png"
            if candidate.is_file():
                return candidate
        return None

    def saliency_path(self, image_id: str) -> Path | None:
        if self.saliency_dir is None:
            return None
        for ext in _SALIENCY_EXTENSIONS:
            candidate = self.saliency_dir / f"{image_id}{ext}"
            if candidate.is_file():
                return candidate
        return self.saliency_dir / f"{image_id}.png"

    # --------------------------------------------------------------------- reading
    def image(self, image_id: str) -> np.ndarray:
        """The image as uint8 ``(H, W, 3)`` RGB.

        Grayscale, CMYK and palette JPEGs (a handful exist in VOC) are converted to
        RGB.  EXIF orientation is deliberately ignored: masks are aligned with the
        stored pixel grid, not with the displayed one.
        """
        path = self.image_path(image_id)
        if not path.is_file():
            raise VOCDataError(
                f"{path}: image for id {image_id!r} not found. Restore the file or remove the "
                f"id from {self.split_file}."
            )
        return read_rgb_image(path)

    def image_size(self, image_id: str) -> tuple[int, int]:
        """``(H, W)`` of the image, read from the file header only (no decoding)."""
        path = self.image_path(image_id)
        try:
            with Image.open(path) as img:
                w, h = img.size
        except FileNotFoundError as e:
            raise VOCDataError(
                f"{path}: image for id {image_id!r} not found. Restore the file or remove the "
                f"id from {self.split_file}."
            ) from e
        except (UnidentifiedImageError, *_DECODE_ERRORS) as e:
            raise VOCDataError(
                f"{path}: cannot read image header ({type(e).__name__}: {e}). The file is "
                "corrupt: re-download / re-extract it, or remove its id from the split list."
            ) from e
        return h, w

    def has_mask(self, image_id: str) -> bool:
        return self.mask_path(image_id) is not None

    def mask(self, image_id: str) -> np.ndarray | None:
        """Ground-truth mask, uint8 ``(H, W)``: 0 background, 1..20 classes, 255 void.

        None when no ``mask_dirs`` entry holds ``<id>.png`` (e.g. a ``train_aug`` image
        in a VOC-only setup).
        """
        path = self.mask_path(image_id)
        if path is None:
            return None
        mask = read_label_png(path)
        self._check_same_size(mask, image_id, path, what="mask")
        bad = (mask > NUM_CLASSES) & (mask != IGNORE_INDEX)
        if bad.any():
            values = sorted(int(v) for v in np.unique(mask[bad]))[:10]
            raise VOCDataError(
                f"{path}: mask holds values {values} outside 0..{NUM_CLASSES} and "
                f"{IGNORE_INDEX} (void). This is not a VOC label mask (a colour mask saved "
                "as grayscale?): re-extract the original file."
            )
        return mask

    def saliency(self, image_id: str) -> np.ndarray | None:
        """Saliency map as float32 ``(H, W)`` in [0, 1]; None without ``saliency_dir``."""
        path = self.saliency_path(image_id)
        if path is None:
            return None
        if not path.is_file():
            raise VOCDataError(
                f"{path}: saliency map for id {image_id!r} not found in {self.saliency_dir}. "
                "Compute saliency for every image of the split, or set saliency_dir to null."
            )
        img = _open_fully(path, what="saliency map")
        if img.mode != "L":
            img = img.convert("L")
        sal = np.asarray(img, dtype=np.float32) / 255.0
        self._check_same_size(sal, image_id, path, what="saliency map")
        return sal

    def _check_same_size(self, arr: np.ndarray, image_id: str, path: Path, what: str) -> None:
        h, w = self.image_size(image_id)
        if arr.shape[:2] != (h, w):
            raise VOCDataError(
                f"{path}: {what} is {arr.shape[1]}x{arr.shape[0]} (WxH) but its image "
                f"{self.image_path(image_id)} is {w}x{h}. The {what} belongs to another image "
                "or was resized: regenerate it at the image's size or remove the id from the "
                "split list."
            )

    # ---------------------------------------------------------------------- labels
    def labels(self, image_id: str) -> np.ndarray:
        """Sorted int64 array of the foreground classes (1..20) present in the image."""
        cached = self._labels_cache.get(image_id)
        if cached is None:
            if self.labels_from == "xml":
                cached = self._labels_from_xml(image_id)
            else:
                cached = self._labels_from_mask(image_id)
            self._labels_cache[image_id] = cached
        return cached.copy()

    def label_vector(self, image_id: str) -> np.ndarray:
        """Float32 multi-hot ``(20,)``: entry ``c - 1`` is 1 when class ``c`` is present."""
        vec = np.zeros(NUM_CLASSES, dtype=np.float32)
        vec[self.labels(image_id) - 1] = 1.0
        return vec

    def _labels_from_xml(self, image_id: str) -> np.ndarray:
        path = self.annotation_path(image_id)
        if not path.is_file():
            raise VOCDataError(
                f"{path}: annotation for id {image_id!r} not found. Restore Annotations/ from "
                "the VOC download, or use labels_from='mask' to take labels from the masks."
            )
        try:
            tree = ET.parse(path)
        except ET.ParseError as e:
            raise VOCDataError(
                f"{path}: malformed XML ({e}). Re-extract the annotation from the VOC download "
                "or fix the file by hand."
            ) from e
        classes: set[int] = set()
        for obj in tree.getroot().iter("object"):
            name_el = obj.find("name")
            name = (name_el.text or "").strip() if name_el is not None else ""
            if name not in CLASS_TO_INDEX:
                raise VOCDataError(
                    f"{path}: unknown class name {name!r} in <object><name>. Valid names: "
                    f"{', '.join(VOC_CLASSES)}. Fix the XML."
                )
            difficult_el = obj.find("difficult")
            difficult = difficult_el is not None and (difficult_el.text or "").strip() == "1"
            if difficult and not self.include_difficult:
                continue
            classes.add(CLASS_TO_INDEX[name])
        if not classes:
            extra = (
                " (all its objects are difficult and include_difficult is False)"
                if not self.include_difficult
                else ""
            )
            raise VOCDataError(
                f"{path}: image {image_id!r} has no object labels{extra}. Remove the id from "
                f"{self.split_file} or fix the XML."
            )
        return np.asarray(sorted(classes), dtype=np.int64)

    def _labels_from_mask(self, image_id: str) -> np.ndarray:
        mask = self.mask(image_id)
        if mask is None:
            searched = ", ".join(str(d / f"{image_id}.png") for d in self.mask_dirs)
            raise VOCDataError(
                f"{searched}: no mask for id {image_id!r}, and labels_from='mask' needs one. "
                "Use labels_from='xml', add the mask, or use a split whose ids all have masks "
                "(train, val)."
            )
        values = np.unique(mask)
        classes = values[(values != 0) & (values != IGNORE_INDEX)].astype(np.int64)
        if classes.size == 0:
            raise VOCDataError(
                f"{self.mask_path(image_id)}: mask of {image_id!r} has no foreground class. "
                f"Remove the id from {self.split_file} or fix the mask."
            )
        return classes
