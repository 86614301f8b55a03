"""ficklenet.dsrg.crf_torch: the training CRF's mean field with exact dense kernels,
against a literal per-pixel implementation and against pydensecrf (the reference)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ficklenet.dsrg.crf import TEST_CRF, TRAIN_CRF, CRFParams, dense_crf, kernel_scale
from ficklenet.dsrg.crf_torch import MAX_CELLS, dense_crf_torch
from tests.conftest import gpu_only
from tests.test_segmenter import compose_segment, square_batch


def literal_crf(image: np.ndarray, probs: np.ndarray, params: CRFParams) -> np.ndarray:
    """Krähenbühl & Koltun's mean field written out pixel pair by pixel pair."""
    k, h, w = probs.shape
    cells = [(y, x) for y in range(h) for x in range(w)]
    f = kernel_scale(params, h, w)
    sg, sb, sc = params.gauss_sxy * f, params.bilateral_sxy * f, params.bilateral_srgb

    def kernels(i: int, j: int) -> tuple[float, float]:
        (yi, xi), (yj, xj) = cells[i], cells[j]
        d2 = (xi - xj) ** 2 + (yi - yj) ** 2
        c2 = sum((float(image[yi, xi, c]) - float(image[yj, xj, c])) ** 2 for c in range(3))
        return math.exp(-d2 / (2 * sg * sg)), math.exp(-d2 / (2 * sb * sb) - c2 / (2 * sc * sc))

    n = len(cells)
    kg = [[0.0] * n for _ in range(n)]
    kb = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            kg[i][j], kb[i][j] = kernels(i, j)
    row_g = [sum(r) for r in kg]
    row_b = [sum(r) for r in kb]
    unary = []
    for y, x in cells:
        ps = [max(float(probs[label, y, x]), params.min_prob) for label in range(k)]
        unary.append([-math.log(v) if params.unary == "neg_log_prob" else -v for v in ps])

    def softmax(values: list[float]) -> list[float]:
        top = max(values)
        e = [math.exp(v - top) for v in values]
        return [v / sum(e) for v in e]

    q = [softmax([-u for u in unary[i]]) for i in range(n)]
    for _ in range(params.iterations):
        new = []
        for i in range(n):
            energies = []
            for label in range(k):
                mg = sum(kg[i][j] / math.sqrt(row_g[i] * row_g[j]) * q[j][label] for j in range(n))
                mb = sum(kb[i][j] / math.sqrt(row_b[i] * row_b[j]) * q[j][label] for j in range(n))
                energies.append(
                    -unary[i][label] + params.gauss_compat * mg + params.bilateral_compat * mb
                )
            new.append(softmax(energies))
        q = new
    out = np.array(q, dtype=np.float64).T.reshape(k, h, w)
    if params.out_min_prob is not None:
        out = np.maximum(out, params.out_min_prob)
        out /= out.sum(0, keepdims=True)
    return out


