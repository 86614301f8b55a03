"""Fully connected CRF (Krähenbühl & Koltun, 2011) on pydensecrf, as used by DSRG.

DSRG (Huang et al., CVPR 2018, Sec. 3.2–3.3) refines the network's softmax with a
dense CRF twice: during training, at the output resolution, to get ``Q`` for the
seed growing and for the boundary (constrain-to-boundary) loss; at test time on
the full-resolution image as post-processing. Both use Potts compatibilities, a
Gaussian kernel (weight 3, σxy 3) and a bilateral kernel (weight 10, σxy 80,
σrgb 13) and 10 mean-field iterations; they differ as follows in the official
release (``CRF/krahenbuhl2013/CRF.py``, ``pylayers.py`` ``CRFLayer``,
``training/tools/test-ms.py``):

* test (:data:`TEST_CRF`, the defaults of :func:`dense_crf`): unary energy
  ``−log p`` with ``p`` clipped below at 1e-5, σxy 80 and 3 on the full image;
* training (:data:`TRAIN_CRF`): ``p`` clipped below at 1e-4, and the unary energy
  handed to the CRF is the *negative probability* ``−p`` itself, not ``−log p``
  (``CRFLayer`` passes the clipped softmax as ``unary`` and ``CRF()`` calls
  ``set_unary_energy(-unary)``). docs/method.md's "unary −p (clipped ≥ 1e-4)"
  is therefore literal; ``unary="neg_log_prob"`` gives the other reading. The
  spatial σ's are divided by the scale factor 12 (the official code's, for the
  41×41 map of a 321 crop at output stride 8), and the output ``Q`` is clipped
  below at 1e-4 and renormalised.

Kernel widths follow the image size. The official σxy are pixel distances set
for VOC: test images are at most 500 pixels a side (most have a 500-pixel side),
and the training map is 41 cells a side seen through σ/12, i.e. σ for a
41·12 = 492-pixel side. A σ that spans a sixth of a VOC image spans the whole of
a 96-pixel toy image and blurs every object into its background, so here each
preset states the side its σ's were set for (``reference_side``: 500 for test,
492 for training) and :func:`dense_crf` multiplies them by the longer side of the
image it is given over that reference: the official values at VOC size, the same
fraction of the image at any other size (``docs/design.md``, "Dense CRF").

Fields of :class:`CRFParams` are the keyword arguments of :func:`dense_crf`.

pydensecrf holds the GIL for the whole of ``inference`` (its Cython wrapper has
no ``nogil`` section: a pure-Python thread makes almost no progress while it
runs), so threads do not run CRFs in parallel; :func:`dense_crf_batch` uses a
pool of worker *processes*, created on first use and kept for later calls (the
official layer likewise kept a ``multiprocessing.Pool``). The pool uses the
``forkserver`` start method where available (``spawn`` elsewhere) so that
workers never inherit a CUDA context or the parent's thread pools; scripts that
use it need the usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ficklenet.choices import CRFBackend, Unary


@dataclass(frozen=True)
class CRFParams:
    """Dense CRF parameters; the defaults are DSRG's test-time ones.

    Attributes:
        unary: ``"neg_log_prob"`` → unary energy ``−log p``; ``"neg_prob"`` →
            ``−p`` (the official training CRF).
        min_prob: ``p`` is clipped below at this before the unary is formed
            (test: 1e-5 as in ``test-ms.py``; training: 1e-4).
        gauss_sxy: σxy of the Gaussian (smoothness) kernel, in pixels of an image
            whose longer side is ``reference_side``.
        gauss_compat: Potts weight of the Gaussian kernel.
        bilateral_sxy: σxy of the bilateral (appearance) kernel, likewise.
        bilateral_srgb: σrgb of the bilateral kernel.
        bilateral_compat: Potts weight of the bilateral kernel.
        iterations: mean-field iterations.
        reference_side: the longer image side the σxy were set for; on an image
            whose longer side is L both σxy are multiplied by L / reference_side.
            None uses them as given, in pixels of any image.
        out_min_prob: if set, ``Q`` is clipped below at this and renormalised
            (the official training layers do so with 1e-4).
    """

    unary: Unary | str = Unary.neg_log_prob
    min_prob: float = 1e-5
    gauss_sxy: float = 3.0
    gauss_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0
    iterations: int = 10
    reference_side: float | None = 500.0
    out_min_prob: float | None = None


#: DSRG's test-time CRF (``test-ms.py --smooth``), on the full-resolution image.
TEST_CRF = CRFParams()

#: DSRG's training CRF (``CRFLayer`` / ``UpdateSeedLayer3.refinement``) on the
#: output-resolution map: σ/12 on the 41-cell map of a 321 crop, i.e. σ set for a
#: 41·12-pixel side.
TRAIN_CRF = CRFParams(unary="neg_prob", min_prob=1e-4, reference_side=41 * 12.0, out_min_prob=1e-4)


def kernel_scale(params: CRFParams, height: int, width: int) -> float:
    """The factor :func:`dense_crf` applies to both σxy on an ``height × width`` image."""
    if params.reference_side is None:
        return 1.0
    if params.reference_side <= 0:
        raise ValueError(f"reference_side must be positive (or None), got {params.reference_side}")
    return max(height, width) / float(params.reference_side)


def dense_crf(image: np.ndarray, probs: np.ndarray, **params: Any) -> np.ndarray:
    """Refine ``probs`` with a dense CRF on ``image``.

    Args:
        image: uint8 (h, w, 3) image (any channel order: σrgb is the same for
            all three channels).
        probs: float (K, h, w) probabilities summing to 1 over K.
        **params: fields of :class:`CRFParams`; unset ones take the test-time
            defaults. ``dense_crf(img, p, **dataclasses.asdict(TRAIN_CRF))`` gives the
            training CRF.

    Returns:
        Q, float32 (K, h, w), the mean-field marginals (sum to 1 over K).
    """
    return _dense_crf(image, probs, CRFParams(**params))


def _pydensecrf() -> Any:
    """pydensecrf's ``densecrf`` module, imported when a CRF first runs: a machine
    without it (it has no wheel for some Pythons) can still train with the torch
    CRF and evaluate without the test-time CRF."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as err:
        raise ImportError(
            "the dense CRF needs pydensecrf (PyPI: pydensecrf2), which is not installed "
            "in this environment: `pip install pydensecrf2` (`make install` does). "
            "Without it, train with segmenter.crf_backend=torch and leave the test-time "
            "CRF off (crf=false for ficklenet-evaluate and ficklenet-predict, a pipeline "
            "without its evaluate_crf stage)."
        ) from err
    return dcrf


