"""Joint transforms and the per-item seeded datasets built on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ficklenet.data.datasets import ClassificationDataset, SegmentationDataset
from ficklenet.data.transforms import (
    IMAGENET_MEAN,
    EvalTransform,
    TrainTransform,
    denormalize,
    denormalize_batch,
    normalize,
)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture
def sample() -> tuple[np.ndarray, np.ndarray]:
    rng = _rng(1)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    label = rng.choice(np.array([0, 3, 7, 255], np.uint8), size=(30, 40))
    return image, label


def test_shapes_and_dtypes(sample):
    image, label = sample
    x, y, z = TrainTransform(24)(image, label, label.astype(np.int64), rng=_rng())
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32
    assert y.shape == z.shape == (24, 24) and y.dtype == z.dtype == torch.int64
    (x,) = TrainTransform((16, 20))(image, rng=_rng())
    assert x.shape == (3, 16, 20)
    x, y = EvalTransform()(image, label)
    assert x.shape == (3, 30, 40) and torch.equal(y, torch.from_numpy(label.astype(np.int64)))
    x, y = EvalTransform(48)(image, label)
    assert x.shape == (3, 48, 48) and y.shape == (48, 48)


def test_padding_is_mean_colour_and_ignore_label(sample):
    image, label = sample
    x, y = EvalTransform(50)(image, label)  # 30x40 centred in 50x50
    assert (y[:10] == 255).all() and (y[40:] == 255).all() and (y[:, :5] == 255).all()
    assert torch.equal(y[10:40, 5:45], torch.from_numpy(label.astype(np.int64)))
    assert (x[:, :10] == 0).all()  # mean colour is exactly 0 after normalisation
    restored = denormalize(x[:, :10])
    assert np.abs(restored.astype(int) - np.round(np.array(IMAGENET_MEAN) * 255)).max() <= 1
    # Train crops larger than the scaled image pad the same way.
    x, y = TrainTransform(64, scale_range=None, flip=False)(image, label, rng=_rng())
    padding = 64 * 64 - 30 * 40
    assert int((x == 0).all(0).sum()) == padding
    assert int((y == 255).sum()) == padding + int((label == 255).sum())
    assert torch.equal(y[x.abs().sum(0) == 0], torch.full((padding,), 255))


def test_flip_moves_image_and_label_together():
    image = np.zeros((8, 10, 3), np.uint8)
    image[:, :3] = 200  # bright stripe on the left
    label = np.zeros((8, 10), np.uint8)
    label[:, :3] = 5
    t = TrainTransform((8, 10), scale_range=None, flip=True)
    flipped = 0
    for seed in range(20):
        x, y = t(image, label, rng=_rng(seed))
        bright = x.mean(0) > 0
        assert torch.equal(bright, y == 5)
        flipped += bool(y[0, -1] == 5)
    assert 0 < flipped < 20  # both outcomes happen


def test_deterministic_given_rng(sample):
    image, label = sample
    t = TrainTransform(24, scale_range=(0.5, 1.5))
    a = t(image, label, rng=_rng(42))
    b = t(image, label, rng=_rng(42))
    c = t(image, label, rng=_rng(43))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not all(torch.equal(u, v) for u, v in zip(a, c, strict=True))


def test_nearest_keeps_label_values(sample):
    image, label = sample
    t = TrainTransform(32, scale_range=(0.6, 1.7))
    for seed in range(10):
        _, y = t(image, label, rng=_rng(seed))
        assert set(torch.unique(y).tolist()) <= {0, 3, 7, 255}


def test_normalize_round_trip(sample):
    image, _ = sample
    np.testing.assert_array_equal(denormalize(normalize(image)), image)


def test_rejects_wrong_inputs(sample):
    image, label = sample
    with pytest.raises(ValueError, match="uint8"):
        EvalTransform()(image.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        EvalTransform()(image, label[:-1])
    with pytest.raises(TypeError, match="integer"):
        EvalTransform()(image, label.astype(np.float32))


class _FakeReader:
    """The slice of VOCReader the datasets use."""

    ids = ["a", "b", "c"]
    mask_dirs = ()

    def __len__(self) -> int:
        return 3

    def image(self, i: str) -> np.ndarray:
        return np.full((20, 20, 3), 10 * self.ids.index(i), np.uint8)

    def mask(self, i: str) -> np.ndarray:
        m = np.zeros((20, 20), np.uint8)
        m[5:15, 5:15] = self.ids.index(i) + 1
        return m

    def label_vector(self, i: str) -> np.ndarray:
        v = np.zeros(20, np.float32)
        v[self.ids.index(i)] = 1
        return v


def test_datasets_reproducible_per_epoch_and_index():
    t = TrainTransform(16, scale_range=(0.5, 1.5))
    ds = ClassificationDataset(_FakeReader(), t, seed=5)
    item = ds[1]
    assert item["id"] == "b" and item["labels"][1] == 1 and item["image"].shape == (3, 16, 16)
    seg = SegmentationDataset(_FakeReader(), t, targets="gt", seed=5)
    first = [seg[i]["target"] for i in range(3)]
    assert all(torch.equal(a, seg[i]["target"]) for i, a in enumerate(first))
    seg.set_epoch(1)
    later = [seg[i]["target"] for i in range(3)]
    assert not all(torch.equal(a, b) for a, b in zip(first, later, strict=True))
    seg.set_epoch(0)
    assert all(torch.equal(a, seg[i]["target"]) for i, a in enumerate(first))
    assert "target" not in SegmentationDataset(_FakeReader(), t, targets="none")[0]


def test_denormalize_batch_stays_on_the_device_and_matches_the_literal_inverse():
    """A batch with values beyond [0, 255] after the inverse (clipped) and on
    rounding boundaries: each pixel is round-half-up of 255·(x·std + mean),
    clipped, computed here in float64 from the definition."""
    import torch

    from ficklenet.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    gen = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, 5, 7, generator=gen) * 3
    got = denormalize_batch(images)
    assert got.dtype == torch.uint8 and got.shape == (3, 5, 7, 3)
    x = images.double().permute(0, 2, 3, 1).numpy()
    want = np.clip(
        np.floor(255 * (x * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)) + 0.5), 0, 255
    )
    # float32 arithmetic may land the other side of a .5 boundary: at most one level.
    assert np.abs(got.numpy().astype(int) - want.astype(int)).max() <= 1
    assert (got.numpy() == want).mean() > 0.999
    assert {0, 255} <= set(np.unique(got.numpy()))  # clipping exercised
    # The same float32 steps in numpy (the CPU path before this ran on the device).
    x32 = images.permute(0, 2, 3, 1).numpy()
    std32, mean32 = np.float32(IMAGENET_STD), np.float32(IMAGENET_MEAN)
    steps = np.clip((x32 * std32 + mean32) * np.float32(255) + np.float32(0.5), 0, 255)
    np.testing.assert_array_equal(got.numpy(), steps.astype(np.uint8))
    for k in range(3):  # the single-image form is the batch form
        np.testing.assert_array_equal(denormalize(images[k]), got[k].numpy())
