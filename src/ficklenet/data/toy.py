"""Synthetic "toy VOC", the proving ground: a small dataset in the exact VOC2012 +
SBD layout, built so that a broken method and a working one score differently.

With no GPU and no VOC the whole pipeline must still run end to end, and the toy
data goes through the same :class:`~ficklenet.data.voc.VOCReader` as real VOC. The
images carry the failure FickleNet addresses (``docs/method.md``): a classifier
needs only a small part of each object, so its class activation map covers that
part and misses much of the object, while the ground-truth mask covers all of it.

Construction of class ``c`` (1..20):

* body style ``c % 5`` (stripes, checkerboard, spots, radial gradient, rings), so
  each body texture is shared by 4 classes and tells only the group; a wobbly,
  elongated ellipse 45-70 % of the image side long, 0.5-0.75 as wide;
* part shape ``(c - 1) // 5`` (square, disc, triangle, cross) in a saturated colour
  ``(c - 1 + (c - 1) // 5) % 5`` (red, yellow, green, blue, magenta): the pair is
  unique per class, and the four classes sharing a body differ in both;
* the part, 9-12 pixels across at 96 pixels (at least one cell of a stride-8
  feature map), sits at one end of the body's long axis, like a head: cells at the
  body's other end are beyond the reach of a small backbone's receptive field from
  the part, so nothing there tells the class apart from its group.

1-3 objects per image (large bodies: mostly 1-2) on a muted, cluttered background;
objects overlap a little (later ones occlude earlier ones, never their parts);
Gaussian noise and a random JPEG quality; occasionally an extra small object marked
``difficult`` in the XML and void (255) in the masks, as VOC does. Masks carry a 255
border one pixel either side of every object boundary, like VOC's. ``Saliency/``
holds a saliency map per image for the saliency background-seed path, failing the
way a classical detector does at the chosen level (:mod:`ficklenet.data.toy_saliency`:
``perfect``, ``good``, ``realistic`` (default), ``poor``, or ``none`` for no maps).
The level changes only ``Saliency/``: images, masks and annotations are the same at
every level.

Two settings change the data the method is meant for, and leave everything else
(masks, annotations, saliency, every other pixel) as it is. ``part="erased"`` paints
each part as the body around it, so only the bodies are left to tell the classes
apart: a classifier trained and tested on such images measures how much class
evidence the rest of the object carries. ``body_evidence`` (default 0: none) tints
each body towards a colour of its own class, so that a body says something about its
class and not only its group: the four classes sharing a texture get four hues 90°
apart in the chroma plane, at ``body_evidence × 15`` grey levels (the per-object
colour jitter is up to ±15 per channel), scaled per object by a random 0.5-1.5, so the
evidence is weak and noisy. At the defaults the images are byte-identical to those
written without the settings.

Splits: ``train_aug`` (image labels for all; SBD-style masks in
``SegmentationClassAug``), ``train`` = the first ``n_train`` ids of ``train_aug`` (also
with VOC palette masks in ``SegmentationClass``), ``val`` (both kinds of mask) and
``trainval``.  Within each split the first objects' classes run through shuffled
cycles of all 20 classes, so ``train_aug``, ``val`` and a ``train`` of 20 or more ids
contain every class.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ficklenet.choices import SaliencyQuality, ToyPart
from ficklenet.data.classes import (
    IGNORE_INDEX,
    NUM_CLASSES,
    VOC_CLASSES,
    save_index_png,
    save_palette_png,
)
from ficklenet.data.toy_saliency import SALIENCY_LEVELS, render_saliency
from ficklenet.errors import UserFileExistsError, UserValueError

__all__ = [
    "ToyParams",
    "ToyPart",
    "is_toy_voc",
    "toy_settings",
    "write_toy_voc",
    "TOY_MARKER",
    "BODY_TINT_LEVELS",
]

#: File at the toy root recording how it was made; its presence marks a toy dataset.
TOY_MARKER = "toy_voc.json"
_FORMAT = "ficklenet-toy-voc"
# Bump whenever the generator's output changes, so cached toy sets are rewritten.
_GENERATOR_VERSION = 4

_NUM_STYLES = 5
_BODY_COLOURS = (  # (a, b) per body style; mid-tones, kept away from the part colours
    ((150, 110, 70), (85, 58, 38)),  # stripes: browns
    ((175, 175, 180), (70, 80, 95)),  # checkerboard: grey / slate
    ((125, 140, 75), (55, 70, 35)),  # spots: olive
    ((215, 195, 155), (130, 105, 75)),  # radial gradient: tan
    ((135, 105, 150), (205, 185, 215)),  # rings: mauve
)
_PART_COLOURS = ((235, 25, 25), (245, 225, 0), (0, 205, 70), (25, 70, 245), (230, 0, 225))
_PART_SHAPES = ("square", "disc", "triangle", "cross")
# Objects per image (1, 2, 3) and body length as a fraction of the image side: large
# bodies, so that a backbone's receptive field at the far end of a body does not
# reach its part (the part-only CAM of the module docstring).
_OBJECT_COUNTS = (0.55, 0.35, 0.10)
_BODY_SCALE = (0.45, 0.70)
_BODY_ASPECT = (0.5, 0.75)  # width / length
# Body evidence: hue of each class's tint by its index among the four classes sharing
# a body texture (90 degrees apart in the chroma plane), and the tint's size in grey
# levels at body_evidence=1 (the per-object colour jitter is uniform in +-15).
_TINT_ANGLES = (0.0, 0.5 * np.pi, np.pi, 1.5 * np.pi)
BODY_TINT_LEVELS = 15.0
_TINT_SPREAD = (0.5, 1.5)  # per-object scale of the tint: weak and noisy
_CHROMA_BASIS = (
    np.array([1.0, -1.0, 0.0]) / np.sqrt(2.0),
    np.array([1.0, 1.0, -2.0]) / np.sqrt(6.0),
)
# Part half-size as a fraction of the image side: 9-12 pixels across at 96 pixels,
# at least one cell of a stride-8 feature grid, so that part and body fall in
# different cells (capped at a fifth of the body for the tiny "difficult" objects).
_PART_SCALE = (0.045, 0.065)


@dataclass(frozen=True)
class ToyParams:
    """Everything that determines the toy files; stored in ``toy_voc.json``."""

    seed: int = 0
    n_train_aug: int = 400
    n_train: int = 100
    n_val: int = 80
    size: int = 96
    # Saliency quality (ficklenet.data.toy_saliency.SALIENCY_LEVELS).
    saliency: str = SaliencyQuality.realistic.value
    # The parts drawn or erased, and the bodies' class tint (module docstring).
    part: str = ToyPart.shown.value
    body_evidence: float = 0.0

    def validate(self) -> None:
        SaliencyQuality.parse(self.saliency, "toy saliency")
        ToyPart.parse(self.part, "toy part")
        if not 0.0 <= self.body_evidence <= 4.0:
            raise UserValueError(
                f"body_evidence must be in [0, 4] (1: a tint as large as the colour "
                f"jitter), got {self.body_evidence}"
            )
        if self.seed < 0:
            raise UserValueError(f"seed must be >= 0, got {self.seed}")
        if self.n_train_aug < NUM_CLASSES or self.n_val < NUM_CLASSES:
            raise UserValueError(
                f"n_train_aug and n_val must be >= {NUM_CLASSES} so every class appears "
                f"(got {self.n_train_aug}, {self.n_val})"
            )
        if not 1 <= self.n_train <= self.n_train_aug:
            raise UserValueError(
                f"n_train must be in 1..n_train_aug (train is a subset of train_aug), "
                f"got {self.n_train}"
            )
        if self.size < 32:
            raise UserValueError(f"size must be >= 32 pixels, got {self.size}")


def part_style(c: int) -> tuple[str, tuple[int, int, int]]:
    """Shape name and RGB colour of the class-specific part of class ``c`` (1..20)."""
    shape = (c - 1) // 5
    return _PART_SHAPES[shape], _PART_COLOURS[(c - 1 + shape) % 5]


def body_style(c: int) -> int:
    """Index of the body texture of class ``c``; classes ``c`` and ``c + 5`` share it."""
    return c % _NUM_STYLES


def body_tint(c: int) -> np.ndarray:
    """Unit RGB direction of class ``c``'s body tint: zero mean (no brightness change),
    one of four hues 90° apart, distinct among the four classes sharing a texture."""
    angle = _TINT_ANGLES[(c - 1) // _NUM_STYLES]
    return np.cos(angle) * _CHROMA_BASIS[0] + np.sin(angle) * _CHROMA_BASIS[1]


def toy_settings(root: str | os.PathLike[str]) -> dict | None:
    """How the toy set at ``root`` was made: ``{"params": ..., "current": whether
    this generator version made it}``, or None when ``root`` holds no toy set."""
    meta = _read_marker(Path(root))
    if meta is None:
        return None
    return {
        "params": _full_params(meta),
        "current": meta.get("generator_version") == _GENERATOR_VERSION,
    }


def recorded_body_styles(root: str | os.PathLike[str]) -> np.ndarray | None:
    """The body texture of classes 1..20 (int array, index ``c - 1``) as the toy set at
    ``root`` records it (its marker's ``classes``), or None when ``root`` holds no toy
    set or its marker does not say (data from another generator: which classes share
    a body is then unknown)."""
    classes = (_read_marker(Path(root)) or {}).get("classes")
    try:
        return np.array([int(classes[name]["body_style"]) for name in VOC_CLASSES])
    except (KeyError, TypeError, ValueError):
        return None


def _full_params(meta: dict) -> dict:
    """The parameters a marker records, in the current form: settings added since it
    was written take their defaults (which draw the same images)."""
    params = {**asdict(ToyParams()), **meta.get("params", {})}
    if isinstance(params["saliency"], bool):  # versions <= 3: saliency maps or not
        default = SaliencyQuality.realistic if params["saliency"] else SaliencyQuality.none
        params["saliency"] = default.value
    return params


def is_toy_voc(root: str | os.PathLike[str]) -> bool:
    """True if ``root`` holds a complete toy dataset written by :func:`write_toy_voc`."""
    return _read_marker(Path(root)) is not None


def write_toy_voc(
    out: str | os.PathLike[str],
    seed: int = 0,
    n_train_aug: int = 400,
    n_train: int = 100,
    n_val: int = 80,
    size: int = 96,
    saliency: str = SaliencyQuality.realistic.value,
    part: str = ToyPart.shown.value,
    body_evidence: float = 0.0,
) -> Path:
    """Write the toy VOC dataset to ``out`` and return its root (``out`` itself).

    Deterministic: the same arguments give byte-identical files.  Atomic: files are
    written to a sibling ``<out>.tmp-XXXX`` directory that is renamed to ``out`` when
    complete, so a crash never leaves a half dataset and concurrent callers (DDP
    ranks) are safe.  If ``out`` already holds a complete toy set with the same
    arguments nothing is written; a toy set with other arguments is replaced; any
    other non-empty directory is refused with :class:`FileExistsError`.
    """
    params = ToyParams(
        seed=int(seed),
        n_train_aug=int(n_train_aug),
        n_train=int(n_train),
        n_val=int(n_val),
        size=int(size),
        saliency=str(SaliencyQuality.parse(saliency, "saliency")),
        part=str(ToyPart.parse(part, "part")),
        body_evidence=float(body_evidence),
    )
    params.validate()
    out = Path(out).expanduser().absolute()
    if _same_toy(out, params):
        return out
    _refuse_foreign_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
    try:
        _write_all(tmp, params)
        _install(tmp, out, params)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- caching
def _read_marker(root: Path) -> dict | None:
    try:
        meta = json.loads((root / TOY_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == _FORMAT else None


def _same_toy(root: Path, params: ToyParams) -> bool:
    meta = _read_marker(root)
    return (
        meta is not None
        and meta.get("generator_version") == _GENERATOR_VERSION
        and _full_params(meta) == asdict(params)
    )


def _refuse_foreign_dir(out: Path) -> None:
    if out.exists() and not (out.is_dir() and _read_marker(out) is not None):
        if out.is_dir() and not any(out.iterdir()):
            return
        raise UserFileExistsError(
            f"{out}: exists and is not a toy VOC dataset (no {TOY_MARKER}); refusing to "
            "overwrite it. Choose another output directory, or delete this one if it really "
            "is disposable."
        )


def _install(tmp: Path, out: Path, params: ToyParams) -> None:
    """Move the finished ``tmp`` into place at ``out``, replacing an old toy set."""
    old: Path | None = None
    if out.exists():
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        else:
            # An outdated toy set (checked by the caller): move it aside first so `out`
            # is never missing for longer than two renames.
            old = Path(tempfile.mkdtemp(prefix=f"{out.name}.old-", dir=out.parent))
            os.rename(out, old / "data")
    try:
        os.rename(tmp, out)
    except OSError:
        # Another process (e.g. another DDP rank) finished first.
        if not _same_toy(out, params):
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- writing
def _write_all(root: Path, params: ToyParams) -> None:
    dirs = {
        "img": root / "JPEGImages",
        "xml": root / "Annotations",
        "cls": root / "SegmentationClass",
        "aug": root / "SegmentationClassAug",
        "sets": root / "ImageSets" / "Segmentation",
    }
    level = SALIENCY_LEVELS[SaliencyQuality(params.saliency)]
    if level.writes_maps:
        dirs["sal"] = root / "Saliency"
    for d in dirs.values():
        d.mkdir(parents=True)

    n_aug, n_val = params.n_train_aug, params.n_val
    ids = [f"toy_{i:06d}" for i in range(n_aug + n_val)]
    train_aug, val = ids[:n_aug], ids[n_aug:]
    train = train_aug[: params.n_train]
    with_palette_mask = set(train) | set(val)
    primary = np.concatenate(
        [
            _balanced_classes(np.random.default_rng([params.seed, 0]), n_aug),
            _balanced_classes(np.random.default_rng([params.seed, 1]), n_val),
        ]
    )

    for index, image_id in enumerate(ids):
        rng = np.random.default_rng([params.seed, 2, index])
        sample = _render(
            rng,
            params.size,
            int(primary[index]),
            tints=_tints(np.random.default_rng([params.seed, 4, index]), params.body_evidence),
            parts=params.part == ToyPart.shown.value,
        )
        Image.fromarray(sample.image).save(
            dirs["img"] / f"{image_id}.jpg", format="JPEG", quality=sample.jpeg_quality
        )
        (dirs["xml"] / f"{image_id}.xml").write_text(
            _annotation_xml(image_id, sample, segmented=image_id in with_palette_mask)
        )
        save_index_png(sample.mask, dirs["aug"] / f"{image_id}.png")
        if image_id in with_palette_mask:
            save_palette_png(sample.mask, dirs["cls"] / f"{image_id}.png")
        if level.writes_maps:
            # Its own generator: the level never changes the images' draws.
            saliency = render_saliency(
                level,
                np.random.default_rng([params.seed, 3, index]),
                [obj.body for obj in sample.objects],
            )
            Image.fromarray(saliency).save(dirs["sal"] / f"{image_id}.png", format="PNG")

    for name, split_ids in (
        ("train_aug", train_aug),
        ("train", train),
        ("val", val),
        ("trainval", train + val),
    ):
        (dirs["sets"] / f"{name}.txt").write_text("".join(f"{i}\n" for i in split_ids))

    meta = {
        "format": _FORMAT,
        "generator_version": _GENERATOR_VERSION,
        "params": asdict(params),
        "description": (
            "Synthetic VOC-layout dataset written by ficklenet.data.toy.write_toy_voc: "
            "large bodies shared by groups of classes plus small class-specific parts."
        ),
        "classes": {
            name: {
                "body_style": body_style(c),
                "part_shape": part_style(c)[0],
                "part_colour": list(part_style(c)[1]),
            }
            for c, name in enumerate(VOC_CLASSES, start=1)
        },
        "splits": {
            "train_aug": len(train_aug),
            "train": len(train),
            "val": len(val),
            "trainval": len(train) + len(val),
        },
    }
    # Written last: its presence is what marks the directory as a complete toy set.
    (root / TOY_MARKER).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _balanced_classes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Primary class per image: back-to-back shuffled cycles of 1..20, so every prefix
    of 20 or more images holds every class."""
    cycles = -(-n // NUM_CLASSES)
    return np.concatenate([rng.permutation(NUM_CLASSES) + 1 for _ in range(cycles)])[:n]


@dataclass
class _Object:
    cls: int
    body: np.ndarray  # bool (S, S), before occlusion
    part: np.ndarray  # bool (S, S)
    difficult: bool = False


@dataclass
class _Sample:
    image: np.ndarray  # uint8 (S, S, 3)
    mask: np.ndarray  # uint8 (S, S): 0 bg, 1..20, 255 void
    objects: list[_Object]
    boxes: list[tuple[int, int, int, int]]  # VOC 1-based xmin, ymin, xmax, ymax
    jpeg_quality: int


def _tints(rng: np.random.Generator, evidence: float) -> list[float]:
    """Tint size (grey levels) of the image's objects in order, from its own
    generator (so the images' draws never change); all 0 without body evidence."""
    scales = rng.uniform(*_TINT_SPREAD, 4)  # at most 3 objects + 1 difficult
    return [float(evidence * BODY_TINT_LEVELS * s) for s in scales]


def _render(
    rng: np.random.Generator,
    size: int,
    primary: int,
    tints: list[float] | None = None,
    parts: bool = True,
) -> _Sample:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    image = _background(rng, size, yy, xx)

    n_objects = int(rng.choice([1, 2, 3], p=_OBJECT_COUNTS))
    others = [c for c in range(1, NUM_CLASSES + 1) if c != primary]
    classes = [primary, *(int(c) for c in rng.choice(others, n_objects - 1, replace=False))]
    objects: list[_Object] = []
    for k, c in enumerate(classes):
        obj = _place_object(rng, size, c, yy, xx, objects, scale=_BODY_SCALE)
        if obj is None and k > 0:
            continue  # no room left without hiding earlier objects; fewer objects is fine
        if obj is None:  # the first object always finds room in an empty image
            raise RuntimeError("toy generator could not place the first object")
        objects.append(obj)
    if rng.random() < 0.08:
        tiny = _place_object(
            rng, size, int(rng.integers(1, NUM_CLASSES + 1)), yy, xx, objects, scale=(0.18, 0.24)
        )
        if tiny is not None:
            tiny.difficult = True
            objects.append(tiny)

    instances = np.zeros((size, size), dtype=np.uint8)
    mask = np.zeros((size, size), dtype=np.uint8)
    for k, obj in enumerate(objects, start=1):
        _paint_body(rng, image, obj, tint=tints[k - 1] if tints else 0.0)
        if parts:
            _paint_part(image, obj)
        instances[obj.body] = k
        # VOC leaves difficult objects void in its segmentation masks.
        mask[obj.body] = IGNORE_INDEX if obj.difficult else obj.cls

    boxes = []
    for k, _obj in enumerate(objects, start=1):
        ys, xs = np.nonzero(instances == k)
        boxes.append((int(xs.min()) + 1, int(ys.min()) + 1, int(xs.max()) + 1, int(ys.max()) + 1))
    mask[_boundary(instances)] = IGNORE_INDEX

    sigma = rng.uniform(3.0, 10.0)
    noisy = image + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    _skip_v3_saliency_draws(rng, size, len(objects))
    return _Sample(
        image=np.clip(noisy + 0.5, 0, 255).astype(np.uint8),
        mask=mask,
        objects=objects,
        boxes=boxes,
        jpeg_quality=int(rng.integers(55, 96)),
    )


def _background(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    # A low-frequency colour field, desaturated so that the saturated part colours
    # stay the only strong colour cue.
    grid = rng.uniform(50, 210, (4, 4, 3))
    grey = grid.mean(axis=2, keepdims=True)
    grid = (grey + 0.35 * (grid - grey)).astype(np.uint8)
    field = Image.fromarray(grid).resize((size, size), Image.Resampling.BILINEAR)
    image = np.asarray(field, dtype=np.float32).copy()
    # Clutter: muted rectangles, bars and blobs at object-part scale, so small
    # structures alone do not mean "object".
    for _ in range(int(rng.integers(8, 18))):
        colour = rng.uniform(40, 220, 3)
        colour = colour.mean() + 0.3 * (colour - colour.mean())
        cy, cx = rng.uniform(0, size, 2)
        h, w = rng.uniform(0.02, 0.12, 2) * size
        kind = rng.integers(3)
        # Work in the item's bounding window only: most of the image is untouched.
        reach = 2 * max(h, w) + 2
        y0, y1 = max(0, int(cy - reach)), min(size, int(cy + reach) + 1)
        x0, x1 = max(0, int(cx - reach)), min(size, int(cx + reach) + 1)
        wy, wx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
        if kind == 0:
            region = (np.abs(wy) <= h) & (np.abs(wx) <= w)
        elif kind == 1:  # thin bar at a random angle
            theta = rng.uniform(0, np.pi)
            along = wx * np.cos(theta) + wy * np.sin(theta)
            across = -wx * np.sin(theta) + wy * np.cos(theta)
            region = (np.abs(along) <= 2 * w) & (np.abs(across) <= 1.0)
        else:
            region = (wy / h) ** 2 + (wx / w) ** 2 <= 1.0
        image[y0:y1, x0:x1][region] = colour
    return image


def _place_object(
    rng: np.random.Generator,
    size: int,
    cls: int,
    yy: np.ndarray,
    xx: np.ndarray,
    earlier: list[_Object],
    scale: tuple[float, float],
) -> _Object | None:
    """Sample a body + part for class ``cls`` that overlaps earlier objects only a
    little and never covers their parts; None if 30 tries fail."""
    taken = np.zeros((size, size), dtype=bool)
    parts = np.zeros((size, size), dtype=bool)
    for obj in earlier:
        taken |= obj.body
        parts |= _dilate(obj.part)
    for _ in range(30):
        diameter = rng.uniform(*scale) * size
        a = 0.5 * diameter  # along the body's axis
        b = 0.5 * diameter * rng.uniform(*_BODY_ASPECT)
        margin = 0.4 * diameter
        cy, cx = rng.uniform(margin, size - margin, 2)
        theta = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
        # A wobbly ellipse: real objects are blobs, not perfect conics.
        phi = np.arctan2(v, u)
        wobble = 1.0 + 0.12 * np.sin(int(rng.integers(2, 4)) * phi + rng.uniform(0, 2 * np.pi))
        body = (u / a) ** 2 + (v / b) ** 2 <= wobble**2
        area = int(body.sum())
        if area < 9 or (body & parts).any():
            continue
        if (body & taken).sum() > 0.15 * area:
            continue
        if any((body & obj.body).sum() > 0.25 * obj.body.sum() for obj in earlier):
            continue
        part = _part_mask(rng, cls, body, diameter, (cy, cx, theta, a), yy, xx)
        if part is None:
            continue
        return _Object(cls=cls, body=body, part=part)
    return None


def _part_mask(
    rng: np.random.Generator,
    cls: int,
    body: np.ndarray,
    diameter: float,
    axis: tuple[float, float, float, float],
    yy: np.ndarray,
    xx: np.ndarray,
) -> np.ndarray | None:
    """The class-specific part, at one end of the body's long axis (a head on a
    body), as far out as it fits inside the body."""
    shape, _ = part_style(cls)
    half = max(1.5, min(rng.uniform(*_PART_SCALE) * body.shape[0], 0.2 * diameter))
    cy, cx, theta, a = axis
    end = 1.0 if rng.random() < 0.5 else -1.0
    inner = _erode(body)
    for k in range(20):
        reach = max(0.0, a - half - 1.5 - 0.08 * a * k)  # step inwards until it fits
        py = cy + end * reach * np.sin(theta) + rng.uniform(-1, 1)
        px = cx + end * reach * np.cos(theta) + rng.uniform(-1, 1)
        dy, dx = yy - py, xx - px
        if shape == "square":
            part = (np.abs(dy) <= half) & (np.abs(dx) <= half)
        elif shape == "disc":
            part = dy**2 + dx**2 <= (half + 0.5) ** 2
        elif shape == "triangle":  # apex up
            part = (np.abs(dy) <= half) & (np.abs(dx) <= 0.5 * (dy + half) + 0.5)
        else:  # cross
            arm = max(1.0, half / 3)
            part = ((np.abs(dx) <= arm) & (np.abs(dy) <= half)) | (
                (np.abs(dy) <= arm) & (np.abs(dx) <= half)
            )
        # Keep the part one pixel inside the body so its shape is never cut by the
        # mask boundary (where the void border will be).
        if part.any() and not (part & ~inner).any():
            return part
    return None


def _paint_body(rng: np.random.Generator, image: np.ndarray, obj: _Object, tint: float) -> None:
    style = body_style(obj.cls)
    col_a, col_b = (np.asarray(c, dtype=np.float32) for c in _BODY_COLOURS[style])
    jitter = rng.uniform(-15, 15, 3).astype(np.float32)
    if tint:  # body evidence: a shift towards the class's own hue
        jitter = jitter + (tint * body_tint(obj.cls)).astype(np.float32)
    # Texture coordinates of the body pixels only (1-D), in the object's own frame.
    ys, xs = np.nonzero(obj.body)
    py, px = ys.astype(np.float32), xs.astype(np.float32)
    cy, cx = py.mean(), px.mean()
    theta = rng.uniform(0, np.pi)
    u = (px - cx) * np.cos(theta) + (py - cy) * np.sin(theta)
    v = -(px - cx) * np.sin(theta) + (py - cy) * np.cos(theta)
    period = rng.uniform(5.0, 7.0)
    phase = rng.uniform(0, period)
    if style == 0:  # stripes
        t = (np.sin(2 * np.pi * (v + phase) / period) > 0).astype(np.float32)
    elif style == 1:  # checkerboard
        t = ((np.floor((u + phase) / period) + np.floor((v + phase) / period)) % 2).astype(
            np.float32
        )
    elif style == 2:  # spots on a lattice
        du = (u + phase) % period - period / 2
        dv = (v + phase) % period - period / 2
        t = (du**2 + dv**2 <= (0.3 * period) ** 2).astype(np.float32)
    elif style == 3:  # radial gradient, light centre
        r = np.sqrt(u**2 + v**2)
        t = np.clip(r / (r.max() + 1e-6), 0, 1)
    else:  # concentric rings
        r = np.sqrt(u**2 + v**2)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (r + phase) / period)
    image[ys, xs] = col_a + t[:, None] * (col_b - col_a) + jitter


def _paint_part(image: np.ndarray, obj: _Object) -> None:
    _, colour = part_style(obj.cls)
    image[obj.part] = np.asarray(colour, dtype=np.float32)


def _shifted_views(a: np.ndarray) -> list[np.ndarray]:
    padded = np.pad(a, 1, mode="edge")
    h, w = a.shape
    return [
        padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)
    ]


def _dilate(a: np.ndarray) -> np.ndarray:
    return np.logical_or.reduce(_shifted_views(a))


def _erode(a: np.ndarray) -> np.ndarray:
    return np.logical_and.reduce(_shifted_views(a))


def _boundary(instances: np.ndarray) -> np.ndarray:
    """Pixels with a differently labelled 8-neighbour: a 2-pixel band straddling every
    boundary, like VOC's void outline."""
    out = np.zeros(instances.shape, dtype=bool)
    for view in _shifted_views(instances):
        out |= view != instances
    return out


def _skip_v3_saliency_draws(rng: np.random.Generator, size: int, n_objects: int) -> None:
    """Draw what generator version 3 drew for its saliency map, and discard it.

    Version 3 drew its (near perfect) saliency from the image's generator before
    the JPEG quality; drawing the same numbers keeps every image, mask and
    annotation byte-identical to version 3, so figures measured on it without
    saliency still hold (tests/test_toy_voc.py checks a digest of them).
    """
    rng.uniform(0.75, 1.0, n_objects)
    if rng.random() < 0.3:
        rng.uniform(0, size, 2)
        rng.uniform(0.05, 0.12)
        rng.uniform(0.2, 0.45)
    rng.normal(0, 4, (size, size))


def _annotation_xml(image_id: str, sample: _Sample, segmented: bool) -> str:
    h, w = sample.mask.shape
    objects = []
    for obj, (x0, y0, x1, y1) in zip(sample.objects, sample.boxes, strict=True):
        objects.append(
            "\t<object>\n"
            f"\t\t<name>{VOC_CLASSES[obj.cls - 1]}</name>\n"
            "\t\t<pose>Unspecified</pose>\n"
            "\t\t<truncated>0</truncated>\n"
            f"\t\t<difficult>{int(obj.difficult)}</difficult>\n"
            "\t\t<bndbox>\n"
            f"\t\t\t<xmin>{x0}</xmin>\n\t\t\t<ymin>{y0}</ymin>\n"
            f"\t\t\t<xmax>{x1}</xmax>\n\t\t\t<ymax>{y1}</ymax>\n"
            "\t\t</bndbox>\n"
            "\t</object>\n"
        )
    return (
        "<annotation>\n"
        "\t<folder>VOC2012</folder>\n"
        f"\t<filename>{image_id}.jpg</filename>\n"
        "\t<source>\n\t\t<database>ficklenet toy VOC</database>\n\t</source>\n"
        f"\t<size>\n\t\t<width>{w}</width>\n\t\t<height>{h}</height>\n"
        "\t\t<depth>3</depth>\n\t</size>\n"
        f"\t<segmented>{int(segmented)}</segmented>\n" + "".join(objects) + "</annotation>\n"
    )