def _dense_crf(image: np.ndarray, probs: np.ndarray, params: CRFParams) -> np.ndarray:
    image = np.asarray(image)
    probs = np.asarray(probs)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 (h, w, 3), got {image.dtype} {image.shape}")
    if probs.ndim != 3 or probs.shape[1:] != image.shape[:2]:
        raise ValueError(f"probs must be (K, h, w) with (h, w) = {image.shape[:2]}")
    k, h, w = probs.shape
    p = np.maximum(probs.astype(np.float32), np.float32(params.min_prob))
    unary = -np.log(p) if Unary.parse(params.unary, "unary") == Unary.neg_log_prob else -p

    factor = kernel_scale(params, h, w)
    crf = _pydensecrf().DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(np.ascontiguousarray(unary.reshape(k, h * w), dtype=np.float32))
    crf.addPairwiseGaussian(sxy=params.gauss_sxy * factor, compat=params.gauss_compat)
    crf.addPairwiseBilateral(
        sxy=params.bilateral_sxy * factor,
        srgb=params.bilateral_srgb,
        rgbim=np.require(image, requirements=["C", "W"]),  # pydensecrf needs writable
        compat=params.bilateral_compat,
    )
    q = np.asarray(crf.inference(params.iterations), dtype=np.float32).reshape(k, h, w)
    if params.out_min_prob is not None:
        q = np.maximum(q, np.float32(params.out_min_prob))
        q /= q.sum(axis=0, keepdims=True)
    return q


