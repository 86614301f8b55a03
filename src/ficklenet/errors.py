"""Errors a user can act on: a bad value, a missing or corrupt file, a wrong key.

Their message says what failed, the file or key, and the fix. Every app
(:func:`ficklenet.tasks.entry_point.stage_main`) prints such an error as one line,
``ficklenet-<app>: <message>``, on stderr and exits with status 1; with
``HYDRA_FULL_ERROR=1`` the full traceback is shown instead. Any other exception is a
bug or an environment failure and keeps its traceback.

The subclasses keep the built-in type a caller (or a test) already catches:
:class:`UserValueError` is a ``ValueError``, :class:`UserFileNotFoundError` a
``FileNotFoundError``. This module imports nothing from the package, so any module
can raise them.
"""

from __future__ import annotations

import os

__all__ = [
    "Preempted",
    "UserError",
    "UserFileExistsError",
    "UserFileNotFoundError",
    "UserValueError",
    "full_error",
    "user_message",
]


class UserError(Exception):
    """A failure the user can fix; the message names the file or key and the fix."""


class Preempted(UserError):
    """The stage stopped on a cluster's warning before the kill; its state is saved and
    the same command resumes it (:mod:`ficklenet.lit.preemption`)."""


class UserValueError(UserError, ValueError):
    """A setting (or a file's content) with a value the run cannot use."""


class UserFileNotFoundError(UserError, FileNotFoundError):
    """A file or folder named by a setting does not exist."""


class UserFileExistsError(UserError, FileExistsError):
    """An output path is taken by something the run must not overwrite."""


def full_error() -> bool:
    """Whether the user asked for full tracebacks (``HYDRA_FULL_ERROR=1``)."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def user_message(error: BaseException) -> str | None:
    """The message to show for ``error`` if it is a :class:`UserError`, else None.

    A user error wrapped by a library (in its cause or context) counts as itself. An
    error raised in a DataLoader worker reaches the main process re-made by
    torch (``ExceptionWrapper.reraise``): the same type, but its message is "Caught
    <type> in DataLoader worker process N." followed by the worker's whole
    traceback. The original message is the text after the traceback's last
    ``<module>.<type>: `` line, and that is what is returned.
    """
    # A user error raised inside a library that wraps it (an OmegaConf resolver) is
    # in the chain of the error that arrives (its cause or context).
    depth = 0
    while not isinstance(error, UserError) and depth < 8:
        wrapper = type(error).__module__.startswith("omegaconf")  # re-raises, drops the cause
        inner = error.__cause__ or (error.__context__ if wrapper else None)
        if inner is None:
            break
        error, depth = inner, depth + 1
    if not isinstance(error, UserError):
        return None
    message = str(error)
    if message.startswith("Caught ") and "\nOriginal Traceback" in message:
        cls = type(error)
        name = cls.__qualname__
        if cls.__module__ not in ("builtins", "__main__"):
            name = f"{cls.__module__}.{name}"
        head, sep, tail = message.rpartition(f"\n{name}: ")
        if sep:
            message = tail
    return message.strip()
