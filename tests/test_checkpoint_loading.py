"""Checkpoints load the Lightning way (``load_from_checkpoint``), offline: a module
rebuilt from its checkpoint never asks for the ImageNet file its backbone started
from, since the checkpoint holds every weight."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from ficklenet.lit.classifier import FickleClassifier
from ficklenet.lit.segmenter import DSRGSegmenter
from ficklenet.models.backbones import BackboneWeightsError
from tests.conftest import compose_config


def _save(module: pl.LightningModule, path, stage: str) -> None:
    """What a Lightning checkpoint holds for loading (the Trainer adds optimiser
    state and loop progress, which loading does not need)."""
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": pl.__version__,
            "ficklenet_stage": stage,
        },
        path,
    )


@pytest.fixture
def no_imagenet(tmp_path, monkeypatch):
    """torchvision's cache empty: asking for ImageNet weights fails."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


def _vgg16_config(app: str):
    cfg = compose_config(app, ["backbone=vgg16", "backbone.pretrained=false"])
    config = OmegaConf.to_container(cfg, resolve=True)
    config["backbone"]["pretrained"] = True  # as trained: from ImageNet
    return config


def test_classifier_loads_with_load_from_checkpoint_offline(tmp_path, no_imagenet):
    config = _vgg16_config("classify")
    with pytest.raises(BackboneWeightsError):  # building it anew needs the file
        FickleClassifier(config)
    trained = FickleClassifier(config, load_pretrained=False)
    with torch.no_grad():
        trained.head.classifier.weight.normal_()
    path = tmp_path / "classify.ckpt"
    _save(trained, path, "classify")
    loaded = FickleClassifier.load_from_checkpoint(path)
    x = torch.randn(1, 3, 65, 65)
    trained.eval(), loaded.eval()
    torch.testing.assert_close(loaded(x), trained(x))
    assert loaded.cfg.backbone.name == "vgg16"


def test_segmenter_loads_with_load_from_checkpoint_offline(tmp_path, no_imagenet):
    config = _vgg16_config("segment")
    with pytest.raises(BackboneWeightsError):
        DSRGSegmenter(config)
    trained = DSRGSegmenter(config, load_pretrained=False)
    path = tmp_path / "segment.ckpt"
    _save(trained, path, "segment")
    loaded = DSRGSegmenter.load_from_checkpoint(path)
    x = torch.randn(1, 3, 65, 65)
    trained.eval(), loaded.eval()
    torch.testing.assert_close(loaded(x), trained(x))
    # The stages' own reader agrees.
    torch.testing.assert_close(DSRGSegmenter.from_checkpoint(path).eval()(x), trained(x))


def test_both_modules_restore_their_best_metric_from_a_checkpoint(tmp_path):
    """from_checkpoint restores what on_load_checkpoint restores on resume, for the
    classifier (best val mAP) as for the segmenter (best val mIoU)."""
    for cls, stage, attr in (
        (FickleClassifier, "classify", "best_map"),
        (DSRGSegmenter, "segment", "best_miou"),
    ):
        module = cls(OmegaConf.to_container(compose_config(stage), resolve=True))
        setattr(module, attr, 0.625)
        checkpoint = {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
        }
        module.on_save_checkpoint(checkpoint)
        torch.save(checkpoint, tmp_path / f"{stage}.ckpt")
        assert getattr(cls.from_checkpoint(tmp_path / f"{stage}.ckpt"), attr) == 0.625
