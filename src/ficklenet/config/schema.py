"""Typed schemas behind the YAML in ``conf/`` (Hydra structured configs).

The YAML files hold the values; these dataclasses hold the keys and types,
registered in Hydra's ConfigStore and listed first in every stage's defaults,
so a misspelt key or a wrong type stops the run at start-up with Hydra naming
the key, instead of silently falling back to a default. Each default says why
it is what it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from omegaconf import MISSING

from ficklenet.choices import (
    Aggregate,
    BadInput,
    CRFBackend,
    Dropout,
    Formula,
    HeadKind,
    LabelsFrom,
    LoggerName,
    OptimizerName,
    RequeueSignal,
    SaliencyQuality,
    Schedule,
    ToyPart,
    Unary,
)

# Roles of a key, stated on its field (``metadata={"roles": ...}``) and read with
# :func:`keys_with_role`:
#: Where the work runs and how it is spread, shown and named: never what a stage
#: computes, so outside a run's record (a rerun elsewhere resumes the same run).
WHERE_AND_HOW = "where_and_how"
#: A trainer key ficklenet-pipeline shares with every stage (``trainer.<key>`` at its top).
SHARED = "shared"
#: A training budget: only the stages that train depend on it.
TRAINING = "training"


def role(*roles: str, default: Any = MISSING, default_factory: Any = None) -> Any:
    """A field with these roles and its default (none given: MISSING, a value every
    option of the key's config group sets)."""
    if default_factory is not None:
        return field(default_factory=default_factory, metadata={"roles": roles})
    return field(default=default, metadata={"roles": roles})


def keys_with_role(cls: type, wanted: str, prefix: str = "") -> list[str]:
    """The dotted keys of schema ``cls`` whose field has the role ``wanted``."""
    out: list[str] = []
    hints = get_type_hints(cls)
    for f in fields(cls):
        key = f"{prefix}{f.name}"
        if wanted in f.metadata.get("roles", ()):
            out.append(key)
            continue
        node = _dataclass_in(hints[f.name])
        if node is not None:
            out += keys_with_role(node, wanted, f"{key}.")
    return out


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass a field holds (``X`` or ``X | None``), else None."""
    if get_origin(tp) in (Union, UnionType):
        tp = next((a for a in get_args(tp) if a is not type(None)), None)
    return tp if is_dataclass(tp) else None


@dataclass
class ToyConfig:
    """The synthetic VOC written by ``ficklenet-make-toy`` (see ``data/toy.py``)."""

    seed: int = 0
    size: int = 96  # pixels per side: small enough for 2 CPU cores
    n_train_aug: int = 400
    n_train: int = 100
    n_val: int = 80
    # Saliency maps in Saliency/: perfect | good | realistic | poor | none. The default
    # fails as a classical detector (DRFI) does on natural images (max F-beta ~0.7,
    # MAE ~0.2; docs/method.md, "Background from saliency: the papers' recipe");
    # perfect is the answer key, none writes no maps.
    saliency: SaliencyQuality = SaliencyQuality.realistic
    # shown | erased: erased paints each class-specific part as its body, leaving only
    # the bodies to tell the classes apart (the premise measurement).
    part: ToyPart = ToyPart.shown
    # Class evidence in the bodies: a tint towards a hue of the class's own, of
    # body_evidence x 15 grey levels (0: none, bodies tell only their group).
    body_evidence: float = 0.0


@dataclass
class DataConfig:
    """The dataset (``data`` group: toy, voc). Keys without a value here are set by
    every option of the group, which states each value and why."""

    name: str = MISSING
    # A VOC2012 directory (JPEGImages/, Annotations/, ImageSets/Segmentation/, ...).
    root: str = role(WHERE_AND_HOW)
    # Write the toy dataset into `root` when it is missing (toy data only).
    make_toy_if_missing: bool = role(WHERE_AND_HOW)
    toy: ToyConfig = field(default_factory=ToyConfig)
    # Image-level labels for the classifier: VOC's train_aug (10,582 ids).
    train_split: str = "train_aug"
    val_split: str = "val"
    # Image labels from the XML annotations ("xml") or from the masks ("mask").
    labels_from: LabelsFrom = LabelsFrom.xml
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
    # Only the first `limit` ids of every split a stage reads (the smoke test,
    # debug=fast); null: all of them.
    limit: int | None = None
    # Training crop.
    crop_size: int = MISSING
    # Random rescale range before cropping.
    scale_range: list[float] = field(default_factory=lambda: [0.7, 1.3])
    flip: bool = True
    batch_size: int = MISSING
    # Validation images are centre padded/cropped to crop_size so a batch stacks.
    val_batch_size: int = MISSING
    # Loader processes per training process; 0 loads in the main process.
    num_workers: int = role(WHERE_AND_HOW)
    # Pinned host memory speeds host-to-GPU copies; ignored without a GPU.
    pin_memory: bool = role(WHERE_AND_HOW, default=True)


@dataclass
class BackboneConfig:
    """The feature extractor (``backbone`` group: small, vgg16, resnet101); keys
    without a value here are set by every option, with its reasons."""

    # small (toy, CPU), vgg16 (DeepLab-LargeFOV style), resnet101 (dilated).
    name: str = MISSING
    # ImageNet weights from torchvision's cache, or `weights`.
    pretrained: bool = MISSING
    weights: str | None = None
    # Input pixels per feature-map cell (ResNet-101 also allows 16).
    output_stride: int = MISSING
    # Keep BatchNorm statistics frozen (DeepLab practice with small batches).
    freeze_bn: bool = False
    # FickleNet window s suited to this backbone's feature map (model.kernel_size
    # follows it).
    fickle_kernel_size: int = MISSING
    # Dropout after fc6/fc7 of the DeepLab head on this backbone (segmenter.dropout
    # follows it).
    head_dropout: float = MISSING


@dataclass
class ClassifierModelConfig:
    """FickleNet's head (paper Sec. 3; docs/method.md, section 1)."""

    # Dropout rate; 0 is the deterministic baseline (``model`` group: fickle).
    p: float = MISSING
    # s: window of each classifier cell.
    kernel_size: int = MISSING
    # "fickle": centre-preserving spatial dropout; "general": plain dropout (Table 5).
    dropout: Dropout = MISSING
    # Also scale the never-dropped centre of each window by 1/(1-p). The paper does
    # not say; chosen on train like the map formula (experiments/defaults/results.md,
    # docs/method.md).
    scale_centre: bool = True


@dataclass
class OptimConfig:
    """The solver (``optim`` group: adam, sgd, dsrg_sgd); keys without a value here
    are set by every option, with its reasons."""

    name: OptimizerName = MISSING
    lr: float = MISSING
    # SGD's momentum (DeepLab and DSRG: 0.9); unused by adam.
    momentum: float = 0.9
    weight_decay: float = MISSING
    # How much faster the new (randomly initialised) layers learn than the backbone.
    new_layer_lr_mult: float = MISSING
    # poly: lr·(1 - step/total)^power, per step; step: ×gamma every step_size steps.
    schedule: Schedule = MISSING
    poly_power: float = 0.9
    # The step schedule: DSRG's solver, lr ×0.33 every 1000 iterations.
    step_size: int = 1000
    gamma: float = 0.33


@dataclass
class TrainerConfig:
    """Keys passed to ``lightning.Trainer`` (``trainer/`` group). Roles: SHARED keys
    reach every stage from ficklenet-pipeline's top-level ``trainer``; WHERE_AND_HOW
    keys are outside a run's record; TRAINING keys only matter to the stages that
    train (classify, segment)."""

    # Where and at what precision: set by every option of the trainer group.
    accelerator: str = role(SHARED, WHERE_AND_HOW)
    devices: Any = role(SHARED, WHERE_AND_HOW)
    strategy: Any = role(SHARED, WHERE_AND_HOW)
    num_nodes: int = role(SHARED, WHERE_AND_HOW, default=1)
    # Both training stages: on the toy, near convergence (docs/proving_ground.md);
    # experiment=paper_* set the papers' schedules.
    max_epochs: int = role(SHARED, TRAINING, default=40)
    max_steps: int = role(SHARED, TRAINING, default=-1)
    precision: Any = role(SHARED)
    log_every_n_steps: int = role(TRAINING, default=10)
    fast_dev_run: Any = role(SHARED, default=False)
    limit_train_batches: Any = role(SHARED, TRAINING, default=1.0)
    limit_val_batches: Any = role(SHARED, default=1.0)
    check_val_every_n_epoch: int = role(TRAINING, default=1)
    deterministic: Any = role(SHARED, default=False)
    gradient_clip_val: float | None = role(TRAINING, default=None)
    sync_batchnorm: bool = role(SHARED, WHERE_AND_HOW, default=False)
    enable_progress_bar: bool = role(SHARED, WHERE_AND_HOW, default=True)
    # Batches whose gradients are summed before each optimiser step (each micro-batch
    # draws its own dropout masks); the effective batch is k x data.batch_size.
    accumulate_grad_batches: int = role(TRAINING, default=1)
    # Validate every this many training batches (int) or fraction of an epoch (float);
    # null: once per epoch (check_val_every_n_epoch).
    val_check_interval: Any = role(TRAINING, default=None)
    # Lightning's profiler: null, simple, advanced or pytorch (report in the run dir).
    profiler: str | None = role(WHERE_AND_HOW, default=None)
    # GPU speed (ignored on CPU). channels_last: NHWC tensors for the convolutions;
    # tf32: TensorFloat-32 matmuls and convolutions (Ampere and later); benchmark:
    # cuDNN autotuning, null = on for training crops unless deterministic, off for
    # whole images of many sizes (localize, evaluate, predict); compile:
    # torch.compile the backbone in place (checkpoints keep their keys).
    channels_last: bool = role(SHARED, default=False)
    tf32: bool = role(SHARED, default=True)
    benchmark: bool | None = role(SHARED, default=None)
    compile: bool = role(SHARED, default=False)
    # Under SLURM: the signal sbatch --signal sends before the job's end (SIGTERM is
    # also caught): save, `scontrol requeue`, stop; the requeued job resumes there
    # (ficklenet.lit.preemption). null: off (Lightning's own SLURM handling).
    # strategy=ddp: seconds a process waits for the others in a collective before
    # the job ends with an error (a dead process elsewhere); null: torch's 30 minutes.
    # A dead rank this machine started ends the job within a second (ficklenet.lit.rank_watch).
    timeout_s: int | None = role(SHARED, WHERE_AND_HOW, default=None)
    requeue_signal: RequeueSignal | None = role(
        SHARED, WHERE_AND_HOW, default=RequeueSignal.SIGUSR1
    )


@dataclass
class EarlyStoppingConfig:
    """Stop training when the stage's validation metric (val/mAP, val/miou) has not
    improved by min_delta for patience validations."""

    patience: int = 5
    min_delta: float = 0.0


@dataclass
class CallbacksConfig:
    """Optional training callbacks (``callbacks`` group: default, early_stopping)."""

    early_stopping: EarlyStoppingConfig | None = None


@dataclass
class LoggerConfig:
    # csv | wandb | tensorboard | none (the ``logger`` group); the same metric names in each.
    name: LoggerName = MISSING
    project: str = "ficklenet"
    entity: str | None = None
    # Runs of one sweep share a group (defaults to the sweep directory's name).
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    # wandb: offline needs no account (`wandb sync <run>/wandb/offline-run-*` uploads
    # later); null: online once `wandb login` was run (or WANDB_API_KEY is set).
    offline: bool | None = None
    # wandb: also upload the checkpoints as artifacts (large; off by default).
    log_checkpoints: bool = False
    # Validation images logged as panels each validation epoch (wandb and
    # tensorboard only: classifier CAMs, segmenter prediction vs truth); 0 = none.
    panels: int = 4


@dataclass
class PipelineInfo:
    """Set by ``ficklenet-pipeline`` on each stage it runs, so that loggers group
    and label the stage runs of one pipeline: its name and its shared settings."""

    name: str = ""
    run_dir: str = ""
    seed: int = 0
    model_p: float | None = None
    model_dropout: str | None = None


@dataclass
class StageConfig:
    """What every stage app holds besides its own settings."""

    data: DataConfig = field(default_factory=DataConfig)
    # Where and in how many processes (trainer.accelerator, devices, num_nodes,
    # strategy), at what precision, and for the training stages how long.
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # Figures and panels go to this logger too (metrics.json always has them).
    logger: LoggerConfig = role(WHERE_AND_HOW, default_factory=LoggerConfig)
    # Seeds python, numpy and torch in every process (Lightning seed_everything);
    # localize: the base of each image's generator seed, so its maps are the same
    # whatever the order, rank or resume point.
    seed: int = 0
    # A short name for this run in loggers; the run directory name otherwise.
    name: str | None = role(WHERE_AND_HOW, default=None)
    # The pipeline this run belongs to (set by ficklenet-pipeline; logged).
    pipeline: PipelineInfo | None = role(WHERE_AND_HOW, default=None)


@dataclass
class ClassifyConfig(StageConfig):
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    model: ClassifierModelConfig = field(default_factory=ClassifierModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    # Resume: a checkpoint path, or "last" for <run dir>/checkpoints/last.ckpt.
    ckpt_path: str | None = role(WHERE_AND_HOW, default=None)


@dataclass
class MakeToyConfig:
    out: str = "data/toy-voc"
    toy: ToyConfig = field(default_factory=ToyConfig)


@dataclass
class CheckpointRef:
    # Path to a checkpoint written by an earlier stage (checkpoints/last.ckpt).
    ckpt: str = MISSING


@dataclass
class InferenceModelConfig:
    """Overrides of the trained head at map time (null = as trained)."""

    # Dropout rate of the stochastic passes; FickleNet uses the training rate.
    p: float | None = None


@dataclass
class LocalizeOptions:
    """Stage 2 (FickleNet Sec. 3.3; docs/method.md, "Localization maps and seeds")."""

    # Images to localize: the segmenter trains on train_aug.
    split: str = "train_aug"
    # Stochastic passes per image: 200 in the paper [recalled].
    n: int = 200
    # gradcam: ReLU(sum_k mean(dS/dx_k) x_k); grad_x_act: ReLU(sum_k x_k dS/dx_k).
    # The formula FickleNet p=0.9 chose on train under the recipe
    # (experiments/recipe/choice.md), as did most classifiers of the ladder.
    formula: Formula = Formula.gradcam
    # How the N max-normalised maps combine: max (union, the paper) or mean.
    aggregate: Aggregate = Aggregate.max
    # Masks drawn per random-number call; with the seed it fixes the draws.
    chunk: int = 25
    # Images localized together: consecutive ids of the split (the same groups
    # whatever the ranks or resume point). Equal-size images share a backbone pass,
    # and with gradcam their N maps are made together within memory_mb.
    batch_size: int = 8
    # MiB of temporaries one call of the map arithmetic may hold (gradcam: the N
    # maps of as many images as fit; grad_x_act: the work unit on CUDA).
    memory_mb: float = 1024.0
    # Image scales (multi-scale maps are upsampled to the image and combined).
    scales: list[float] = field(default_factory=lambda: [1.0])
    # Also run each scale on the flipped image.
    flip: bool = False
    # The papers' recipe on the toy (data.saliency_dir=Saliency, its realistic maps):
    # background where the saliency is below saliency_threshold, foreground where
    # FickleNet p=0.9's gradcam maps reach fg_threshold of their maximum; both chosen on
    # train by the coverage-aware seed mIoU (experiments/recipe/choice.md). Without
    # saliency (data.saliency_dir=null) background is where every class is below
    # bg_threshold (chosen likewise). experiment=paper_* use SEC's 0.2 and IRN's 0.05.
    # Foreground seed: score >= fg_threshold x the class's max.
    fg_threshold: float = 0.15
    # Background seed without saliency: every present class scores below this.
    bg_threshold: float = 0.3
    # Background seed with saliency: saliency below this.
    saliency_threshold: float = 0.3
    # Background thresholds swept for the CAM mIoU curve.
    cam_bg_sweep: list[float] = field(
        default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    )
    # Overlay images (image | map | seeds | truth) written for the first ids.
    overlays: int = role(WHERE_AND_HOW, default=8)
    # Replace outputs made with another checkpoint or settings in this run dir.
    overwrite: bool = role(WHERE_AND_HOW, default=False)
    # Only the first `limit` ids of the split (quick looks); null = all.
    limit: int | None = None


@dataclass
class LocalizeConfig(StageConfig):
    classifier: CheckpointRef = field(default_factory=CheckpointRef)
    model: InferenceModelConfig = field(default_factory=InferenceModelConfig)
    localize: LocalizeOptions = field(default_factory=LocalizeOptions)


__all__ = [
    "BackboneConfig",
    "ClassifierModelConfig",
    "ClassifyConfig",
    "DataConfig",
    "LoggerConfig",
    "LocalizeConfig",
    "LocalizeOptions",
    "MakeToyConfig",
    "OptimConfig",
    "ToyConfig",
    "TrainerConfig",
]


# --------------------------------------------------------------------------------------
# Stages 3 and 4: the DSRG segmenter (Huang et al., CVPR 2018) and its evaluation.


@dataclass
class TrainCRFConfig:
    """Overrides of DSRG's training-time dense CRF (``ficklenet.dsrg.crf.TRAIN_CRF``).

    null keeps the official value (``CRFLayer`` in the official release): unary
    ``-p`` with p clipped at 1e-4, Gaussian w=3 sxy=3, bilateral w=10 sxy=80
    srgb=13, 10 iterations, Q clipped at 1e-4 and renormalised.
    """

    unary: Unary | None = None  # neg_prob (official training CRF) | neg_log_prob
    min_prob: float | None = None
    gauss_sxy: float | None = None
    gauss_compat: float | None = None
    bilateral_sxy: float | None = None
    bilateral_srgb: float | None = None
    bilateral_compat: float | None = None
    iterations: int | None = None
    # 0 disables the clip of Q.
    out_min_prob: float | None = None
    # The longer map side (in cells) the sxy are set for; they scale with the map
    # the CRF sees. null: 492 = 41 x 12, DSRG's sxy/12 on the 41x41 map of a 321 crop.
    reference_side: float | None = None


@dataclass
class SegmenterModelConfig:
    """DeepLab head and DSRG training rule (docs/method.md, "The DSRG segmenter")."""

    # aspp: four branches, dilation 6/12/18/24, logits summed (the official DSRG
    # model); largefov: one branch, dilation 12 (DeepLab-LargeFOV).
    head: HeadKind = MISSING
    # fc6/fc7 channels of each branch; null: 1024 on vgg16 (official), none on
    # resnet101 (DeepLab-v2: one 3x3 conv to the classes per branch), 64 on small.
    width: int | None = None
    # Branch dilations; null: 6/12/18/24 (largefov: 12) for the 41x41 maps of the
    # paper backbones, 1/2/3/4 (largefov: 2) for the small toy backbone's 12x12 maps.
    dilations: list[int] | None = None
    # Dropout after fc6 and fc7: every option of the segmenter group takes the
    # backbone's (backbone.head_dropout).
    dropout: float = MISSING
    # vgg16: start fc6/fc7 from ImageNet fc6/fc7, decimated to 3x3x1024 / 1x1x1024 as
    # DeepLab did (then they train at the base lr; fc8 at 10x).
    init_fc_from_imagenet: bool = True
    # Region growing: a pixel joins a seed region when the CRF's probability of its
    # best present class exceeds this (foreground / background; official
    # generate_seed_step: th2=0.85, th1=0.99). Probabilities, unlike localize's
    # fg/bg_threshold, which are fractions of a class map's maximum. 1.0 never grows
    # (no probability exceeds it): DSRG on its seeds alone, the growing ablation.
    grow_fg_prob: float = 0.85
    grow_bg_prob: float = 0.99
    # L = seed_loss_weight * balanced seeding loss + boundary_loss_weight * boundary loss.
    seed_loss_weight: float = 1.0
    boundary_loss_weight: float = 1.0
    crf: TrainCRFConfig = field(default_factory=TrainCRFConfig)
    # Who runs the training CRF: pydensecrf (the reference; permutohedral lattice, CPU
    # worker processes) or torch (exact dense kernels on the training device, maps of
    # at most 64x64 cells; ficklenet.dsrg.crf_torch). The test-time CRF is pydensecrf.
    crf_backend: CRFBackend = CRFBackend.pydensecrf
    # Processes running the training CRF of a batch (20 maps of 41x41 take ~0.25 s
    # on one core); 0 = in the training process; null = the CPUs available, at most 8.
    crf_workers: int | None = role(WHERE_AND_HOW, default=None)


@dataclass
class SegmentConfig(StageConfig):
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    segmenter: SegmenterModelConfig = field(default_factory=SegmenterModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    # The localize stage's seeds: its run directory (holding seeds/) or a folder of
    # <id>.png index PNGs (255 = unlabelled) for every id of data.train_split.
    # null: no seeds, train fully supervised on data.pixel_labels (the ceiling).
    seeds: str | None = None
    # Split on which the raw seeds and the trained segmenter are both scored against
    # ground truth (does growing improve on the seeds?); null skips it.
    seed_eval_split: str | None = "train"
    # Resume: a checkpoint path, or "last" for <run dir>/checkpoints/last.ckpt.
    ckpt_path: str | None = role(WHERE_AND_HOW, default=None)


@dataclass
class EvaluateConfig(StageConfig):
    """Under ddp the images are split between the processes and the confusion
    matrices summed; inference runs in float32."""

    # segmenter.ckpt: written by ficklenet-segment (<run>/checkpoints/last.ckpt).
    segmenter: CheckpointRef = field(default_factory=CheckpointRef)
    # By default (conf/data/checkpoint.yaml) the data settings stored in the checkpoint
    # (the dataset it was trained on); `data.root=...` alone changes that one key;
    # `data=voc data.root=...` states every setting anew.
    data: DataConfig | None = None
    # Any split with ground truth (val: 1,449 VOC images).
    split: str = "val"
    # Input scales whose upsampled logits are summed; the paper's multi-scale test
    # uses [0.75, 1.0, 1.25] (241/321/401 of DSRG's test-ms.py).
    scales: list[float] = field(default_factory=lambda: [1.0])
    # Also add the logits of the horizontally flipped image.
    flip: bool = False
    # Dense CRF on the full-resolution image with DSRG's test parameters; the
    # metrics then hold the mIoU with and without it.
    crf: bool = False
    # CRF processes; null = the CPUs available, at most 8.
    crf_workers: int | None = role(WHERE_AND_HOW, default=None)
    # Palette PNGs <run>/predictions/<id>.png (VOC SegmentationClass format).
    save_predictions: bool = role(WHERE_AND_HOW, default=True)
    # Image | ground truth | prediction overlays for the first N images, <run>/overlays/.
    overlays: int = role(WHERE_AND_HOW, default=8)
    batch_size: int = 4
    num_workers: int = role(WHERE_AND_HOW, default=2)
    progress: bool = role(WHERE_AND_HOW, default=True)


@dataclass
class PredictConfig:
    """``ficklenet-predict``: segment images without labels (docs/usage.md, "Predicting")."""

    # segmenter.ckpt: written by ficklenet-segment (<run>/checkpoints/last.ckpt).
    segmenter: CheckpointRef = field(default_factory=CheckpointRef)
    # A folder of images, or the name of a split of the dataset (VOC's test).
    input: str = MISSING
    # The dataset a split name refers to: by default the one stored in the checkpoint
    # (conf/data/checkpoint.yaml), each `data.<key>=` replacing that key.
    data: DataConfig | None = None
    # As ficklenet-evaluate: input scales whose logits are summed, flip, dense CRF.
    scales: list[float] = field(default_factory=lambda: [1.0])
    flip: bool = False
    crf: bool = False
    # Also write results/VOC2012/Segmentation/comp6_test_cls/ and results.tar.gz
    # for the VOC evaluation server.
    voc_submission: bool = False
    # A file that cannot be decoded: skip it (named in the log and metrics.json) or stop.
    on_bad_input: BadInput = BadInput.skip
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    progress: bool = role(WHERE_AND_HOW, default=True)
    seed: int = 0
    name: str | None = role(WHERE_AND_HOW, default=None)


__all__ += [
    "EvaluateConfig",
    "PipelineInfo",
    "SegmentConfig",
    "SegmenterModelConfig",
    "TrainCRFConfig",
]
