"""A training loader that resumes in the middle of an epoch.

A run stopped between two epochs resumes exactly from ``last.ckpt``: the order of an
epoch is a function of (seed, epoch) (a ``DistributedSampler``), the augmentation of
(seed, epoch, index) (:mod:`ficklenet.data.datasets`), and the dropout masks of
(seed, step) (:class:`ficklenet.lit.trainer.StepSeedCallback`). A run stopped inside
an epoch (a cluster's preemption, :mod:`ficklenet.lit.preemption`) must also skip
the batches it already trained on: Lightning restarts the epoch's order from its
first batch while counting the epoch as partly done, and does not set the
augmentation's epoch.

So the training data module stores where training is (:class:`ResumePoint`: the
epoch and the batches of it done) in every checkpoint, through Lightning's
``LightningDataModule.state_dict``; loaded (before the training loader is made), it
is applied to the new loader's :class:`ResumableSampler`, whose first pass starts
after the batches done, and to the dataset's augmentation epoch. (Lightning's own
stateful-loader hook is not used: it is skipped when the loader was made early, for
``trainer.estimated_stepping_batches``, as the poly schedule does.)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from torch.utils.data import DistributedSampler

__all__ = ["ResumePoint", "ResumableSampler"]


@dataclass(frozen=True)
class ResumePoint:
    """Where a checkpoint's training resumes: ``epoch``, after ``batches_done`` of its
    batches (an epoch whose batches are all done is the next one, none done)."""

    epoch: int
    batches_done: int

    def state(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ResumePoint:
        return cls(int(state["epoch"]), int(state["batches_done"]))


class ResumableSampler(DistributedSampler):
    """A ``DistributedSampler`` whose next pass can start after its first items."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skip = 0  # items the next pass leaves out (then back to 0)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])

    def resume(self, point: ResumePoint, batch_size: int) -> None:
        """Make the next pass ``point.epoch``'s order, after its batches done."""
        self.set_epoch(point.epoch)
        self.skip = point.batches_done * batch_size
