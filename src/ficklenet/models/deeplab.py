"""DeepLab segmentation heads on the shared backbones: the network DSRG trains.

DSRG (Huang et al., "Deep Seeded Region Growing", CVPR 2018) trains DeepLab; its
official release (Caffe, ``training/`` prototxts) uses, on the VGG16 backbone of
:mod:`ficklenet.models.backbones` (output stride 8, 512 channels), the
DeepLab-v2 VGG16 ASPP head (Chen et al., TPAMI 2018):

* :class:`ASPPHead` — four parallel branches with dilation 6, 12, 18 and 24, each
  ``fc6`` 3×3 conv to 1024 → ReLU → dropout 0.5 → ``fc7`` 1×1 conv to 1024 → ReLU
  → dropout 0.5 → ``fc8`` 1×1 conv to the classes; the four branches' logits are
  summed.
* :class:`LargeFOVHead` — one such branch with dilation 12 (DeepLab-LargeFOV).
* :class:`ConvASPPHead` — DeepLab-v2 ResNet-101 ASPP: four 3×3 convs straight from
  the 2048 backbone channels to the classes, dilation 6/12/18/24, summed (one conv
  with dilation 12 for the LargeFOV variant).

``fc8`` (and every :class:`ConvASPPHead` conv) starts from N(0, 0.01²) with zero
bias, as in the DeepLab prototxts. With an ImageNet VGG16 file, ``fc6``/``fc7``
start from its fully connected layers decimated as DeepLab did (fc6: every 4th of
the 4096 filters and every 3rd of the 7×7 taps → 1024 × 512 × 3×3; fc7: every 4th
row and column → 1024 × 1024); they then count as pretrained (base learning rate)
and only ``fc8`` is new (10×), as in the official solver. Otherwise the whole head
is new.

Geometry: every backbone maps input pixel ``stride·i`` to output pixel ``i`` (each
stride-2 layer is centred); :mod:`ficklenet.geometry` moves labels and logits
between the image and the output grid with exactly that alignment.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ficklenet.choices import HeadKind
from ficklenet.errors import UserValueError
from ficklenet.models.backbones import Backbone, _read_state_dict, backbone_from_config

__all__ = [
    "ASPPHead",
    "ConvASPPHead",
    "DeepLabBranch",
    "LargeFOVHead",
    "SegmenterNet",
    "build_segmenter_net",
    "default_head_settings",
]

#: Dilations of the official heads, for the 41×41 map of a 321 crop (each backbone
#: states its own: Backbone.aspp_dilations, largefov_dilation).
ASPP_DILATIONS: tuple[int, ...] = Backbone.aspp_dilations
LARGEFOV_DILATION: int = Backbone.largefov_dilation


def _init_classifier(conv: nn.Conv2d) -> None:
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.zeros_(conv.bias)


def _dilations(dilations: Sequence[int]) -> tuple[int, ...]:
    """A head's dilations, one branch each: at least one."""
    if not dilations:
        raise ValueError("a DeepLab head needs at least one dilation")
    return tuple(int(d) for d in dilations)


def _summed(branches: nn.ModuleList, x: Tensor) -> Tensor:
    """The sum of the branches' logits on ``x``, in branch order (DeepLab's fusion)."""
    out = branches[0](x)
    for branch in branches[1:]:
        out = out + branch(x)
    return out


