"""Errors a user can act on print as one clean message (issue 22, item 4).

The wrapper every console script runs (:func:`ficklenet.tasks.entry_point.checked`)
and the unwrapping of errors raised in DataLoader workers, in-process; the console
scripts themselves (a bad checkpoint, a corrupt mask, ``HYDRA_FULL_ERROR=1``) are in
tests/test_bad_input.py.
"""

from __future__ import annotations

import pytest
from torch._utils import ExceptionWrapper

from ficklenet.data.voc import VOCDataError, read_label_png
from ficklenet.errors import (
    UserError,
    UserFileNotFoundError,
    UserValueError,
    user_message,
)
from ficklenet.models.fickle import check_rate
from ficklenet.tasks.entry_point import checked


def test_user_errors_keep_the_builtin_types_callers_catch():
    assert issubclass(UserValueError, ValueError) and issubclass(UserValueError, UserError)
    assert issubclass(UserFileNotFoundError, FileNotFoundError)
    assert issubclass(VOCDataError, UserError)
    with pytest.raises(ValueError, match=r"model.p=1.0: the dropout rate must be in \[0, 1\)"):
        check_rate(1.0, "model.p")
    assert user_message(KeyError("x")) is None, "other errors keep their traceback"


def _from_a_worker(error: BaseException) -> BaseException:
    """``error`` as torch's DataLoader re-raises it in the main process."""
    try:
        try:
            raise OSError("Truncated File Read")
        except OSError as cause:
            raise error from cause
    except Exception:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(type(error)) as info:
        wrapper.reraise()
    return info.value


def test_an_error_from_a_dataloader_worker_is_unwrapped(tmp_path):
    path = tmp_path / "mask.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(VOCDataError) as info:
        read_label_png(path)
    original = str(info.value)
    wrapped = _from_a_worker(info.value)
    assert type(wrapped) is VOCDataError
    assert str(wrapped).startswith("Caught VOCDataError in DataLoader worker process 0.")
    assert "Traceback" in str(wrapped)
    assert user_message(wrapped) == original
    assert str(path) in original and "cannot decode label mask" in original
    multi_line = UserValueError("first line\nsecond line")
    assert user_message(_from_a_worker(multi_line)) == "first line\nsecond line"


def test_a_user_error_prints_one_line_and_exits_1(capsys, monkeypatch):
    def bad_value(cfg):
        check_rate(cfg, "model.p")

    task = checked("demo", bad_value)  # no schema: no key check
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as info:
        task(1.5)
    assert info.value.code == 1
    captured = capsys.readouterr()
    assert captured.err == ("ficklenet-demo: model.p=1.5: the dropout rate must be in [0, 1)\n")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(UserValueError):
        task(1.5)


def test_other_errors_pass_through(monkeypatch):
    def bug(cfg):
        raise KeyError("a bug keeps its traceback")

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(KeyError):
        checked("demo", bug)(None)


def test_a_user_error_wrapped_by_a_library_is_shown_as_itself():
    from omegaconf import OmegaConf

    import ficklenet.config  # noqa: F401 - registers the resolver
    from ficklenet.errors import UserError, user_message

    cfg = OmegaConf.create({"root": "${from_checkpoint:}"})
    with pytest.raises(Exception) as caught:  # noqa: PT011 - whatever OmegaConf wraps it in
        _ = cfg.root
    assert not isinstance(caught.value, UserError)
    assert user_message(caught.value).startswith("data=checkpoint: only ficklenet-evaluate")
