"""Feature extractors shared by the FickleNet classifier and the DSRG segmenter.

Every backbone maps an image batch ``(B, 3, H, W)`` to a feature map
``(B, out_channels, ceil(H / os), ceil(W / os))`` with ``os = output_stride``: with the
layers below, each stride-2 step turns a side ``n`` into ``ceil(n / 2)``, so a 321×321
crop (the DeepLab/DSRG training size, ``8k + 1``) gives 41×41 at output stride 8.
Inputs are RGB scaled to [0, 1] and normalised with the ImageNet mean and standard
deviation, the convention of the torchvision weights these backbones load.

Backbones (``build_backbone(name)``):

``vgg16``
    DeepLab-LargeFOV VGG16 (Chen et al., "Semantic Image Segmentation with Deep
    Convolutional Nets and Fully Connected CRFs", ICLR 2015), the network of DSRG's
    official release (Huang et al., CVPR 2018) and of FickleNet's VGG rows (Lee et al.,
    CVPR 2019): torchvision's ``vgg16`` convolutional layers (their ImageNet
    weights load unchanged) with the fully connected layers removed, pool1-3 as
    3×3/stride-2/pad-1 max pooling (DeepLab's choice; it keeps layers aligned on
    ``8k + 1`` inputs), pool4 and pool5 as 3×3/stride-1/pad-1 max pooling and conv5
    dilated by 2. Output stride 8, 512 channels. DeepLab's fc6/fc7 (and the ASPP
    branches of DSRG) are heads, not part of the backbone.
``resnet101``
    DeepLab-v2 dilated ResNet-101 (Chen et al., "DeepLab: Semantic Image Segmentation
    with Deep Convolutional Nets, Atrous Convolution, and Fully Connected CRFs", TPAMI
    2018): torchvision's ``resnet101`` with ``replace_stride_with_dilation`` (output
    stride 8: layer3 and layer4 dilated; 16: layer4 only), no average pooling or fc.
    2048 channels. Differences from the Caffe model, kept because torchvision's
    weights are what users have: torchvision puts the stride in the 3×3 conv of a
    bottleneck (ResNet "v1.5") and dilates the first block of a dilated stage by the
    previous stage's rate.
``small``
    A four-layer conv-BN-ReLU network for the synthetic toy data and CPU tests; random
    initialisation only (there are no published weights for it), output stride 8,
    ``4 * width`` channels.

ImageNet weights are read from torchvision's cache
(``torch.hub.get_dir()/checkpoints/<torchvision's file name>``) or from a file the user
names (``backbone.weights=/path/to/file.pth``). Nothing is ever downloaded: a missing file
is a :class:`BackboneWeightsError` that says where to put it.
"""

from __future__ import annotations

import math
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
import torchvision
from torch import nn
from torchvision.models import ResNet101_Weights, VGG16_Weights

from ficklenet.errors import UserError, UserValueError

__all__ = [
    "BACKBONES",
    "register_backbone",
    "backbone_from_config",
    "Backbone",
    "BackboneWeightsError",
    "ResNet101Backbone",
    "SmallBackbone",
    "VGG16Backbone",
    "build_backbone",
    "imagenet_weight_candidates",
]

# Wrappers that training code adds around a backbone's own keys: DataParallel/DDP
# ("module.") and this project's LightningModules ("backbone.").
_STRIPPED_PREFIXES = ("module.", "backbone.")
# Keys listed in an error message before it says "... and N more".
_MAX_KEYS_SHOWN = 10


class BackboneWeightsError(UserError, RuntimeError):
    """Weights for a backbone are missing, unreadable or do not fit the network."""


