"""Typed schemas behind the YAML in ``conf/`` (Hydra structured configs).

The YAML files hold the values; these dataclasses hold the keys and types,
registered in Hydra's ConfigStore and listed first in every stage's defaults,
so a misspelt key or a wrong type stops the run at start-up with Hydra naming
the key, instead of silently falling back to a default. Each default says why
it is what it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class ToyConfig:
    """The synthetic VOC written by ``ficklenet-make-toy`` (see ``data/toy.py``)."""

    seed: int = 0
    size: int = 96  # pixels per side: small enough for 2 CPU cores
    n_train_aug: int = 400
    n_train: int = 100
    n_val: int = 80


@dataclass
class DataConfig:
    name: str = "toy"
    # A VOC2012 directory (JPEGImages/, Annotations/, ImageSets/Segmentation/, ...).
    root: str = "data/toy-voc"
    # Write the toy dataset into `root` when it is missing (toy data only).
    make_toy_if_missing: bool = False
    toy: ToyConfig = field(default_factory=ToyConfig)
    # Image-level labels for the classifier: VOC's train_aug (10,582 ids).
    train_split: str = "train_aug"
    val_split: str = "val"
    # Image labels from the XML annotations ("xml") or from the masks ("mask").
    labels_from: str = "xml"
    # Count objects marked difficult as present (they are in the image).
    include_difficult: bool = True
    # Mask folders, searched in order: VOC palette masks, then SBD index masks.
    mask_dirs: list[str] = field(
        default_factory=lambda: ["SegmentationClass", "SegmentationClassAug"]
    )
    # Saliency maps (e.g. DRFI, as FickleNet and DSRG used) for background seeds.
    saliency_dir: str | None = None
    # Semi-supervised segmenter: a split name or .txt id list whose ground truth replaces seeds.
    pixel_labels: str | None = None
    # Training crop (321 in DSRG / DeepLab-VGG16).
    crop_size: int = 321
    # Random rescale range before cropping.
    scale_range: list[float] = field(default_factory=lambda: [0.7, 1.3])
    flip: bool = True
    batch_size: int = 20
    # Validation images are centre padded/cropped to crop_size so a batch stacks.
    val_batch_size: int = 20
    # Loader processes per training process; 0 loads in the main process.
    num_workers: int = 4
    # Pinned host memory speeds host-to-GPU copies; ignored without a GPU.
    pin_memory: bool = True


@dataclass
class BackboneConfig:
    # small (toy, CPU), vgg16 (DeepLab-LargeFOV style), resnet101 (dilated).
    name: str = "small"
    # ImageNet weights from torchvision's cache, or `weights`.
    pretrained: bool = False
    weights: str | None = None
    # 8 for both paper backbones (321 -> 41); ResNet-101 also allows 16.
    output_stride: int = 8
    # Keep BatchNorm statistics frozen (DeepLab practice with small batches).
    freeze_bn: bool = False
    # FickleNet window s suited to this backbone's feature map (model.kernel_size
    # follows it): 9 on a 41x41 map [recalled], 3 on the toy 12x12 map.
    fickle_kernel_size: int = 9


@dataclass
class ClassifierModelConfig:
    """FickleNet's head (paper Sec. 3; paper-notes.md)."""

    # Dropout rate; 0 is the deterministic baseline, 0.9 the paper's best (Table 5).
    p: float = 0.9
    # s: window of each classifier cell; 9 on a 41x41 map [recalled].
    kernel_size: int = 9
    # "fickle": centre-preserving spatial dropout; "general": plain dropout (Table 5).
    dropout: str = "fickle"


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adam
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # New (randomly initialised) layers learn 10x faster than the pretrained
    # backbone (DeepLab / DSRG / irn practice).
    new_layer_lr_mult: float = 10.0
    # poly: lr·(1 - step/total)^power, per step; step: ×gamma every step_size steps.
    schedule: str = "poly"
    poly_power: float = 0.9
    step_size: int = 1000
    gamma: float = 0.33


@dataclass
class TrainerConfig:
    """Keys passed to ``lightning.Trainer`` (``trainer/`` group)."""

    accelerator: str = "cpu"
    devices: Any = 1
    strategy: Any = "auto"
    num_nodes: int = 1
    max_epochs: int = 10
    max_steps: int = -1
    precision: Any = "32-true"
    log_every_n_steps: int = 10
    fast_dev_run: Any = False
    limit_train_batches: Any = 1.0
    limit_val_batches: Any = 1.0
    check_val_every_n_epoch: int = 1
    deterministic: Any = False
    gradient_clip_val: float | None = None
    sync_batchnorm: bool = False
    enable_progress_bar: bool = True


@dataclass
class LoggerConfig:
    # csv | wandb | tensorboard | none; the same metric names in each.
    name: str = "csv"
    project: str = "ficklenet"
    entity: str | None = None
    # Runs of one sweep share a group (defaults to the sweep directory's name).
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    # wandb: offline needs no account; `wandb sync` uploads later.
    offline: bool = True


@dataclass
class ClassifyConfig:
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    model: ClassifierModelConfig = field(default_factory=ClassifierModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # Seeds python, numpy and torch in every process (Lightning seed_everything).
    seed: int = 0
    # Resume: a checkpoint path, or "last" for <run dir>/checkpoints/last.ckpt.
    ckpt_path: str | None = None
    # A short name for this run in loggers; the run directory name otherwise.
    name: str | None = None


@dataclass
class MakeToyConfig:
    out: str = "data/toy-voc"
    toy: ToyConfig = field(default_factory=ToyConfig)


_REGISTERED = False


def register_schemas() -> None:
    """Put the schemas in Hydra's ConfigStore (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    cs = ConfigStore.instance()
    cs.store(name="classify_schema", node=ClassifyConfig)
    cs.store(name="make_toy_schema", node=MakeToyConfig)
    _REGISTERED = True


__all__ = [
    "BackboneConfig",
    "ClassifierModelConfig",
    "ClassifyConfig",
    "DataConfig",
    "LoggerConfig",
    "MakeToyConfig",
    "OptimConfig",
    "ToyConfig",
    "TrainerConfig",
    "register_schemas",
]