class DeepLabBranch(nn.Module):
    """fc6 (3×3, dilated) → ReLU → dropout → fc7 (1×1) → ReLU → dropout → fc8 (1×1)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        dilation: int,
        width: int = 1024,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.fc6 = nn.Conv2d(in_channels, width, 3, padding=dilation, dilation=dilation)
        self.fc7 = nn.Conv2d(width, width, 1)
        self.fc8 = nn.Conv2d(width, num_classes, 1)
        # Caffe's Dropout layer drops single activations (not whole channels).
        self.drop6 = nn.Dropout(dropout)
        self.drop7 = nn.Dropout(dropout)
        for conv in (self.fc6, self.fc7):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        _init_classifier(self.fc8)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop6(F.relu(self.fc6(x), inplace=True))
        x = self.drop7(F.relu(self.fc7(x), inplace=True))
        return self.fc8(x)


class ASPPHead(nn.Module):
    """DSRG's official VGG16 head: :class:`DeepLabBranch` per dilation, logits summed.

    Args:
        in_channels: backbone channels (512 for VGG16).
        num_classes: output classes including background (21 for VOC).
        dilations: one branch per entry (official: 6, 12, 18, 24).
        width: fc6/fc7 channels (official: 1024).
        dropout: dropout rate after fc6 and fc7 (official: 0.5).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int = 21,
        dilations: Sequence[int] = ASPP_DILATIONS,
        width: int = 1024,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.dilations = _dilations(dilations)
        self.fc_from_imagenet = False
        self.branches = nn.ModuleList(
            DeepLabBranch(in_channels, num_classes, d, width, dropout) for d in self.dilations
        )

    def forward(self, x: Tensor) -> Tensor:
        return _summed(self.branches, x)

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """fc6/fc7 when they were initialised from ImageNet (else empty)."""
        if not self.fc_from_imagenet:
            return []
        return [p for b in self.branches for m in (b.fc6, b.fc7) for p in m.parameters()]

    def init_fc_from_vgg16(self, state: dict[str, Tensor]) -> None:
        """Set every branch's fc6/fc7 from torchvision VGG16 ``classifier.{0,3}`` weights,
        decimated as DeepLab did (module docstring)."""
        fc6_w = state["classifier.0.weight"].reshape(4096, 512, 7, 7)[::4, :, ::3, ::3]
        fc6_b = state["classifier.0.bias"][::4]
        fc7_w = state["classifier.3.weight"][::4, ::4]
        fc7_b = state["classifier.3.bias"][::4]
        for branch in self.branches:
            if branch.fc6.weight.shape != fc6_w.shape or branch.fc7.weight.shape[:2] != (
                fc7_w.shape
            ):
                raise ValueError(
                    "fc6/fc7 from ImageNet VGG16 need in_channels=512 and width=1024, got "
                    f"fc6 {tuple(branch.fc6.weight.shape)}"
                )
            with torch.no_grad():
                branch.fc6.weight.copy_(fc6_w)
                branch.fc6.bias.copy_(fc6_b)
                branch.fc7.weight.copy_(fc7_w[:, :, None, None])
                branch.fc7.bias.copy_(fc7_b)
        self.fc_from_imagenet = True


class LargeFOVHead(ASPPHead):
    """DeepLab-LargeFOV: a single :class:`DeepLabBranch` (official dilation 12)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int = 21,
        dilation: int = LARGEFOV_DILATION,
        width: int = 1024,
        dropout: float = 0.5,
    ) -> None:
        super().__init__(in_channels, num_classes, (dilation,), width, dropout)


class ConvASPPHead(nn.Module):
    """DeepLab-v2 ResNet-101 ASPP: one dilated 3×3 conv to the classes per branch, summed."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int = 21,
        dilations: Sequence[int] = ASPP_DILATIONS,
    ) -> None:
        super().__init__()
        self.dilations = _dilations(dilations)
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d) for d in self.dilations
        )
        for conv in self.convs:
            _init_classifier(conv)

    def forward(self, x: Tensor) -> Tensor:
        return _summed(self.convs, x)

    def pretrained_parameters(self) -> list[nn.Parameter]:
        return []


