"""The one test-time inference path of a trained segmenter.

``ficklenet-evaluate`` (images with ground truth, scored) and ``ficklenet-predict``
(images without) both go through this module, so a prediction is the same pixels
whichever of the two wrote it:

- :func:`load_segmenter` rebuilds the segmenter from its ``ficklenet-segment``
  checkpoint, and :func:`on_device` puts it in eval mode on the process's device
  with the configured ``channels_last``/``compile``;
- :func:`data_settings` gives the dataset both read: the one stored in the
  checkpoint, with the ``data.<key>=...`` the command line changes
  (``conf/data/checkpoint.yaml``), or the one ``data=toy|voc`` states;
- :func:`image_probs` is DSRG's multi-scale test (Huang et al., CVPR 2018; official
  ``training/tools/test-ms.py``; docs/method.md, "Test"): the logits at each scale
  (and of the flipped image with ``flip``) are brought back to the image
  (:func:`ficklenet.geometry.grid_to_image`) and summed, and a softmax gives the
  probabilities (:func:`predict_probs`);
- :class:`TestCRF` refines them with the dense CRF and DSRG's test parameters
  (:data:`ficklenet.dsrg.crf.TEST_CRF`, scaled to each image) and takes the
  argmax, in a pool of worker processes (:func:`ficklenet.dsrg.crf.crf_pool`)
  while the caller goes on with the network, or inline with ``workers=0``. The
  pool and inline give the same pixels: the same function runs on the same arrays.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, get_type_hints

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ficklenet.config.schema import DataConfig
from ficklenet.dsrg.crf import TEST_CRF, crf_pool, default_workers, dense_crf
from ficklenet.geometry import grid_to_image, resize, scaled_size
from ficklenet.lit.processes import speed_up
from ficklenet.lit.segmenter import DSRGSegmenter

log = logging.getLogger(__name__)

__all__ = [
    "FROM_CHECKPOINT",
    "TestCRF",
    "crf_labels",
    "data_settings",
    "image_probs",
    "load_segmenter",
    "on_device",
    "predict_probs",
]


def load_segmenter(ckpt: str | Path) -> DSRGSegmenter:
    """The segmenter of a ``ficklenet-segment`` checkpoint (``segmenter.ckpt``), on
    the CPU; any other file is refused with a message that names it."""
    return DSRGSegmenter.from_checkpoint(ckpt, key="segmenter.ckpt")


#: The mark of a data key whose value is the checkpoint's (conf/data/checkpoint.yaml).
FROM_CHECKPOINT = "${from_checkpoint:}"


def data_settings(data: DictConfig | None, stored: Any) -> DictConfig:
    """The data settings evaluate and predict run with (typed by ``DataConfig``).

    ``data`` is the app's ``data`` node: with ``data=checkpoint`` (their default)
    every key the command line left alone is marked :data:`FROM_CHECKPOINT` and
    takes its value from ``stored``, the checkpoint's own data settings (a config
    or a dict), while the keys given (``data.root=...``) keep theirs; ``None``
    takes ``stored`` whole; a node without marks (``data=toy|voc``) is returned as
    it is. Keys of ``stored`` the schema no longer has are left out (and logged).
    """
    if data is not None and not _marked(data):
        return data
    if OmegaConf.is_config(stored):
        stored = OmegaConf.to_container(stored, resolve=True, enum_to_str=True)
    stored_values = dict(stored)
    known = _known(stored_values, DataConfig)
    unknown = sorted(dict(_leaves(stored_values)).keys() - dict(_leaves(known)).keys())
    if unknown:
        log.info("segmenter.ckpt's data settings hold keys no longer used: %s", unknown)
    merged = OmegaConf.merge(OmegaConf.structured(DataConfig), known)
    raw = OmegaConf.to_container(data, resolve=False) if data is not None else {}
    for key, mark in _leaves(raw):
        if mark != FROM_CHECKPOINT:  # given on the command line
            value = OmegaConf.select(data, key)
            if OmegaConf.is_config(value):
                value = OmegaConf.to_container(value, resolve=True)
            OmegaConf.update(merged, key, value, merge=False)
    return merged


def _leaves(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf of a nested dict."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _marked(data: DictConfig) -> bool:
    raw = OmegaConf.to_container(data, resolve=False)
    return any(value == FROM_CHECKPOINT for _, value in _leaves(raw))


def _known(values: dict[str, Any], cls: type) -> dict[str, Any]:
    """``values`` without the keys that schema ``cls`` (and its nested ones) lacks."""
    hints = get_type_hints(cls)
    out = {}
    for key, value in values.items():
        if key not in hints:
            continue
        nested = isinstance(value, dict) and dataclasses.is_dataclass(hints[key])
        out[key] = _known(value, hints[key]) if nested else value
    return out


def on_device(model: DSRGSegmenter, device: torch.device | str, trainer_cfg: Any) -> nn.Module:
    """``model`` in eval mode on ``device``, with ``trainer.channels_last`` and
    ``trainer.compile`` applied (:func:`ficklenet.lit.processes.speed_up`)."""
    return speed_up(model.eval().to(device), trainer_cfg)


@torch.no_grad()
def predict_probs(
    model: nn.Module, images: torch.Tensor, scales: Sequence[float], flip: bool
) -> torch.Tensor:
    """Softmax of the summed logits over ``scales`` (and flips), at the input size.

    ``model`` maps normalised images to logits on its output grid and has an
    ``output_stride``; ``images``: normalised (B, 3, H, W); returns float32
    (B, K, H, W) on the images' device.
    """
    size = tuple(images.shape[-2:])
    stride = model.output_stride
    total: torch.Tensor | None = None
    for scale in scales:
        x = resize(images, scaled_size(size, scale))
        for flipped in (False, True) if flip else (False,):
            inp = x.flip(-1) if flipped else x
            logits = grid_to_image(
                model(inp).float(), size, stride, input_size=x.shape[-2:], flipped=flipped
            )
            total = logits if total is None else total + logits
    assert total is not None
    return torch.softmax(total, dim=1)


def image_probs(
    model: nn.Module,
    images: torch.Tensor,
    scales: Sequence[float],
    flip: bool,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> torch.Tensor:
    """:func:`predict_probs` under ``autocast`` (``fabric.autocast``: the trainer's
    precision, as in training), as float32 on the CPU: (B, K, H, W)."""
    with autocast():
        return predict_probs(model, images, scales, flip).float().cpu()


def crf_labels(image: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """The argmax of the test-time dense CRF (:data:`TEST_CRF`) of ``probs``
    (K, h, w) on ``image`` (uint8 (h, w, 3)): (h, w) labels."""
    return dense_crf(image, probs, **dataclasses.asdict(TEST_CRF)).argmax(axis=0)


class TestCRF:
    """The test-time CRF of every image, in ``workers`` processes while the caller
    goes on (``None``: the CPUs available, at most 8; 0: inline), results in the
    order submitted.

    ``submit(item, image, probs)`` hands an image over; ``ready()`` yields
    ``(item, labels)`` for the images done, oldest first: with a pool it keeps a
    backlog of ``2·workers + batch_size`` in flight and waits only beyond it,
    ``ready(wait=True)`` waits for all. ``labels`` is :func:`crf_labels`'s, or None
    when ``enabled`` is false (the caller keeps the network's argmax). Used as a
    context manager: the pool stops on leaving, work not collected is cancelled.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, enabled: bool, workers: int | None = None, batch_size: int = 1) -> None:
        self.enabled = bool(enabled)
        self.workers = default_workers() if workers is None else int(workers)
        self.backlog = 2 * max(self.workers, 1) + int(batch_size)
        self._pool: ProcessPoolExecutor | None = None
        if self.enabled and self.workers > 0:
            self._pool = crf_pool(self.workers)
        self._pending: deque[tuple[Any, Future | np.ndarray | None]] = deque()

    def submit(self, item: Any, image: np.ndarray, probs: np.ndarray) -> None:
        if not self.enabled:
            self._pending.append((item, None))
        elif self._pool is None:
            self._pending.append((item, crf_labels(image, probs)))
        else:
            self._pending.append((item, self._pool.submit(crf_labels, image, probs)))

    def ready(self, wait: bool = False) -> Iterator[tuple[Any, np.ndarray | None]]:
        while self._pending and (wait or self._pool is None or len(self._pending) > self.backlog):
            item, result = self._pending.popleft()
            yield item, result.result() if isinstance(result, Future) else result

    def close(self) -> None:
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> TestCRF:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
