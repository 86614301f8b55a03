"""The base of every closed set of options, so each list of choices is written once.

Each set is a :class:`Choice` (a ``str`` enum) in the module that owns the concept
(``Dropout`` in :mod:`ficklenet.models.fickle`, ``Formula`` in
:mod:`ficklenet.localization.maps`, ...); the config schemas type their keys with
it, so Hydra refuses a misspelt choice when it composes the config, and library
functions called with a plain string parse it with :meth:`Choice.parse`.
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
