"""Look inside a finished ``ficklenet-pipeline`` run, image by image.

Used by ``notebooks/inspect_run.ipynb``; everything is recomputed with the
library's own functions from what the run wrote::

    view = load_run("runs/pipeline/toy")
    for image_id in view.image_ids(3):
        view.figure(image_id, n_maps=8)
    view.results_table()

For one image of the localize split (:meth:`RunView.inspect`):

- the N individual stochastic maps (max-normalised, per class) and their
  aggregate, recomputed with the run's classifier and
  :func:`~ficklenet.localization.sample_maps` (``return_all=True``) at the first
  localization scale, without flip, drawing from the generator the localize
  stage seeded for that image and pass
  (:func:`~ficklenet.lit.localizer.image_seed`) — a small N for a look, not the
  run's N;
- the run's own aggregate (``localize/maps/<id>.npz``, all scales, the run's N)
  and seeds (``localize/seeds/<id>.png``);
- DSRG's grown seeds: the trained segmenter's
  :meth:`~ficklenet.lit.segmenter.DSRGSegmenter.dsrg_step` on the image and its
  seeds (floored softmax → dense CRF → :func:`~ficklenet.dsrg.growing.grow`), at
  the network's output resolution;
- the prediction: ``evaluate_crf/predictions/<id>.png`` or
  ``evaluate/predictions/<id>.png`` when the evaluated split holds the image,
  otherwise the segmenter's argmax at image size.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ficklenet.checkpoints import checkpoint_path
from ficklenet.data.datamodule import make_reader
from ficklenet.data.transforms import EvalTransform
from ficklenet.data.voc import VOCReader, read_label_png
from ficklenet.files import read_json
from ficklenet.geometry import grid_to_image, resize, scaled_size
from ficklenet.lit.classifier import FickleClassifier
from ficklenet.lit.localizer import image_seed, output_paths
from ficklenet.lit.segmenter import DSRGSegmenter
from ficklenet.localization import sample_maps
from ficklenet.tasks.pipeline import results, results_table
from ficklenet.tasks.run_record import RECORD

__all__ = ["FormulaMaps", "ImageInspection", "RunView", "load_run", "plot_formula_maps"]


@dataclass
class ImageInspection:
    """Everything shown for one image; maps are float32 in [0, 1]."""

    image_id: str
    image: np.ndarray  # uint8 (H, W, 3)
    classes: list[int]  # VOC class indices (1..20) of the image's labels
    maps: np.ndarray  # (N, K, h, w): the individual stochastic maps, feature grid
    aggregate: np.ndarray  # (K, h, w): their aggregate (the run's localize.aggregate)
    run_maps: np.ndarray | None  # (K, H, W): the run's stored aggregate, or None
    seeds: np.ndarray  # uint8 (H, W), 255 unlabelled
    crf: np.ndarray  # (21, h', w'): the segmenter's CRF-refined probabilities
    grown: np.ndarray  # uint8 (h', w'): the seeds after DSRG's region growing
    grid_seeds: np.ndarray  # uint8 (h', w'): the seeds on the output grid
    map_input_size: tuple[int, int]  # (H', W'): the resized image the maps were made on
    map_stride: int  # the classifier's output stride
    grid_stride: int  # the segmenter's output stride
    prediction: np.ndarray  # uint8 (H, W)
    prediction_source: str  # the file it came from, or "segmenter"
    truth: np.ndarray | None  # uint8 (H, W) ground truth, when the split has it


class RunView:
    """A pipeline run directory with lazily loaded models.

    Args:
        run_dir: the directory ``ficklenet-pipeline run_dir=...`` wrote (holding
            ``classify/``, ``localize/``, ``segment/`` and ``evaluate*/``).
        device: where the models run (CPU by default).
    """

    def __init__(self, run_dir: str | Path, device: str | torch.device = "cpu") -> None:
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        loc = self.run_dir / "localize"
        missing = [
            str(p) for p in (loc / "config.yaml", loc / RECORD, loc / "seeds") if not p.exists()
        ]
        if missing:
            raise FileNotFoundError(
                f"{self.run_dir} is not a finished pipeline run (missing {', '.join(missing)}); "
                "run ficklenet-pipeline hydra.run.dir=... first."
            )
        cfg = OmegaConf.load(loc / "config.yaml")
        assert isinstance(cfg, DictConfig)
        self.localize_cfg: DictConfig = cfg
        # What the maps and seeds were made from (ficklenet.tasks.run_record).
        self.record: dict[str, Any] = read_json(loc / RECORD)

    # ------------------------------------------------------------ run contents
    @functools.cached_property
    def reader(self) -> VOCReader:
        """The localize split's reader, with the run's data settings."""
        return make_reader(self.localize_cfg.data, self.localize_cfg.localize.split)

    @functools.cached_property
    def classifier(self) -> FickleClassifier:
        """The run's classifier, with the dropout rate localization used."""
        model = FickleClassifier.from_checkpoint(self.record["inputs"]["classifier_ckpt"])
        p = self.localize_cfg.model.p
        if p is not None:
            model.head.p = float(p)
        return model.eval().to(self.device)

    @functools.cached_property
    def segmenter(self) -> DSRGSegmenter:
        """The trained segmenter (``segment/checkpoints/last.ckpt``), CRF in-process."""
        ckpt = checkpoint_path(self.run_dir / "segment")
        model = DSRGSegmenter.from_checkpoint(ckpt)
        model.crf_workers = 0
        return model.eval().to(self.device)

    def image_ids(self, n: int | None = None) -> list[str]:
        """The first ``n`` ids (sorted) of the localize split that have seeds."""
        ids = sorted(i for i in self.reader.ids if output_paths(self._loc, i)[1].is_file())
        return ids if n is None else ids[:n]

    def results(self) -> dict[str, Any]:
        """The run's ``metrics.json`` (each stage's metrics), or read from the stages."""
        path = self.run_dir / "metrics.json"
        return read_json(path) if path.is_file() else results(self.run_dir)

    def results_table(self) -> list[tuple[str, str]]:
        """The headline figures (name, %) as the pipeline prints them."""
        return results_table(self.results())

    @property
    def _loc(self) -> Path:
        return self.run_dir / "localize"

    # ------------------------------------------------------------ per image
    def _normalised(self, image_id: str) -> tuple[np.ndarray, torch.Tensor]:
        rgb = self.reader.image(image_id)
        (image,) = EvalTransform(None)(rgb)
        return rgb, image.to(self.device)

    @torch.no_grad()
    def stochastic_maps(
        self, image_id: str, n_maps: int, formula: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N, K, h, w) individual maps and their (K, h, w) aggregate, on the
        feature grid, at the first localization scale without flip; ``formula``
        replaces the run's (the masks are the same draws either way)."""
        opt = self.localize_cfg.localize
        _, image = self._normalised(image_id)
        classes = [int(c) - 1 for c in self.reader.labels(image_id)]
        scaled = resize(image[None], self.map_input_size(image_id))
        x = self.classifier.features(scaled)
        gen = torch.Generator(device=x.device)
        gen.manual_seed(image_seed(int(self.localize_cfg.seed), image_id, 0, False))
        aggregate, every = sample_maps(
            self.classifier.head,
            x,
            classes,
            n=int(n_maps),
            generator=gen,
            formula=formula or opt.formula,
            chunk=int(opt.chunk),
            memory_mb=float(opt.memory_mb),
            aggregate=opt.aggregate,
            return_all=True,
        )
        return every.float().cpu().numpy(), aggregate.float().cpu().numpy()

    def map_input_size(self, image_id: str) -> tuple[int, int]:
        """The image's size at the first localization scale (what the maps saw)."""
        h, w = self.reader.image(image_id).shape[:2]
        return scaled_size((h, w), float(self.localize_cfg.localize.scales[0]), minimum=8)

    def run_seeds(self, image_id: str) -> np.ndarray:
        """The run's seeds (uint8 (H, W), 255 unlabelled)."""
        return read_label_png(output_paths(self._loc, image_id)[1])

    def run_maps(self, image_id: str) -> np.ndarray | None:
        """The run's stored aggregate (K, H, W), or None when not written."""
        path = output_paths(self._loc, image_id)[0]
        if not path.is_file():
            return None
        with np.load(path) as data:
            return data["maps"].astype(np.float32)

    @torch.no_grad()
    def grown_seeds(self, image_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(CRF probabilities (21, h', w'), seeds on the output grid, grown seeds),
        from the trained segmenter's DSRG step on the image and its seeds."""
        _, image = self._normalised(image_id)
        seeds = torch.from_numpy(self.run_seeds(image_id).astype(np.int64)).to(self.device)
        labels = torch.from_numpy(self.reader.label_vector(image_id)).to(self.device)
        out = self.segmenter.dsrg_step(image[None], seeds[None], labels[None])
        return (
            out.crf[0].float().cpu().numpy(),
            out.seeds[0].cpu().numpy().astype(np.uint8),
            out.grown[0].cpu().numpy().astype(np.uint8),
        )

    @torch.no_grad()
    def prediction(self, image_id: str) -> tuple[np.ndarray, str]:
        """The evaluated prediction when the run has one for the image (CRF first),
        else the segmenter's argmax at image size; and where it came from."""
        for stage in ("evaluate_crf", "evaluate"):
            path = self.run_dir / stage / "predictions" / f"{image_id}.png"
            if path.is_file():
                return read_label_png(path), str(path.relative_to(self.run_dir))
        _, image = self._normalised(image_id)
        logits = self.segmenter.predict_logits(image[None])
        return logits[0].argmax(0).cpu().numpy().astype(np.uint8), "segmenter"

    def inspect(self, image_id: str, n_maps: int = 8) -> ImageInspection:
        """All of the above for one image."""
        rgb = self.reader.image(image_id)
        maps, aggregate = self.stochastic_maps(image_id, n_maps)
        crf, grid_seeds, grown = self.grown_seeds(image_id)
        prediction, source = self.prediction(image_id)
        return ImageInspection(
            image_id=image_id,
            image=rgb,
            classes=[int(c) for c in self.reader.labels(image_id)],
            maps=maps,
            aggregate=aggregate,
            run_maps=self.run_maps(image_id),
            seeds=self.run_seeds(image_id),
            crf=crf,
            grown=grown,
            grid_seeds=grid_seeds,
            map_input_size=self.map_input_size(image_id),
            map_stride=self.classifier.backbone.output_stride,
            grid_stride=self.segmenter.output_stride,
            prediction=prediction,
            prediction_source=source,
            truth=self.reader.mask(image_id) if self.reader.has_mask(image_id) else None,
        )

    def figure(self, image_id: str, n_maps: int = 8) -> Any:
        """A matplotlib figure of :meth:`inspect`'s result (see :func:`plot_inspection`)."""
        return plot_inspection(self.inspect(image_id, n_maps))

    def formula_maps(self, image_id: str, n_maps: int = 8) -> FormulaMaps:
        """The same N masks' maps under every formula (:class:`FormulaMaps`)."""
        from ficklenet.choices import Formula

        maps = {str(f): self.stochastic_maps(image_id, n_maps, str(f)) for f in Formula}
        return FormulaMaps(
            image_id=image_id,
            image=self.reader.image(image_id),
            classes=[int(c) for c in self.reader.labels(image_id)],
            maps={f: every for f, (every, _) in maps.items()},
            aggregate={f: agg for f, (_, agg) in maps.items()},
            map_input_size=self.map_input_size(image_id),
            map_stride=self.classifier.backbone.output_stride,
        )

    def formula_figure(self, image_id: str, n_maps: int = 8) -> Any:
        """:func:`plot_formula_maps` of :meth:`formula_maps`."""
        return plot_formula_maps(self.formula_maps(image_id, n_maps))


@dataclass
class FormulaMaps:
    """One image's N stochastic maps (the same masks) under each formula."""

    image_id: str
    image: np.ndarray  # uint8 (H, W, 3)
    classes: list[int]
    maps: dict[str, np.ndarray]  # formula -> (N, K, h, w), each map max-normalised
    aggregate: dict[str, np.ndarray]  # formula -> (K, h, w)
    map_input_size: tuple[int, int]
    map_stride: int

    def variation(self) -> dict[str, float]:
        """How much the maps move from mask to mask, per formula: the mean over
        the feature cells (and classes) of the standard deviation over the N
        max-normalised maps. 0 when every mask gives the same map."""
        return {f: float(m.std(axis=0).mean()) for f, m in self.maps.items()}


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> RunView:
    """A :class:`RunView` of ``run_dir``."""
    return RunView(run_dir, device)


def plot_inspection(ins: ImageInspection) -> Any:
    """Two rows: the N stochastic maps (max over the image's classes, over the
    image); then image, aggregate of those N, the run's aggregate, seeds, grown
    seeds (output grid, nearest-upsampled), prediction and ground truth."""
    import matplotlib.pyplot as plt

    from ficklenet.data.classes import VOC_CLASSES
    from ficklenet.viz import label_overlay, map_overlay

    size = ins.image.shape[:2]

    def on_image(maps: np.ndarray) -> np.ndarray:
        grid = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))
        return grid_to_image(grid, size, ins.map_stride, input_size=ins.map_input_size).numpy()

    names = ", ".join(VOC_CLASSES[c - 1] for c in ins.classes) or "(no labels)"
    bottom: list[tuple[str, np.ndarray]] = [
        ("image", ins.image),
        (f"aggregate of {len(ins.maps)}", map_overlay(ins.image, on_image(ins.aggregate))),
    ]
    if ins.run_maps is not None:
        bottom.append(("run's aggregate", map_overlay(ins.image, ins.run_maps)))
    grown = grid_to_image(torch.from_numpy(ins.grown), size, ins.grid_stride, mode="nearest")
    bottom += [
        ("seeds", label_overlay(ins.image, ins.seeds)),
        ("grown seeds (DSRG)", label_overlay(ins.image, grown.numpy())),
        (f"prediction ({ins.prediction_source})", label_overlay(ins.image, ins.prediction)),
    ]
    if ins.truth is not None:
        bottom.append(("ground truth", label_overlay(ins.image, ins.truth)))
    top = [(f"map {i + 1}", map_overlay(ins.image, on_image(m))) for i, m in enumerate(ins.maps)]
    cols = max(len(top), len(bottom))
    fig, axes = plt.subplots(2, cols, figsize=(1.9 * cols, 4.4), squeeze=False)
    for row, panels in enumerate((top, bottom)):
        for col in range(cols):
            ax = axes[row][col]
            ax.axis("off")
            if col < len(panels):
                title, picture = panels[col]
                ax.imshow(picture)
                ax.set_title(title, fontsize=7)
    fig.suptitle(f"{ins.image_id}: {names}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_formula_maps(fm: FormulaMaps) -> Any:
    """One row per formula: the N individual maps (max over the image's classes)
    over the image, then their union (the aggregate); the title gives each
    formula's mask-to-mask variation (:meth:`FormulaMaps.variation`)."""
    import matplotlib.pyplot as plt

    from ficklenet.data.classes import VOC_CLASSES
    from ficklenet.viz import map_overlay

    size = fm.image.shape[:2]

    def on_image(maps: np.ndarray) -> np.ndarray:
        grid = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))
        return grid_to_image(grid, size, fm.map_stride, input_size=fm.map_input_size).numpy()

    variation = fm.variation()
    n = max(len(m) for m in fm.maps.values())
    fig, axes = plt.subplots(len(fm.maps), n + 1, figsize=(1.7 * (n + 1), 2.0 * len(fm.maps)))
    axes = np.atleast_2d(axes)
    for row, (formula, maps) in enumerate(fm.maps.items()):
        panels = [(f"mask {i + 1}", m) for i, m in enumerate(maps)]
        panels.append(("union", fm.aggregate[formula]))
        for col, (title, m) in enumerate(panels):
            ax = axes[row][col]
            ax.axis("off")
            ax.imshow(map_overlay(fm.image, on_image(m)))
            ax.set_title(title, fontsize=7)
        axes[row][0].text(
            -0.1,
            0.5,
            f"{formula}\nvariation {variation[formula]:.3f}",
            fontsize=7,
            transform=axes[row][0].transAxes,
            ha="right",
            va="center",
        )
    names = ", ".join(VOC_CLASSES[c - 1] for c in fm.classes) or "(no labels)"
    fig.suptitle(f"{fm.image_id}: {names}: the same {n} masks under each formula", fontsize=9)
    fig.tight_layout()
    return fig
