"""Third-party messages that say nothing to a ficklenet user, silenced in one place.

Every stage calls :func:`quiet` before it builds a Lightning ``Trainer`` or
``Fabric`` (:mod:`ficklenet.lit.processes`). Each message is matched precisely —
the start of a line Lightning logs (:data:`LOG_LINES`), or a warning's text and
category (:data:`WARNINGS`) — so everything else these libraries say still shows,
as do the project's own warnings (``freeze_bn=True`` on a randomly initialised
backbone, a weights file read with ``weights_only=False``, ...).

Fixed where they arise instead of hidden: localize's ``predict_step`` returns the
number of images it wrote (Lightning warned "predict returned None"), the training
stages log every ``min(trainer.log_every_n_steps, batches per epoch)`` steps
(:class:`ficklenet.lit.trainer.LogIntervalCallback`; Lightning warned the interval
was longer than an epoch), and a wandb run is started without the ``anonymous``
setting Lightning passes and wandb no longer has (:mod:`ficklenet.lit.loggers`).
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["LOG_LINES", "WARNINGS", "quiet"]

#: The starts of Lightning's info lines that advertise or speak of hardware this
#: project never uses. "GPU available: ..., used: ..." stays: it says where the
#: stage runs.
LOG_LINES: tuple[str, ...] = (
    "💡 Tip:",  # advertising for Lightning's cloud services (litlogger, litmodels)
    "TPU available:",
    "HPU available:",
    # the one-cycle / poly schedule asks how many steps training takes
    "Loading `train_dataloader` to estimate number of stepping batches",
)

#: (warning text, as a regular expression matched at its start; category) of
#: warnings raised inside third-party code that a user cannot act on.
WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # torch deprecates a class Lightning's own pytree helper still uses.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    # A resumed run reopens its own checkpoints folder: by design (the run record
    # refuses a folder made with other settings before training starts).
    (r"Checkpoint directory .* exists and is not empty", Warning),
    # The only modules in eval mode when training starts are the BatchNorm layers
    # that backbone.freeze_bn=true (resnet101's default) keeps frozen on purpose.
    (r"Found \d+ module\(s\) in eval mode at the start of training", Warning),
)

# The loggers Lightning's rank-zero messages go through (which one depends on
# which of pytorch_lightning and lightning_fabric was imported last).
_LIGHTNING_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
)


class _DropLines(logging.Filter):
    """Drops the records whose message starts with one of ``starts``."""

    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.starts)


_FILTER = _DropLines(LOG_LINES)


def quiet() -> None:
    """Install the filters (idempotent: a second call changes nothing)."""
    for name in _LIGHTNING_LOGGERS:
        logging.getLogger(name).addFilter(_FILTER)  # a logger keeps one copy
    for message, category in WARNINGS:
        # filterwarnings moves an identical filter to the front instead of adding it
        warnings.filterwarnings("ignore", message=message, category=category)
