"""ficklenet.inference: the one test-time path of evaluate and predict."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import ficklenet.tasks.predict
from ficklenet.dsrg.crf import dense_crf
from ficklenet.inference import TestCRF, crf_labels


def _images(n: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Small images of different sizes, each with noisy 3-class probabilities."""
    out = []
    for k in range(n):
        h, w = 20 + 4 * k, 28 - 2 * k
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image[:, w // 2 :] //= 4  # a dark half for the bilateral kernel
        logits = rng.normal(size=(3, h, w)).astype(np.float32)
        logits[1, :, : w // 2] += 1.0
        probs = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
        out.append((image, probs))
    return out


@pytest.mark.slow
def test_the_crf_through_the_pool_is_the_same_pixels_as_inline() -> None:
    pytest.importorskip("pydensecrf")
    items = _images(5, np.random.default_rng(0))
    got = {}
    for workers in (0, 2):
        with TestCRF(True, workers=workers, batch_size=1) as crf:
            out = []
            for i, (image, probs) in enumerate(items):
                crf.submit(i, image, probs)
                out += crf.ready()
            if workers:  # the pool keeps a backlog of 2·workers + batch_size in flight
                assert len(out) == len(items) - crf.backlog
            out += crf.ready(wait=True)
        assert [i for i, _ in out] == list(range(len(items)))  # in the order submitted
        got[workers] = [labels for _, labels in out]
    for (image, probs), inline, pooled in zip(items, got[0], got[2], strict=True):
        expected = dense_crf(image, probs).argmax(axis=0)  # the test preset's defaults
        np.testing.assert_array_equal(inline, expected)
        np.testing.assert_array_equal(pooled, inline)
        assert (inline != probs.argmax(axis=0)).any()  # the CRF did change pixels
    np.testing.assert_array_equal(crf_labels(*items[0]), got[0][0])


def test_without_the_crf_nothing_is_refined_and_no_pool_starts() -> None:
    with TestCRF(False, workers=2) as crf:
        assert crf._pool is None
        crf.submit("a", *_images(1, np.random.default_rng(1))[0])
        assert list(crf.ready()) == [("a", None)]


def test_predict_imports_nothing_of_evaluate() -> None:
    tree = ast.parse(Path(ficklenet.tasks.predict.__file__).read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "ficklenet.inference" in imported or "ficklenet" in imported
    assert not any(m.startswith("ficklenet.tasks.evaluate") for m in imported)
