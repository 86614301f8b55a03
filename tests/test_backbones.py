"""Tests for ficklenet.models.backbones: output sizes, weight loading, frozen BatchNorm.

Kept fast for a shared 2-core CPU: the 321×321 size checks run on the meta device
(shapes only, no arithmetic), real forwards use tiny inputs, and the fully connected
layers of torchvision's VGG16 (120M parameters) are never materialised.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from ficklenet.models import backbones
from ficklenet.models.backbones import (
    Backbone,
    BackboneWeightsError,
    build_backbone,
    imagenet_weight_candidates,
)

CONFIGS = [("vgg16", 8), ("resnet101", 8), ("resnet101", 16), ("small", 8)]
CHANNELS = {"vgg16": 512, "resnet101": 2048, "small": 128}


@pytest.fixture(scope="module")
def built() -> dict[tuple[str, int], Backbone]:
    return {(name, os_): build_backbone(name, output_stride=os_).eval() for name, os_ in CONFIGS}


@pytest.fixture(scope="module")
def torchvision_vgg16_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A randomly initialised torchvision vgg16 state dict, saved as torchvision ships it.

    The classifier keys are present (the backbone must skip them) but hold one-element
    stand-ins: materialising the real fully connected layers costs seconds and 0.5 GB.
    """
    with torch.device("meta"):
        reference = torchvision.models.vgg16(weights=None)
    reference.features.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    for param in reference.features.parameters():
        param.data = torch.randn(param.shape, generator=generator)
    state = {
        key: value if not value.is_meta else torch.zeros(1)
        for key, value in reference.state_dict().items()
    }
    assert any(key.startswith("classifier.") for key in state)
    path = tmp_path_factory.mktemp("weights") / "vgg16_random.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture
def hub_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point torch.hub at an empty directory and make any download attempt fail."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("a backbone tried to download weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(urllib.request, "urlopen", no_download)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    return tmp_path / "hub"


def _small_state(prefix: str = "") -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    net = build_backbone("small")
    for param in net.parameters():
        param.data.normal_(generator=generator)
    return {prefix + k: v.clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize(("name", "output_stride"), CONFIGS)
def test_output_size_at_321_and_ceil_rule(name: str, output_stride: int) -> None:
    with torch.device("meta"):
        backbone = build_backbone(name, output_stride=output_stride).eval()
    assert all(p.is_meta for p in backbone.parameters())
    out = backbone(torch.empty(2, 3, 321, 321, device="meta"))
    expected = 41 if output_stride == 8 else 21
    assert out.shape == (2, CHANNELS[name], expected, expected)
    assert backbone.out_channels == CHANNELS[name]
    assert backbone.output_stride == output_stride
    for h, w in [(320, 97), (17, 1)]:
        out = backbone(torch.empty(1, 3, h, w, device="meta"))
        assert out.shape[-2:] == (backbone.feature_size(h), backbone.feature_size(w))


@pytest.mark.parametrize(("name", "output_stride"), CONFIGS)
def test_real_forward_on_a_small_input(built: dict, name: str, output_stride: int) -> None:
    backbone = built[(name, output_stride)]
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 33, 40))
    assert out.shape == (1, CHANNELS[name], backbone.feature_size(33), backbone.feature_size(40))
    assert torch.isfinite(out).all()


def test_resnet101_keys_are_torchvision_keys_without_fc(built: dict) -> None:
    with torch.device("meta"):
        reference = torchvision.models.resnet101(weights=None)
    expected = {k for k in reference.state_dict() if not k.startswith("fc.")}
    assert set(built[("resnet101", 8)].state_dict()) == expected


def test_vgg16_is_deeplab_largefov(built: dict) -> None:
    features = built[("vgg16", 8)].features
    pools = [m for m in features if isinstance(m, nn.MaxPool2d)]
    assert [p.stride for p in pools] == [2, 2, 2, 1, 1]
    assert all(p.kernel_size == 3 and p.padding == 1 for p in pools)
    convs = [m for m in features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13
    assert [c.dilation[0] for c in convs] == [1] * 10 + [2] * 3
    assert not hasattr(built[("vgg16", 8)], "classifier")


def test_vgg16_loads_torchvision_state_dict_exactly(torchvision_vgg16_file: tuple) -> None:
    path, state = torchvision_vgg16_file
    backbone = build_backbone("vgg16", weights=path)
    assert backbone.is_pretrained and backbone.weights_path == path
    loaded = backbone.state_dict()
    assert set(loaded) == {k for k in state if k.startswith("features.")}
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: {"state_dict": {f"module.backbone.{k}": v for k, v in s.items()}},
        lambda s: {"model": {f"backbone.{k}": v for k, v in s.items()}, "epoch": 3},
        lambda s: {f"module.{k}": v for k, v in s.items()},
    ],
    ids=["lightning-ddp", "model-key", "dataparallel"],
)
def test_wrapped_and_prefixed_state_dicts_load(tmp_path: Path, wrap) -> None:
    state = _small_state()
    torch.save(wrap(state), tmp_path / "w.pth")
    backbone = build_backbone("small", weights=tmp_path / "w.pth")
    assert all(torch.equal(v, state[k]) for k, v in backbone.state_dict().items())