def two_region_case(size: int, seed: int, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """An image with a coloured rectangle on a plain ground, and noisy probabilities
    of 3 classes that favour class 1 on the rectangle."""
    rng = np.random.default_rng(seed)
    image = np.zeros((size, size, 3), np.uint8)
    image[:] = (40, 60, 80)
    rect = (slice(size // 4, 3 * size // 4), slice(size // 5, 3 * size // 5))
    image[rect] = (200, 120, 30)
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    logits = rng.normal(0, noise, (3, size, size)).astype(np.float32)
    logits[(1, *rect)] += 1.5
    probs = torch.softmax(torch.from_numpy(logits), 0).numpy()
    return image, probs


@pytest.mark.parametrize("params", [TRAIN_CRF, TEST_CRF], ids=["train", "test"])
def test_equals_the_literal_mean_field(params: CRFParams) -> None:
    image, probs = two_region_case(5, seed=1)
    params = dataclasses.replace(params, iterations=3, reference_side=8.0)
    got = dense_crf_torch(torch.from_numpy(image)[None], torch.from_numpy(probs)[None], params)
    np.testing.assert_allclose(got[0].numpy(), literal_crf(image, probs, params), atol=2e-5)


@pytest.mark.parametrize(
    ("size", "params", "noise", "min_agreement", "max_mean_abs"),
    [
        # Measured over cases 0-9: label agreement mean / min, mean |ΔQ| mean / max.
        (41, TRAIN_CRF, 1.0, 0.96, 0.025),  # VOC's training map: .974 / .946, .018 / .035
        (41, TRAIN_CRF, 0.3, 0.97, 0.02),  # milder noise: .983 / .967, .011 / .022
        (48, TEST_CRF, 1.0, 0.96, 0.025),  # the test-time preset: .977 / .950, .015 / .033
        # The toy's 12x12 map, where the Gaussian's σ is 0.07 cells, below what the
        # lattice resolves: .925 / .694, .050 / .207.
        (12, TRAIN_CRF, 1.0, 0.85, 0.09),
    ],
)
def test_agrees_with_pydensecrf_up_to_its_lattice(size, params, noise, min_agreement, max_mean_abs):
    agreement, mean_abs = [], []
    for case in range(5):
        image, probs = two_region_case(size, seed=case, noise=noise)
        reference = dense_crf(image, probs, **dataclasses.asdict(params))
        got = dense_crf_torch(torch.from_numpy(image)[None], torch.from_numpy(probs)[None], params)
        got = got[0].numpy()
        agreement.append((got.argmax(0) == reference.argmax(0)).mean())
        mean_abs.append(np.abs(got - reference).mean())
    assert np.mean(agreement) >= min_agreement, agreement
    assert np.mean(mean_abs) <= max_mean_abs, mean_abs


def test_batch_equals_images_one_at_a_time_and_q_is_a_distribution() -> None:
    cases = [two_region_case(16, seed=s) for s in range(3)]
    images = torch.from_numpy(np.stack([c[0] for c in cases]))
    probs = torch.from_numpy(np.stack([c[1] for c in cases]))
    batch = dense_crf_torch(images, probs)
    for i in range(3):
        one = dense_crf_torch(images[i : i + 1], probs[i : i + 1])
        torch.testing.assert_close(batch[i : i + 1], one, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(batch.sum(1), torch.ones(3, 16, 16))
    assert batch.min() >= TRAIN_CRF.out_min_prob * 0.999


def test_autocast_does_not_lower_its_precision() -> None:
    image, probs = two_region_case(20, seed=2)
    images, p = torch.from_numpy(image)[None], torch.from_numpy(probs)[None]
    plain = dense_crf_torch(images, p)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = dense_crf_torch(images, p.bfloat16())
    assert mixed.dtype == torch.float32
    # The only difference left is the bf16 rounding of the input probabilities.
    torch.testing.assert_close(mixed, dense_crf_torch(images, p.bfloat16().float()))
    assert (mixed - plain).abs().mean() < 0.005


def test_refuses_maps_too_large_for_dense_kernels() -> None:
    side = int(math.isqrt(MAX_CELLS)) + 1
    with pytest.raises(ValueError, match="segmenter.crf_backend=pydensecrf"):
        dense_crf_torch(torch.zeros(1, side, side, 3), torch.full((1, 2, side, side), 0.5))
    with pytest.raises(ValueError, match="do not match"):
        dense_crf_torch(torch.zeros(1, 4, 5, 3), torch.full((1, 2, 4, 4), 0.5))


def test_segmenter_trains_with_the_torch_backend() -> None:
    from ficklenet.lit.segmenter import DSRGSegmenter

    batch = square_batch()
    torch.manual_seed(0)
    reference = DSRGSegmenter(compose_segment("segmenter.crf_workers=0", "data.crop_size=48"))
    model = DSRGSegmenter(compose_segment("segmenter.crf_backend=torch", "data.crop_size=48"))
    model.load_state_dict(reference.state_dict())
    reference.eval()  # no dropout: both see the same probabilities
    model.eval()
    ours = model.dsrg_step(batch["image"], batch["target"], batch["labels"])
    theirs = reference.dsrg_step(batch["image"], batch["target"], batch["labels"])
    torch.testing.assert_close(ours.probs, theirs.probs)
    assert (ours.crf - theirs.crf).abs().mean() <= 1e-3  # measured 2e-4
    assert (ours.grown == theirs.grown).float().mean() >= 0.95  # measured 1.0
    assert torch.isfinite(ours.loss)
    ours.loss.backward()
    assert all(p.grad is not None for p in model.net.parameters() if p.requires_grad)


@pytest.mark.slow
def test_without_pydensecrf_the_torch_crf_still_trains(tmp_path) -> None:
    """pydensecrf has no wheel for some Pythons (3.12, e.g. on GPU images): with it
    absent, every module imports, a segmenter step with crf_backend=torch runs, and
    the pydensecrf CRF says what to install or switch."""
    import subprocess
    import sys

    script = """
import sys
sys.modules["pydensecrf"] = None  # what an environment without it looks like
sys.modules["pydensecrf.densecrf"] = None
import numpy as np, torch
import ficklenet.tasks.pipeline, ficklenet.tasks.evaluate, ficklenet.tasks.predict
from ficklenet.dsrg.crf import dense_crf
from ficklenet.lit.segmenter import DSRGSegmenter
from tests.test_segmenter import compose_segment, square_batch
batch = square_batch()
model = DSRGSegmenter(compose_segment("segmenter.crf_backend=torch", "data.crop_size=48"))
out = model.dsrg_step(batch["image"], batch["target"], batch["labels"])
out.loss.backward()
print("step", float(out.loss))
try:
    dense_crf(np.zeros((4, 4, 3), np.uint8), np.full((2, 4, 4), 0.5, np.float32))
except ImportError as err:
    print("refused:", err)
"""
    root = Path(__file__).parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step " in proc.stdout
    assert "pip install pydensecrf2" in proc.stdout and "crf_backend=torch" in proc.stdout


def test_a_misspelt_backend_is_refused_at_compose_time() -> None:
    with pytest.raises(Exception, match="crf_backend"):
        compose_segment("segmenter.crf_backend=pydense")


@gpu_only
def test_cuda_matches_cpu() -> None:
    image, probs = two_region_case(41, seed=0)
    images, p = torch.from_numpy(image)[None], torch.from_numpy(probs)[None]
    cpu = dense_crf_torch(images, p)
    gpu = dense_crf_torch(images, p.cuda())
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-3)
