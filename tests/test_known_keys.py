"""Unknown keys are refused even with ``+`` (issue 22, item 3).

Hydra's ``+`` adds a key wherever it is written, so ``+modle.p=0.5`` composed to an
unused ``modle:`` and the run went on with ``model.p=0.9``. Every app now checks its
composed config against its schema before it runs (the console-script runs are in
tests/test_bad_input.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from omegaconf import OmegaConf

from ficklenet.config.known_keys import UnknownKeyError, check_known_keys, unknown_keys
from ficklenet.tasks.entry_point import app_schema, checked
from tests.conftest import compose_config

# Each app as its own defaults compose it (evaluate also with a dataset of its own).
DEFAULTS = {
    "classify": [],
    "localize": [],
    "segment": [],
    "evaluate": ["segmenter.ckpt=x.ckpt"],
    "evaluate+data": ["segmenter.ckpt=x.ckpt", "data=toy"],
    "predict": ["segmenter.ckpt=x.ckpt", "input=images"],
    "make_toy": [],
    "pipeline": [],
}


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_every_app_composes_with_known_keys_only(name):
    app = name.split("+")[0]
    cfg = compose_config(app, DEFAULTS[name])
    assert unknown_keys(cfg, app_schema(app)) == []
    check_known_keys(cfg, app_schema(app), app)


def _refusal(app: str, *overrides: str) -> str:
    cfg = compose_config(app, [*DEFAULTS[app], *overrides])
    with pytest.raises(UnknownKeyError) as info:
        check_known_keys(cfg, app_schema(app), app)
    return str(info.value)


def test_a_misspelt_key_added_with_plus_is_refused_naming_the_closest():
    message = _refusal("classify", "+modle.p=0.5")
    assert message.startswith("unknown config key modle.p (did you mean model.p?)")
    assert "ficklenet-classify's config has no such key" in message
    assert "drop the '+' (model.p=...)" in message


def test_a_misspelt_key_inside_a_section_is_refused():
    message = _refusal("classify", "+trainer.max_epoch=3", "++data.rot=x")
    assert "trainer.max_epoch (did you mean trainer.max_epochs?)" in message
    assert "data.rot (did you mean data.root?)" in message
    assert message.startswith("unknown config keys ")


def test_an_optional_section_is_checked_when_it_is_set():
    """evaluate's ``data`` is typed ``DataConfig | None``: set, its keys are
    DataConfig's (None is walked past: test_free_form_fields_are_not_walked)."""
    message = _refusal("evaluate", "data=toy", "+data.toy.sise=64")
    assert "data.toy.sise (did you mean data.toy.size?)" in message


def test_a_key_unlike_any_is_refused_without_a_guess():
    message = _refusal("localize", "+zzz=1")
    assert message.startswith("unknown config key zzz: ")


def test_the_pipeline_refuses_unknown_keys_in_a_stage_section():
    message = _refusal("pipeline", "+classify.modle.p=0.5", "+segment.seedz=x")
    assert "classify.modle.p (did you mean classify.model.p?)" in message
    assert "segment.seedz" in message and "ficklenet-pipeline's config" in message


def test_make_toy_is_checked_too():
    message = _refusal("make_toy", "+toy.sizee=64")
    assert "toy.sizee (did you mean toy.size?)" in message and "ficklenet-make-toy" in message


@dataclass
class _Options:
    depth: int = 1


@dataclass
class _WithFreeForm:
    """A schema with an extension point: ``kwargs`` is free-form."""

    options: _Options = field(default_factory=_Options)
    kwargs: dict[str, Any] = field(default_factory=dict)
    anything: Any = None
    maybe: _Options | None = None


def test_free_form_fields_are_not_walked():
    cfg = OmegaConf.create(
        {
            "options": {"depth": 2},
            "kwargs": {"any": {"nested": 1}},
            "anything": {"x": 1},
            "maybe": {"depht": 3},
        }
    )
    assert unknown_keys(cfg, _WithFreeForm) == ["maybe.depht"]
    assert unknown_keys(OmegaConf.create({"maybe": None}), _WithFreeForm) == []


def test_the_app_refuses_before_it_runs(capsys, monkeypatch):
    """The wrapper every console script runs: one line on stderr, exit status 1, and
    the app's function never called; HYDRA_FULL_ERROR=1 raises the error itself."""
    calls = []
    task = checked("classify", lambda cfg: calls.append(cfg))
    cfg = compose_config("classify", ["+modle.p=0.5"])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as info:
        task(cfg)
    assert info.value.code == 1 and calls == []
    err = capsys.readouterr().err
    assert err.startswith("ficklenet-classify: unknown config key modle.p (did you mean model.p?)")
    assert err.count("\n") == 1
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(UnknownKeyError):
        task(cfg)
    monkeypatch.delenv("HYDRA_FULL_ERROR")
    task(compose_config("classify"))
    assert len(calls) == 1