def test_lightning_checkpoint_with_hyperparameters_loads(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    state = _small_state("backbone.")
    checkpoint = {"state_dict": state, "hyper_parameters": OmegaConf.create({"lr": 0.1})}
    torch.save(checkpoint, tmp_path / "last.ckpt")
    with pytest.warns(UserWarning, match="weights_only=False"):
        backbone = build_backbone("small", weights=tmp_path / "last.ckpt")
    assert torch.equal(backbone.features[0].weight, state["backbone.features.0.weight"])


def test_checkpoint_without_batchnorm_counters_loads(tmp_path: Path) -> None:
    state = {k: v for k, v in _small_state().items() if "num_batches_tracked" not in k}
    torch.save(state, tmp_path / "old.pth")
    assert build_backbone("small", weights=tmp_path / "old.pth").is_pretrained


def test_bad_keys_are_listed_and_nothing_is_loaded(tmp_path: Path) -> None:
    state = _small_state()
    state["head.conv.weight"] = torch.zeros(3)
    del state["features.0.weight"]
    torch.save(state, tmp_path / "bad.pth")
    backbone = build_backbone("small")
    before = backbone.features[3].weight.clone()
    with pytest.raises(BackboneWeightsError) as info:
        backbone.load_weights(tmp_path / "bad.pth")
    message = str(info.value)
    assert "missing keys (1): features.0.weight" in message
    assert "unexpected keys (1): head.conv.weight" in message
    assert str(tmp_path / "bad.pth") in message
    assert torch.equal(backbone.features[3].weight, before)
    assert not backbone.is_pretrained


def test_shape_mismatch_is_an_error(tmp_path: Path) -> None:
    torch.save(build_backbone("small", width=16).state_dict(), tmp_path / "w16.pth")
    with pytest.raises(BackboneWeightsError, match=r"shape mismatches .*features\.0\.weight"):
        build_backbone("small", weights=tmp_path / "w16.pth")


def test_not_a_state_dict_is_an_error(tmp_path: Path) -> None:
    torch.save({"state_dict": [1, 2, 3]}, tmp_path / "odd.pth")
    with pytest.raises(BackboneWeightsError, match="not a state dict"):
        build_backbone("small", weights=tmp_path / "odd.pth")


def test_missing_weights_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "vgg16.pth"
    with pytest.raises(BackboneWeightsError, match="not found") as info:
        build_backbone("vgg16", weights=missing)
    assert str(missing) in str(info.value)


def test_imagenet_weights_found_in_torchvision_cache(
    hub_dir: Path, torchvision_vgg16_file: tuple
) -> None:
    path, state = torchvision_vgg16_file
    cached = (
        hub_dir
        / "checkpoints"
        / os.path.basename(torchvision.models.VGG16_Weights.IMAGENET1K_V1.url)
    )
    assert imagenet_weight_candidates("vgg16") == [cached]
    cached.symlink_to(path)
    backbone = build_backbone("vgg16", pretrained=True)
    assert backbone.is_pretrained and backbone.weights_path == cached
    assert torch.equal(backbone.features[28].weight, state["features.28.weight"])


@pytest.mark.parametrize(
    ("name", "files"),
    [
        ("vgg16", ["vgg16-397923af.pth"]),
        ("resnet101", ["resnet101-63fe2227.pth", "resnet101-cd907fc2.pth"]),
    ],
)
def test_imagenet_weights_missing_says_where_to_put_them(
    hub_dir: Path, name: str, files: list[str]
) -> None:
    with pytest.raises(BackboneWeightsError) as info:
        build_backbone(name, pretrained=True)
    message = str(info.value)
    for file in files:
        assert str(hub_dir / "checkpoints" / file) in message
    assert "backbone.weights=/path/to/file.pth" in message


def test_resnet101_cache_falls_back_to_v2(hub_dir: Path) -> None:
    v1, v2 = imagenet_weight_candidates("resnet101")
    v2.touch()
    assert backbones._find_cached_imagenet_weights("resnet101") == v2
    v1.touch()
    assert backbones._find_cached_imagenet_weights("resnet101") == v1


def test_small_has_no_imagenet_weights(tmp_path: Path) -> None:
    with pytest.raises(BackboneWeightsError, match="no published ImageNet weights"):
        build_backbone("small", pretrained=True)
    torch.save(_small_state(), tmp_path / "small.pth")
    assert build_backbone("small", pretrained=True, weights=tmp_path / "small.pth").is_pretrained
    assert not build_backbone("small").is_pretrained


def test_freeze_bn_resnet101_keeps_bn_in_eval_and_frozen() -> None:
    with pytest.warns(UserWarning, match="freeze_bn"), torch.device("meta"):
        backbone = build_backbone("resnet101", output_stride=16, freeze_bn=True)
    backbone.train()
    norms = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert not any(p.requires_grad for m in norms for p in m.parameters())
    assert all(p.requires_grad for p in backbone.conv1.parameters())
    assert backbone.training


def test_freeze_bn_keeps_running_statistics() -> None:
    with pytest.warns(UserWarning):
        backbone = build_backbone("small", freeze_bn=True).train()
    before = backbone.features[1].running_mean.clone()
    backbone(torch.randn(2, 3, 16, 16)).sum().backward()
    assert torch.equal(backbone.features[1].running_mean, before)
    assert backbone.features[1].weight.grad is None
    assert backbone.features[0].weight.grad is not None


def test_default_backbone_trains_everything() -> None:
    backbone = build_backbone("small").train()
    assert all(p.requires_grad for p in backbone.parameters())
    assert all(m.training for m in backbone.modules())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg19")
    with pytest.raises(ValueError, match="output_stride"):
        build_backbone("vgg16", output_stride=16)
    with pytest.raises(ValueError, match="output_stride"):
        build_backbone("resnet101", output_stride=32)
