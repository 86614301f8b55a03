"""The base of every closed set of options, so each list of choices is written once.

Each set is a :class:`Choice` (a ``str`` enum), and every set lives here, at the
bottom of the package: the modules that act on a choice (``Dropout`` in
:mod:`ficklenet.models.fickle`, ``Formula`` in :mod:`ficklenet.localization.maps`,
...) and the config schemas that type their keys with it both import it from here,
so ``ficklenet.config`` depends on no module above it. Hydra refuses a misspelt
choice when it composes the config, and library functions called with a plain
string parse it with :meth:`Choice.parse`.
Members equal their string values (``Dropout.fickle == "fickle"``).
"""

from __future__ import annotations

from enum import Enum
from typing import Any, TypeVar

C = TypeVar("C", bound="Choice")


class Choice(str, Enum):
    """A closed set of string options; each member's name is its value."""

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def names(cls) -> list[str]:
        return [m.value for m in cls]

    @classmethod
    def parse(cls: type[C], value: Any, what: str) -> C:
        """``value`` as a member, or a ValueError naming ``what`` and the options."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"{what} must be one of {cls.names()}, got {value!r}") from None


# Used by ficklenet.data.voc.
class LabelsFrom(Choice):
    """Where image-level labels come from: the XML object names or the masks."""

    xml = "xml"
    mask = "mask"


# Used by ficklenet.data.toy.
class ToyPart(Choice):
    """Whether the class-specific parts are drawn (``toy.part``)."""

    shown = "shown"
    erased = "erased"  # painted as the body around it: only the bodies are left


# Used by ficklenet.data.toy_saliency.
class SaliencyQuality(Choice):
    """The toy's saliency levels, best first (``toy.saliency``)."""

    perfect = "perfect"
    good = "good"
    realistic = "realistic"
    poor = "poor"
    none = "none"


# Used by ficklenet.localization.aggregation.
class Aggregate(Choice):
    """How maps combine: ``max`` (their union, the paper) or ``mean``."""

    max = "max"
    mean = "mean"


# Used by ficklenet.localization.maps.
class Formula(Choice):
    """The map of one stochastic pass (:mod:`~ficklenet.localization.closed_form`):
    ``grad_x_act`` or ``gradcam``."""

    grad_x_act = "grad_x_act"
    gradcam = "gradcam"


# Used by ficklenet.models.fickle.
class Dropout(Choice):
    """``fickle``: centre-preserving spatial dropout on the expanded map (FickleNet);
    ``general``: plain dropout on the feature map (the Table 5 baseline)."""

    fickle = "fickle"
    general = "general"


# Used by ficklenet.models.deeplab.
class HeadKind(Choice):
    """``aspp``: four dilated branches, logits summed (DSRG's model); ``largefov``: one."""

    aspp = "aspp"
    largefov = "largefov"


# Used by ficklenet.lit.optim.
class OptimizerName(Choice):
    sgd = "sgd"
    adam = "adam"


# Used by ficklenet.lit.optim.
class Schedule(Choice):
    """``poly``: lr·(1 - t/T)^power; ``step``: ×gamma every step_size; ``constant``."""

    poly = "poly"
    step = "step"
    constant = "constant"


# Used by ficklenet.lit.loggers.
class LoggerName(Choice):
    csv = "csv"
    tensorboard = "tensorboard"
    wandb = "wandb"
    none = "none"


# Used by ficklenet.dsrg.crf.
class CRFBackend(Choice):
    """Who runs the training CRF: ``pydensecrf`` (the reference, CPU worker
    processes) or ``torch`` (:mod:`ficklenet.dsrg.crf_torch`: exact dense kernels on
    the training device, for output maps of at most 64×64 cells)."""

    pydensecrf = "pydensecrf"
    torch = "torch"


# Used by ficklenet.dsrg.crf.
class Unary(Choice):
    """The CRF's unary energy: ``neg_log_prob`` (−log p, test) or ``neg_prob`` (−p,
    the official training CRF)."""

    neg_log_prob = "neg_log_prob"
    neg_prob = "neg_prob"


# Used by ficklenet.config.schema.
class CheckpointChoice(Choice):
    """Which checkpoint a training stage passes on: the end of its schedule, or its
    best epoch on val (then labelled wherever it is reported)."""

    last = "last"
    best = "best"


# Used by ficklenet.config.schema.
class BadInput(Choice):
    """What ficklenet-predict does with a file it cannot decode."""

    skip = "skip"
    stop = "stop"


# Used by ficklenet.lit.preemption.
class RequeueSignal(Choice):
    """The signal ``sbatch --signal`` sends before a job's end (``trainer.requeue_signal``)."""

    SIGUSR1 = "SIGUSR1"
    SIGUSR2 = "SIGUSR2"
    SIGHUP = "SIGHUP"
    SIGTERM = "SIGTERM"