def _crf_job(args: tuple[np.ndarray, np.ndarray, CRFParams]) -> np.ndarray:
    return _dense_crf(*args)


_POOLS: dict[int, ProcessPoolExecutor] = {}


def crf_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool for CRF work whose workers exit when this process dies.

    ``forkserver`` (``spawn`` where unavailable): no fork of a process holding CUDA
    or OpenMP state. A worker polls the parent's pid once a second, so a parent
    killed outright (SIGKILL, an out-of-memory kill) leaves no orphans holding
    cores and its output pipes.
    """
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context(method),
        initializer=_exit_with_parent,
        initargs=(os.getpid(),),
    )


def _exit_with_parent(parent: int) -> None:
    def watch() -> None:
        while _alive(parent):
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs: a killed parent stays a zombie until its own parent
    reaps it (which may itself wait for our pipes to close), so Linux's process
    state is read too."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): signal 0 is the whole check
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _pool(workers: int) -> ProcessPoolExecutor:
    pool = _POOLS.get(workers)
    if pool is None:
        pool = crf_pool(workers)
        _POOLS[workers] = pool
    return pool


def shutdown_pools() -> None:
    """Stop the worker processes of :func:`dense_crf_batch` (also done at exit)."""
    for pool in _POOLS.values():
        pool.shutdown(wait=True, cancel_futures=True)
    _POOLS.clear()


atexit.register(shutdown_pools)


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor; avoid importing torch in the workers
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def dense_crf_batch(
    images: Any,
    probs: Any,
    params: CRFParams | Mapping[str, Any] = TEST_CRF,
    workers: int = 0,
) -> np.ndarray:
    """:func:`dense_crf` over a batch, in parallel worker processes.

    Args:
        images: uint8 (B, h, w, 3), numpy or torch.
        probs: float (B, K, h, w), numpy or torch (moved to the CPU).
        params: a :class:`CRFParams` (e.g. :data:`TRAIN_CRF`) or a mapping of its
            fields.
        workers: number of worker processes; 0 runs serially in this process. A
            pool is created on the first call with a given count and reused.

    Returns:
        float32 (B, K, h, w) numpy array of the refined marginals.
    """
    if isinstance(params, Mapping):
        params = replace(TEST_CRF, **params)
    images = _to_numpy(images)
    probs = _to_numpy(probs)
    if images.ndim != 4 or probs.ndim != 4 or len(images) != len(probs):
        raise ValueError(f"need (B, h, w, 3) and (B, K, h, w), got {images.shape}, {probs.shape}")
    jobs = [(images[i], probs[i], params) for i in range(len(images))]
    if workers <= 0 or len(jobs) <= 1:
        results = [_crf_job(job) for job in jobs]
    else:
        chunksize = max(1, -(-len(jobs) // workers))
        try:
            results = list(_pool(workers).map(_crf_job, jobs, chunksize=chunksize))
        except BrokenProcessPool:  # a worker died (e.g. killed): start a fresh pool once
            _POOLS.pop(workers, None)
            results = list(_pool(workers).map(_crf_job, jobs, chunksize=chunksize))
    return np.stack(results) if results else np.empty((0, *probs.shape[1:]), np.float32)


def default_workers() -> int:
    """A worker count for :func:`dense_crf_batch`: the CPUs this process may use, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(8, cpus)


__all__ = [
    "CRFBackend",
    "CRFParams",
    "TEST_CRF",
    "TRAIN_CRF",
    "dense_crf",
    "dense_crf_batch",
    "default_workers",
    "kernel_scale",
    "shutdown_pools",
]