class SegmenterNet(nn.Module):
    """Backbone + DeepLab head: images (B, 3, H, W) → logits (B, K, ⌈H/os⌉, ⌈W/os⌉)."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def output_stride(self) -> int:
        return self.backbone.output_stride

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """``(pretrained, new)``: backbone (+ fc6/fc7 from ImageNet) and the new layers."""
        head_pretrained = self.head.pretrained_parameters()
        seen = {id(p) for p in head_pretrained}
        pretrained = list(self.backbone.parameters()) + head_pretrained
        new = [p for p in self.head.parameters() if id(p) not in seen]
        return pretrained, new


def default_head_settings(
    backbone: Backbone | type[Backbone],
    head: str,
    width: int | None = None,
    dilations: Sequence[int] | None = None,
) -> tuple[int | None, tuple[int, ...]]:
    """``(width, dilations)`` of a head, the backbone's own values
    (:class:`~ficklenet.models.backbones.Backbone`: the official ones where there
    are official ones) filling in ``None``. ``width`` is ``None`` for the DeepLab-v2
    ResNet head (no fc6/fc7).
    """
    head = HeadKind.parse(head, "segmenter.head")
    if dilations is None:
        if head == HeadKind.aspp:
            dilations = backbone.aspp_dilations
        else:
            dilations = (backbone.largefov_dilation,)
    dilations = tuple(int(d) for d in dilations)
    if head == HeadKind.largefov and len(dilations) != 1:
        raise UserValueError(
            f"segmenter.dilations={list(dilations)}: a LargeFOV head has one dilation; "
            "give one (segmenter.dilations=[d]) or null for the backbone's own"
        )
    if any(d < 1 for d in dilations):
        raise UserValueError(f"segmenter.dilations={list(dilations)}: each must be >= 1")
    return (backbone.head_width if width is None else width), dilations


def build_segmenter_net(
    backbone_cfg: Any,
    head: str = "aspp",
    num_classes: int = 21,
    width: int | None = None,
    dilations: Sequence[int] | None = None,
    dropout: float = 0.5,
    init_fc_from_imagenet: bool = True,
    load_pretrained: bool = True,
) -> SegmenterNet:
    """A DeepLab segmenter on the configured backbone.

    Args:
        backbone_cfg: the ``backbone`` config (``name``, ``pretrained``, ``weights``,
            ``output_stride``, ``freeze_bn``; see ``conf/backbone``).
        head: ``"aspp"`` or ``"largefov"``.
        num_classes: classes including background.
        width: fc6/fc7 channels; ``None`` → the backbone's ``head_width`` (1024 on
            vgg16, 64 on small, none on resnet101: DeepLab-v2's conv head). A width on
            resnet101 gives it the VGG-style branches instead.
        dilations: branch dilations; ``None`` → :func:`default_head_settings`.
        dropout: after fc6 and fc7.
        init_fc_from_imagenet: a backbone whose weights file holds VGG16's fully
            connected layers (vgg16): fc6/fc7 start from them (module docstring).
        load_pretrained: load the backbone's weights (False when rebuilding from a
            checkpoint, whose state dict holds them).
    """
    backbone = backbone_from_config(backbone_cfg, load_pretrained)
    width, dilations = default_head_settings(backbone, head, width, dilations)
    module: nn.Module
    if width is None:
        module = ConvASPPHead(backbone.out_channels, num_classes, dilations)
    else:
        module = ASPPHead(backbone.out_channels, num_classes, dilations, width, dropout)
        fc_file = backbone.fc_from_imagenet and backbone.weights_path is not None
        if fc_file and init_fc_from_imagenet:
            _init_fc(module, backbone)
    return SegmenterNet(backbone, module)


def _init_fc(head: ASPPHead, backbone: Backbone) -> None:
    state = _read_state_dict(backbone.weights_path)  # type: ignore[arg-type]
    keys = ("classifier.0.weight", "classifier.0.bias", "classifier.3.weight", "classifier.3.bias")
    if not all(k in state for k in keys):
        warnings.warn(
            f"{backbone.weights_path} has no VGG16 fully connected layers "
            "(classifier.0/3); fc6/fc7 start from random weights and learn at the "
            "new-layer rate",
            stacklevel=3,
        )
        return
    head.init_fc_from_vgg16(state)