class Backbone(nn.Module):
    """Base class: ``forward(x)`` maps ``(B, 3, H, W)`` to ``(B, out_channels, ⌈H/os⌉, ⌈W/os⌉)``.

    Attributes:
        name: the registry name (``"vgg16"``, ``"resnet101"``, ``"small"``).
        out_channels: channels of the feature map.
        output_stride: ratio of input to feature-map size (``os`` above).
        is_pretrained: whether weights were loaded (ImageNet or a user file); the
            LightningModules use it to treat backbone parameters as pre-trained (base
            learning rate) rather than new (10× learning rate).
        weights_path: the file the weights came from, or ``None``.
        freeze_bn: BatchNorm layers stay in eval mode and their affine parameters are
            not trained (see :class:`ResNet101Backbone`).
    """

    name: str = ""
    out_channels: int
    output_stride: int
    # Checkpoint keys of layers this backbone drops (torchvision's classifiers); a
    # weights file may contain them and they are skipped silently.
    ignored_weight_prefixes: tuple[str, ...] = ()
    # torchvision's ImageNet weights, in the order they are looked for (none: no
    # published weights).
    imagenet_weights: tuple[Any, ...] = ()
    # The DeepLab head that suits this backbone (models/deeplab.py): fc6/fc7 width
    # (None: DeepLab-v2's one conv per branch), ASPP and LargeFOV dilations.
    head_width: int | None = 1024
    aspp_dilations: tuple[int, ...] = (6, 12, 18, 24)
    largefov_dilation: int = 12
    # The weights file holds VGG16's fully connected layers, from which DeepLab's
    # fc6/fc7 start (models/deeplab.py).
    fc_from_imagenet: bool = False

    def __init__(self, out_channels: int, output_stride: int, freeze_bn: bool = False) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.output_stride = output_stride
        self.is_pretrained = False
        self.weights_path: Path | None = None
        self.freeze_bn = freeze_bn

    def feature_size(self, size: int) -> int:
        """Side of the feature map for an input side ``size`` (``ceil(size / os)``)."""
        return math.ceil(size / self.output_stride)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if self.freeze_bn:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def _apply_freeze_bn(self) -> None:
        if not self.freeze_bn:
            return
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                for param in module.parameters(recurse=False):
                    param.requires_grad_(False)
        self.train(self.training)

    def load_weights(self, path: str | os.PathLike[str]) -> None:
        """Load a state dict file into this backbone, strictly.

        Accepts a raw state dict or a checkpoint holding one under ``"state_dict"`` or
        ``"model"``; strips ``module.``/``backbone.`` prefixes; skips the keys of layers
        the backbone drops (``ignored_weight_prefixes``). Any other missing or
        unexpected key, or a shape mismatch, raises :class:`BackboneWeightsError`
        listing them, and leaves the backbone unchanged.
        """
        path = _existing_weights_file(self.name, path)
        state = _read_state_dict(path)
        state = {k: v for k, v in state.items() if not k.startswith(self.ignored_weight_prefixes)}
        expected = self.state_dict()
        # Checkpoints saved before PyTorch 0.4.1 lack BatchNorm's counter; BatchNorm
        # fills it in when loading, so its absence is not an error.
        missing = [k for k in expected if k not in state and not k.endswith(".num_batches_tracked")]
        unexpected = [k for k in state if k not in expected]
        mismatched = [
            f"{k}: file {tuple(v.shape)} vs backbone {tuple(expected[k].shape)}"
            for k, v in state.items()
            if k in expected and v.shape != expected[k].shape
        ]
        if missing or unexpected or mismatched:
            parts = [f"weights file {path} does not fit backbone {self.name!r}:"]
            for label, keys in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", mismatched),
            ):
                if keys:
                    parts.append(f"  {label} ({len(keys)}): {_show(keys)}")
            raise BackboneWeightsError("\n".join(parts))
        self.load_state_dict(state, strict=True)
        self.is_pretrained = True
        self.weights_path = path


BACKBONES: dict[str, type[Backbone]] = {}
B = TypeVar("B", bound=type[Backbone])


def register_backbone(cls: B) -> B:
    """Class decorator: make a :class:`Backbone` buildable by its ``name``
    (``backbone.name=...``). A new backbone is this class plus one file in
    ``conf/backbone/``."""
    if not cls.name or cls.name in BACKBONES:
        raise ValueError(f"backbone name {cls.name!r} is empty or taken")
    BACKBONES[cls.name] = cls
    return cls


