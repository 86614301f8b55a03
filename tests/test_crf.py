"""Dense CRF wrapper (ficklenet.dsrg.crf) against pydensecrf called directly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pydensecrf.densecrf as dcrf
import pytest
import torch

from ficklenet.data.voc import VOCReader
from ficklenet.dsrg.crf import (
    TEST_CRF,
    TRAIN_CRF,
    CRFParams,
    dense_crf,
    dense_crf_batch,
    kernel_scale,
)


def case(seed: int, k: int = 4, h: int = 17, w: int = 23) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    logits = rng.normal(size=(k, h, w)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(axis=0, keepdims=True)
    return image, probs.astype(np.float32)


def test_test_time_defaults_equal_direct_pydensecrf_call() -> None:
    # A 500-pixel side, VOC's: the official σ's apply unchanged.
    image, probs = case(0, h=31, w=500)
    k, h, w = probs.shape
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(np.ascontiguousarray(-np.log(np.maximum(probs, 1e-5)).reshape(k, -1)))
    crf.addPairwiseGaussian(sxy=3, compat=3)
    crf.addPairwiseBilateral(sxy=80, srgb=13, rgbim=image, compat=10)
    expected = np.array(crf.inference(10)).reshape(k, h, w)

    q = dense_crf(image, probs)
    assert q.shape == (k, h, w) and q.dtype == np.float32
    np.testing.assert_allclose(q, expected, atol=1e-6)
    np.testing.assert_allclose(q.sum(axis=0), 1.0, atol=1e-5)


def test_train_preset_equals_direct_pydensecrf_call() -> None:
    # DSRG's 41×41 training map: σ/12.
    image, probs = case(1, h=41, w=41)
    k, h, w = probs.shape
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(np.ascontiguousarray(-np.maximum(probs, 1e-4).reshape(k, -1)))
    crf.addPairwiseGaussian(sxy=3 / 12, compat=3)
    crf.addPairwiseBilateral(sxy=80 / 12, srgb=13, rgbim=image, compat=10)
    expected = np.array(crf.inference(10)).reshape(k, h, w)
    expected = np.maximum(expected, 1e-4)
    expected /= expected.sum(axis=0, keepdims=True)

    q = dense_crf(image, probs, **dataclasses.asdict(TRAIN_CRF))
    np.testing.assert_allclose(q, expected, atol=1e-6)
    np.testing.assert_allclose(q.sum(axis=0), 1.0, atol=1e-5)
    assert q.min() >= 1e-4 * 0.999


def test_presets() -> None:
    assert CRFParams() == TEST_CRF
    assert (TEST_CRF.unary, TEST_CRF.iterations) == ("neg_log_prob", 10)
    assert (TEST_CRF.gauss_sxy, TEST_CRF.gauss_compat) == (3.0, 3.0)
    assert (TEST_CRF.bilateral_sxy, TEST_CRF.bilateral_srgb, TEST_CRF.bilateral_compat) == (
        80.0,
        13.0,
        10.0,
    )
    assert TRAIN_CRF.unary == "neg_prob"
    assert (TRAIN_CRF.min_prob, TRAIN_CRF.out_min_prob) == (1e-4, 1e-4)
    assert (TRAIN_CRF.gauss_sxy, TRAIN_CRF.gauss_compat, TRAIN_CRF.iterations) == (3.0, 3.0, 10)
    assert (TRAIN_CRF.bilateral_sxy, TRAIN_CRF.bilateral_srgb) == (80.0, 13.0)
    assert TRAIN_CRF.bilateral_compat == 10.0


def test_kernel_widths_follow_the_image_size() -> None:
    # Official values at VOC size (500-pixel side; the 41-cell training map), the same
    # fraction of the image elsewhere: a 96-pixel toy image gets 96/500 of them.
    assert kernel_scale(TEST_CRF, 375, 500) == 1.0
    assert kernel_scale(TEST_CRF, 96, 96) == pytest.approx(96 / 500)
    assert kernel_scale(TRAIN_CRF, 41, 41) == pytest.approx(1 / 12)
    assert kernel_scale(TRAIN_CRF, 12, 12) == pytest.approx(12 / 492)
    assert kernel_scale(dataclasses.replace(TEST_CRF, reference_side=None), 96, 96) == 1.0
    image, probs = case(4, h=60, w=96)
    crf = dcrf.DenseCRF2D(96, 60, 4)
    crf.setUnaryEnergy(np.ascontiguousarray(-np.log(np.maximum(probs, 1e-5)).reshape(4, -1)))
    crf.addPairwiseGaussian(sxy=3 * 96 / 500, compat=3)
    crf.addPairwiseBilateral(sxy=80 * 96 / 500, srgb=13, rgbim=image, compat=10)
    expected = np.array(crf.inference(10)).reshape(4, 60, 96)
    np.testing.assert_allclose(dense_crf(image, probs), expected, atol=1e-6)


def test_crf_of_an_enlarged_image_is_the_enlarged_crf(toy_root) -> None:
    """Kernels that follow the image size make the CRF scale-invariant: an image and
    its probabilities enlarged 8× (nearest) give the same labelling, sampled back
    (0.992 of the pixels agree here; with fixed σ's, reference_side=None, 0.950)."""
    reader = VOCReader(toy_root, "val")
    rng = np.random.default_rng(0)
    agree = []
    for image_id in reader.ids[:4]:
        image = reader.image(image_id)
        mask = reader.mask(image_id).astype(np.int64)
        mask[mask == 255] = 0
        classes = np.unique(mask)
        onehot = np.stack([mask == c for c in classes]).astype(np.float32)
        noise = rng.dirichlet(np.ones(len(classes)), size=mask.shape).transpose(2, 0, 1)
        probs = (0.6 * onehot + 0.4 * noise).astype(np.float32)
        big_image = image.repeat(8, 0).repeat(8, 1)
        big_probs = probs.repeat(8, 1).repeat(8, 2)
        small = dense_crf(image, probs).argmax(0)
        big = dense_crf(big_image, big_probs)[:, ::8, ::8].argmax(0)
        agree.append((small == big).mean())
    assert np.mean(agree) >= 0.985, agree


def test_unknown_parameter_is_an_error() -> None:
    image, probs = case(2)
    with pytest.raises(TypeError):
        dense_crf(image, probs, bilateral_sxyy=3)


def test_refines_towards_image_edges() -> None:
    # Left half dark, right half bright; noisy probabilities that mostly agree with it.
    rng = np.random.default_rng(3)
    image = np.zeros((20, 20, 3), dtype=np.uint8)
    image[:, 10:] = 255
    truth = np.zeros((20, 20), dtype=int)
    truth[:, 10:] = 1
    probs = np.where(truth == 1, 0.6, 0.4)[None].repeat(2, 0)
    probs[0] = 1 - probs[1]
    flip = rng.random((20, 20)) < 0.2
    probs[:, flip] = probs[::-1, flip]
    assert (probs.argmax(0) != truth).sum() > 0
    q = dense_crf(image, probs)
    assert (q.argmax(0) == truth).all()


def test_batch_parallel_equals_serial_and_accepts_torch() -> None:
    pairs = [case(10 + i, k=3, h=41, w=41) for i in range(5)]
    images = np.stack([p[0] for p in pairs])
    probs = np.stack([p[1] for p in pairs])
    serial = dense_crf_batch(images, probs, TRAIN_CRF, workers=0)
    assert serial.shape == probs.shape and serial.dtype == np.float32
    np.testing.assert_array_equal(
        serial[2], dense_crf(images[2], probs[2], **dataclasses.asdict(TRAIN_CRF))
    )
    parallel = dense_crf_batch(torch.from_numpy(images), torch.from_numpy(probs), TRAIN_CRF, 2)
    np.testing.assert_array_equal(parallel, serial)
    again = dense_crf_batch(images, probs, {"unary": "neg_prob", "reference_side": 100}, 2)
    plain = dense_crf_batch(images, probs, dataclasses.replace(TEST_CRF, unary="neg_prob"), 0)
    assert not np.allclose(again, plain)  # the mapping's reference side was applied
