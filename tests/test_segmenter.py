"""DeepLab heads, the DSRG segmenter LightningModule and its data module (stage 3)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf

from ficklenet.config import compose_app
from ficklenet.data.classes import save_index_png
from ficklenet.data.datamodule import (
    SegmentationDataModule,
    pad_collate,
    resolve_seed_dir,
)
from ficklenet.data.toy import write_toy_voc
from ficklenet.data.voc import VOCDataError, VOCReader
from ficklenet.dsrg.crf import TRAIN_CRF
from ficklenet.errors import UserError
from ficklenet.geometry import grid_to_image, image_to_grid
from ficklenet.lit.segmenter import DSRGSegmenter, present_classes, train_crf_params
from ficklenet.models.backbones import BACKBONES
from ficklenet.models.deeplab import (
    ASPPHead,
    ConvASPPHead,
    build_segmenter_net,
    default_head_settings,
)
from ficklenet.tasks.segment import validate_segment


def compose_segment(*overrides: str) -> DictConfig:
    return compose_app("segment", ["seeds=unused", *overrides])


def backbone_cfg(name: str) -> DictConfig:
    return OmegaConf.create(
        dict(name=name, pretrained=False, weights=None, output_stride=8, freeze_bn=False)
    )


# ------------------------------------------------------------------------------- heads
@pytest.mark.parametrize("name", ["small", "vgg16", "resnet101"])
@pytest.mark.parametrize("head", ["aspp", "largefov"])
def test_net_shapes_per_backbone_and_head(name: str, head: str) -> None:
    net = build_segmenter_net(backbone_cfg(name), head, num_classes=21).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 33, 41))
    assert out.shape == (2, 21, 5, 6)
    branches = 4 if head == "aspp" else 1
    if name == "resnet101":  # DeepLab-v2: one 3x3 conv 2048 -> 21 per branch
        assert isinstance(net.head, ConvASPPHead) and len(net.head.convs) == branches
        assert net.head.dilations == ((6, 12, 18, 24) if head == "aspp" else (12,))
    else:
        assert isinstance(net.head, ASPPHead) and len(net.head.branches) == branches
        width = 1024 if name == "vgg16" else 64
        assert net.head.branches[0].fc7.weight.shape[:2] == (width, width)
    pretrained, new = net.parameter_groups()
    assert {id(p) for p in pretrained} == {id(p) for p in net.backbone.parameters()}
    assert {id(p) for p in new} == {id(p) for p in net.head.parameters()}


def test_official_vgg16_aspp_branch_layout() -> None:
    net = build_segmenter_net(backbone_cfg("vgg16"), "aspp")
    assert net.head.dilations == (6, 12, 18, 24)
    branch = net.head.branches[3]
    assert branch.fc6.weight.shape == (1024, 512, 3, 3) and branch.fc6.dilation == (24, 24)
    assert branch.fc8.weight.shape == (21, 1024, 1, 1)
    assert branch.drop6.p == branch.drop7.p == 0.5


def test_head_sums_its_branches() -> None:
    head = ASPPHead(8, 3, dilations=(1, 2), width=4).eval()
    x = torch.randn(1, 8, 7, 7)
    expected = head.branches[0](x) + head.branches[1](x)
    torch.testing.assert_close(head(x), expected)


def test_head_dilations_that_do_not_fit_the_head_name_the_key() -> None:
    small = BACKBONES["small"]
    assert default_head_settings(small, "aspp", dilations=[2, 4, 6, 8])[1] == (2, 4, 6, 8)
    assert default_head_settings(small, "largefov")[1] == (small.largefov_dilation,)
    with pytest.raises(UserError, match=r"segmenter.dilations=\[2, 4\]: a LargeFOV head"):
        default_head_settings(small, "largefov", dilations=[2, 4])
    with pytest.raises(UserError, match=r"segmenter.dilations=\[0\]"):
        default_head_settings(small, "aspp", dilations=[0])


def test_fc_init_from_vgg16_decimates_filters_and_taps() -> None:
    head = ASPPHead(512, 21, dilations=(12,), width=1024)
    # Stride-0 tensors: each weight's value tells which row (or column) it came from.
    rows = torch.arange(4096.0)[:, None].expand(4096, 25088)
    cols = torch.arange(25088.0)[None, :].expand(4096, 25088)
    fc7 = torch.arange(4096.0)[:, None].expand(4096, 4096)
    state = {
        "classifier.0.weight": rows,
        "classifier.0.bias": torch.arange(4096.0),
        "classifier.3.weight": fc7,
        "classifier.3.bias": torch.arange(4096.0),
    }
    head.init_fc_from_vgg16(state)
    fc6 = head.branches[0].fc6
    assert torch.equal(fc6.weight[:, 0, 0, 0], torch.arange(0, 4096, 4.0))
    assert torch.equal(fc6.bias, torch.arange(0, 4096, 4.0))
    state["classifier.0.weight"] = cols
    head.init_fc_from_vgg16(state)
    taps = head.branches[0].fc6.weight[0, 1]  # input channel 1: columns 49..97
    assert torch.equal(taps, 49 + torch.tensor([[0, 3, 6], [21, 24, 27], [42, 45, 48]]).float())
    assert torch.equal(head.branches[0].fc7.weight[:, 0, 0, 0], torch.arange(0, 4096, 4.0))
    assert len(head.pretrained_parameters()) == 4  # fc6/fc7 weight + bias


def test_output_grid_and_upsampling_are_aligned() -> None:
    # Output pixel i sits on input pixel 8i: a 321 crop gives 41x41 and back.
    x = torch.arange(321.0)[None, None, None, :].expand(1, 1, 321, 321)
    grid = image_to_grid(x, (41, 41), 8)
    assert torch.equal(grid[0, 0, 0], torch.arange(0, 321, 8.0))
    up = grid_to_image(grid, (321, 321), 8)
    torch.testing.assert_close(up, x)
    # Sizes that are not 8k+1: crop, or extend by the edge value.
    up = grid_to_image(image_to_grid(x[..., :300, :300], (38, 38), 8), (300, 300), 8)
    torch.testing.assert_close(up[0, 0, 0, :297], torch.arange(297.0))
    assert torch.all(up[0, 0, 0, 296:] == 296)
    labels = torch.arange(5)[None, None, :].expand(1, 5, 5)
    assert grid_to_image(labels, (5, 36), 8, mode="nearest")[0, 0].tolist() == [0] * 4 + [
        i // 8 + (i % 8 >= 4) for i in range(4, 36)
    ]


def test_train_crf_params_are_the_official_preset_with_overrides() -> None:
    cfg = compose_segment()
    assert train_crf_params(cfg.segmenter.crf) == TRAIN_CRF
    params = train_crf_params({"reference_side": None, "iterations": 5, "gauss_sxy": None})
    assert params.iterations == 5 and params.gauss_sxy == TRAIN_CRF.gauss_sxy
    assert params.reference_side == TRAIN_CRF.reference_side
    overridden = train_crf_params({"reference_side": 100})
    assert dataclasses.replace(TRAIN_CRF, reference_side=100) == overridden


# ----------------------------------------------------------------- LightningModule step
def square_batch(n: int = 2, size: int = 48) -> dict[str, torch.Tensor]:
    """Grey images holding a red square of class 1; seeds: square centre, corners."""
    images = torch.full((n, 3, size, size), -0.5)
    images[:, 0, 12:36, 12:36] = 2.0
    targets = torch.full((n, size, size), 255, dtype=torch.long)
    targets[:, 18:30, 18:30] = 1
    targets[:, :6, :6] = 0
    targets[:, -6:, -6:] = 0
    labels = torch.zeros(n, 20)
    labels[:, 0] = 1.0
    return {"image": images, "target": targets, "labels": labels}


def test_training_step_loss_is_finite_and_decreases() -> None:
    torch.manual_seed(0)
    cfg = compose_segment("segmenter.crf_workers=0", "data.crop_size=48")
    model = DSRGSegmenter(cfg)
    batch = square_batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        out = model.dsrg_step(batch["image"], batch["target"], batch["labels"])
        assert torch.isfinite(out.loss)
        assert out.probs.shape == out.crf.shape == (2, 21, 6, 6)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    # Growing keeps every original seed and never adds an absent class.
    labelled = out.seeds != 255
    assert torch.equal(out.grown[labelled], out.seeds[labelled])
    assert set(out.grown.unique().tolist()) <= {0, 1, 255}


def test_semi_supervised_ground_truth_targets_stay_unchanged() -> None:
    # A fully labelled (ground-truth) target: growing has nothing to change.
    cfg = compose_segment("segmenter.crf_workers=0", "data.crop_size=48")
    model = DSRGSegmenter(cfg)
    batch = square_batch()
    gt = torch.zeros_like(batch["target"])
    gt[:, 12:36, 12:36] = 1
    out = model.dsrg_step(batch["image"], gt, batch["labels"])
    assert torch.equal(out.grown, image_to_grid(gt, (6, 6), 8))


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_nan_loss_raises_a_clear_error() -> None:
    cfg = compose_segment("segmenter.crf_workers=0", "data.crop_size=48")
    model = DSRGSegmenter(cfg)
    batch = square_batch()
    batch["image"][0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="segmenter loss became nan"):
        model.training_step(batch, 0)


def test_present_classes_always_include_background() -> None:
    labels = torch.zeros(2, 20)
    labels[1, 4] = 1
    present = present_classes(labels)
    assert present.shape == (2, 21)
    assert present[:, 0].all() and present[1, 5] and present.sum() == 3


def test_from_checkpoint_refuses_other_stages(tmp_path: Path) -> None:
    cfg = compose_segment("segmenter.crf_workers=0")
    model = DSRGSegmenter(cfg)
    ckpt = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    torch.save({**ckpt, "ficklenet_stage": "classify"}, tmp_path / "cls.ckpt")
    with pytest.raises(ValueError, match="'classify'-stage checkpoint.*ficklenet-segment"):
        DSRGSegmenter.from_checkpoint(tmp_path / "cls.ckpt")
    torch.save(ckpt, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a ficklenet checkpoint"):
        DSRGSegmenter.from_checkpoint(tmp_path / "other.ckpt")
    with pytest.raises(FileNotFoundError, match="segmenter.ckpt"):
        DSRGSegmenter.from_checkpoint(tmp_path / "missing.ckpt")

    torch.save({**ckpt, "ficklenet_stage": "segment", "best_miou": 0.5}, tmp_path / "seg.ckpt")
    loaded = DSRGSegmenter.from_checkpoint(tmp_path / "seg.ckpt").eval()
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    assert loaded.best_miou == 0.5


def test_validate_segment_names_the_key() -> None:
    with pytest.raises(ValueError, match="segmenter.grow_fg_prob"):
        validate_segment(compose_segment("segmenter.grow_fg_prob=1.5"))
    # 1.0 is allowed: nothing exceeds it, so nothing grows (the growing ablation).
    validate_segment(compose_segment("segmenter.grow_fg_prob=1.0", "segmenter.grow_bg_prob=1.0"))
    # A misspelt choice does not get that far: the schema's enum refuses it.
    with pytest.raises(ConfigCompositionException, match="segmenter.crf.unary"):
        compose_segment("segmenter.crf.unary=log")


def test_paper_configs_compose() -> None:
    cfg = compose_segment("backbone=vgg16", "optim=dsrg_sgd", "data=voc", "data.root=/voc")
    assert (cfg.optim.lr, cfg.optim.schedule, cfg.optim.step_size) == (5e-4, "step", 1000)
    assert cfg.optim.gamma == 0.33 and cfg.optim.new_layer_lr_mult == 10
    assert cfg.segmenter.head == "aspp" and cfg.data.crop_size == 321
    assert compose_segment("segmenter=largefov").segmenter.head == "largefov"


# ------------------------------------------------------------------------- data module
@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("voc") / "toy"
    write_toy_voc(root, n_train_aug=20, n_train=8, n_val=20, size=32)
    return root


def test_data_module_uses_ground_truth_for_pixel_label_ids(tiny_voc: Path, tmp_path: Path) -> None:
    reader = VOCReader(tiny_voc, "train_aug")
    seeds = tmp_path / "localize" / "seeds"
    seeds.mkdir(parents=True)
    for image_id in reader.ids:
        save_index_png(
            np.full(reader.image_size(image_id), 255, np.uint8), seeds / f"{image_id}.png"
        )
    assert resolve_seed_dir(tmp_path / "localize") == seeds == resolve_seed_dir(seeds)
    cfg = compose_segment(f"data.root={tiny_voc}", "data.pixel_labels=train", "data.crop_size=32")
    dm = SegmentationDataModule(cfg.data, seed_dir=tmp_path / "localize")
    dm.setup("fit")
    train_ids = VOCReader(tiny_voc, "train").ids
    assert dm.gt_ids == train_ids and len(train_ids) == 8
    for image_id in reader.ids:
        target = dm.train_set.target(image_id)
        if image_id in train_ids:
            np.testing.assert_array_equal(target, reader.mask(image_id))
        else:
            assert (target == 255).all()
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape[-2:] == batch["target"].shape[-2:] == (32, 32)

    cfg = compose_segment(f"data.root={tiny_voc}", "data.pixel_labels=val")
    with pytest.raises(VOCDataError, match="none of its 20 ids"):
        SegmentationDataModule(cfg.data, seed_dir=seeds).setup("fit")
    with pytest.raises(VOCDataError, match="seeds="):
        resolve_seed_dir(tmp_path / "nowhere")
    # Seeds that do not cover the training split fail before training starts.
    (seeds / f"{reader.ids[-1]}.png").unlink()
    cfg = compose_segment(f"data.root={tiny_voc}")
    with pytest.raises(VOCDataError, match="no seeds for 1 of the 20 ids"):
        SegmentationDataModule(cfg.data, seed_dir=seeds).setup("fit")


def test_pad_collate_pads_images_with_zero_and_targets_with_255() -> None:
    items = [
        {"image": torch.ones(3, 4, 6), "target": torch.ones(4, 6, dtype=torch.long),
         "labels": torch.zeros(20), "id": "a"},
        {"image": torch.ones(3, 5, 3), "target": torch.ones(5, 3, dtype=torch.long),
         "labels": torch.ones(20), "id": "b"},
    ]  # fmt: skip
    batch = pad_collate(items)
    assert batch["image"].shape == (2, 3, 5, 6) and batch["target"].shape == (2, 5, 6)
    assert batch["size"].tolist() == [[4, 6], [5, 3]]
    assert batch["image"][0, :, 4].abs().sum() == 0 and (batch["target"][0, 4] == 255).all()
    assert (batch["target"][1, :, 3:] == 255).all() and batch["id"] == ["a", "b"]