@register_backbone
class VGG16Backbone(Backbone):
    """DeepLab-LargeFOV VGG16 (as in DSRG's official release), output stride 8.

    The layers are torchvision's ``vgg16().features`` at the same indices (so
    torchvision's state dict keys ``features.N.*`` load as they are), with pooling and
    conv5 changed as the module docstring describes.
    """

    name = "vgg16"
    imagenet_weights = (VGG16_Weights.IMAGENET1K_V1,)
    fc_from_imagenet = True
    ignored_weight_prefixes = ("classifier.",)

    def __init__(self, output_stride: int = 8) -> None:
        if output_stride != 8:
            raise UserValueError(
                f"backbone.output_stride={output_stride}: the vgg16 backbone supports "
                "output_stride 8 only (DeepLab-LargeFOV)"
            )
        super().__init__(out_channels=512, output_stride=8)
        # Built on the meta device: torchvision's vgg16() would spend seconds
        # initialising the 120M fully connected parameters this backbone discards. The
        # kept layers then go to the current default device, as an ordinary build would.
        device = torch.empty(0).device
        with torch.device("meta"):
            reference = torchvision.models.vgg16(weights=None)
        features = reference.features.to_empty(device=device)
        pools = [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
        for stage, index in enumerate(pools):
            stride = 2 if stage < 3 else 1
            features[index] = nn.MaxPool2d(kernel_size=3, stride=stride, padding=1)
        for module in features[pools[3] + 1 : pools[4]]:
            if isinstance(module, nn.Conv2d):
                module.dilation = (2, 2)
                module.padding = (2, 2)
        for module in features.modules():
            if isinstance(module, nn.Conv2d):
                # torchvision's VGG initialisation, which the meta build skipped.
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@register_backbone
class ResNet101Backbone(Backbone):
    """DeepLab-v2 dilated ResNet-101 on torchvision's ``resnet101``; output stride 8 or 16.

    ``freeze_bn=True`` keeps every BatchNorm layer in eval mode during training (running
    statistics are not updated) and stops gradients to its affine parameters. DeepLab-v2's
    released ResNet-101 is fine-tuned this way (BatchNorm on global statistics, scale and
    shift not learned): batches of 10-20 crops of 321×321 per GPU, fewer still per
    process under DDP, give noisy batch statistics, so the ImageNet ones are kept. It
    only makes sense with pre-trained weights; the default (``False``) trains BatchNorm
    as usual, which suits large batches or training from scratch.
    """

    name = "resnet101"
    # V1 first: the classic recipe, closest to the Caffe weights the papers used.
    imagenet_weights = (ResNet101_Weights.IMAGENET1K_V1, ResNet101_Weights.IMAGENET1K_V2)
    head_width = None  # DeepLab-v2: one dilated 3x3 conv to the classes per branch
    ignored_weight_prefixes = ("fc.",)

    def __init__(self, output_stride: int = 8, freeze_bn: bool = False) -> None:
        dilate = {8: [False, True, True], 16: [False, False, True]}
        if output_stride not in dilate:
            raise UserValueError(
                f"backbone.output_stride={output_stride}: the resnet101 backbone supports "
                "output_stride 8 or 16"
            )
        super().__init__(out_channels=2048, output_stride=output_stride, freeze_bn=freeze_bn)
        net = torchvision.models.resnet101(
            weights=None, replace_stride_with_dilation=dilate[output_stride]
        )
        # Same attribute names as torchvision, so its state dict keys load unchanged.
        self.conv1 = net.conv1
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = net.maxpool
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.layer4 = net.layer4
        self._apply_freeze_bn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


@register_backbone
class SmallBackbone(Backbone):
    """Four conv-BN-ReLU layers for the toy data on CPU; output stride 8.

    Widths ``w, 2w, 4w, 4w`` (``w = width``): three 3×3 stride-2 layers, then a 3×3
    layer dilated by 2, standing in for the dilated conv5 of the real backbones (a
    47-pixel receptive field). With ``width=32``: 0.24M parameters, about 44M
    multiply-adds per 96×96 image.
    """

    name = "small"
    # The official head scaled to the 12x12 map of a 96 crop (about 41/12 smaller).
    head_width = 64
    aspp_dilations = (1, 2, 3, 4)
    largefov_dilation = 2

    def __init__(self, output_stride: int = 8, width: int = 32, freeze_bn: bool = False) -> None:
        if output_stride != 8:
            raise UserValueError(
                f"backbone.output_stride={output_stride}: the small backbone supports "
                "output_stride 8 only"
            )
        super().__init__(out_channels=4 * width, output_stride=8, freeze_bn=freeze_bn)
        # (in, out, stride, dilation)
        plan = [
            (3, width, 2, 1),
            (width, 2 * width, 2, 1),
            (2 * width, 4 * width, 2, 1),
            (4 * width, 4 * width, 1, 2),
        ]
        layers: list[nn.Module] = []
        for c_in, c_out, stride, dilation in plan:
            conv = nn.Conv2d(
                c_in, c_out, 3, stride, padding=dilation, dilation=dilation, bias=False
            )
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            layers += [conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self._apply_freeze_bn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def imagenet_weight_candidates(name: str) -> list[Path]:
    """Where torchvision's cache keeps the ImageNet weights of backbone ``name``.

    The paths are ``torch.hub.get_dir()/checkpoints/<basename of the weights URL>``
    (``$TORCH_HOME/hub/checkpoints``, ``~/.cache/torch/hub/checkpoints`` by default),
    the file names torchvision itself would download to. Empty for a backbone with no
    published weights.
    """
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    return [checkpoints / os.path.basename(w.url) for w in BACKBONES[name].imagenet_weights]


def build_backbone(
    name: str,
    pretrained: bool = False,
    weights: str | os.PathLike[str] | None = None,
    output_stride: int = 8,
    **kw: Any,
) -> Backbone:
    """Build backbone ``name`` and load its weights.

    Args:
        name: ``"vgg16"``, ``"resnet101"`` or ``"small"``.
        pretrained: load ImageNet weights from torchvision's cache (see
            :func:`imagenet_weight_candidates`); never downloads.
        weights: a state dict file to load instead (also when ``pretrained`` is false);
            see :meth:`Backbone.load_weights` for the accepted layouts.
        output_stride: 8 (all backbones) or 16 (``resnet101``).
        **kw: backbone options: ``freeze_bn`` (``resnet101``, ``small``), ``width``
            (``small``).

    Raises:
        BackboneWeightsError: weights were asked for and the file is missing or does
            not fit; the message names the path(s) to put the file at.
    """
    if name not in BACKBONES:
        raise UserValueError(
            f"backbone.name={name}: unknown backbone; choose from {sorted(BACKBONES)} "
            "(backbone=<name> picks one with its settings)"
        )
    # Resolve the file before building, so a missing file fails fast.
    path: Path | None = None
    if weights is not None:
        path = _existing_weights_file(name, weights)
    elif pretrained:
        path = _find_cached_imagenet_weights(name)
    backbone = BACKBONES[name](output_stride=output_stride, **kw)
    if path is not None:
        backbone.load_weights(path)
    if backbone.freeze_bn and not backbone.is_pretrained:
        warnings.warn(
            f"freeze_bn=True on a randomly initialised {name} backbone: its BatchNorm "
            "layers will stay at their initial statistics",
            stacklevel=2,
        )
    return backbone


def backbone_from_config(backbone_cfg: Any, load_pretrained: bool = True) -> Backbone:
    """The backbone a ``backbone`` config describes (``conf/backbone``): its name,
    weights (ImageNet from torchvision's cache, or ``weights``), output stride and
    ``freeze_bn``. ``load_pretrained=False`` builds it without any weights file, for
    a module about to take every weight from a checkpoint."""
    kw: dict[str, Any] = dict(
        pretrained=bool(backbone_cfg.pretrained) and load_pretrained,
        weights=backbone_cfg.weights if load_pretrained else None,
        output_stride=int(backbone_cfg.output_stride),
    )
    if backbone_cfg.get("freeze_bn", False):
        kw["freeze_bn"] = True
    return build_backbone(str(backbone_cfg.name), **kw)


def _existing_weights_file(name: str, weights: str | os.PathLike[str]) -> Path:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise BackboneWeightsError(
            f"weights file for backbone {name!r} not found: {path.resolve()} "
            "(put the file there, or set backbone.weights=/path/to/file.pth)"
        )
    return path


def _find_cached_imagenet_weights(name: str) -> Path:
    candidates = imagenet_weight_candidates(name)
    if not candidates:
        raise BackboneWeightsError(
            f"backbone {name!r} has no published ImageNet weights: use pretrained=false, "
            "or give a file with backbone.weights=/path/to/file.pth"
        )
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    places = "\n".join(
        f"  {path}   (torchvision {w}, from {w.url})"
        for path, w in zip(candidates, BACKBONES[name].imagenet_weights, strict=True)
    )
    raise BackboneWeightsError(
        f"ImageNet weights for backbone {name!r} are not in torchvision's cache, and "
        f"nothing is downloaded. Put {'one of these files' if len(candidates) > 1 else 'the file'} "
        f"at:\n{places}\n"
        "(the cache directory is torch.hub.get_dir()/checkpoints; set TORCH_HOME to move it), "
        "or name a local file with backbone.weights=/path/to/file.pth"
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Lightning checkpoints carry hyper-parameters (e.g. OmegaConf objects) that the
        # safe loader refuses. The user named this file, so it is trusted.
        warnings.warn(
            f"{path} holds more than tensors; loading it with weights_only=False",
            stacklevel=3,
        )
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:
            raise BackboneWeightsError(f"cannot read weights file {path}: {error}") from error
    except Exception as error:
        raise BackboneWeightsError(f"cannot read weights file {path}: {error}") from error
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in ("state_dict", "model") if k in obj), None)
        if not isinstance(inner, Mapping):
            break
        obj = inner
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BackboneWeightsError(
            f"{path} is not a state dict (a mapping of names to tensors, possibly under "
            "a 'state_dict' or 'model' key)"
        )
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        stripped = str(key)
        while stripped.startswith(_STRIPPED_PREFIXES):
            stripped = stripped.split(".", 1)[1]
        if stripped in state:
            raise BackboneWeightsError(f"{path}: key {key!r} clashes once prefixes are stripped")
        state[stripped] = value
    return state


def _show(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_KEYS_SHOWN])
    more = len(keys) - _MAX_KEYS_SHOWN
    return shown + (f", ... and {more} more" if more > 0 else "")
