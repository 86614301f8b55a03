"""Every default is stated in one place: the schema, or the option file of a config
group. Each app composed with no overrides runs exactly what that one place says, no
option file repeats the schema, and no schema holds a value every option replaces."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import MISSING, OmegaConf

from ficklenet.config import compose_app, conf_dir
from ficklenet.config import schema as S
from ficklenet.config.stages import stage_apps

APPS: dict[str, type] = {**stage_apps(), "predict": S.PredictConfig, "make_toy": S.MakeToyConfig}


def _dataclass_of(tp: Any) -> type | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = next((a for a in typing.get_args(tp) if a is not type(None)), None)
    return tp if dataclasses.is_dataclass(tp) else None


def _option_files(group: str) -> dict[str, dict[str, Any]]:
    """{option: its values} of a config group (conf/<group>/*.yaml), defaults lists dropped."""
    out = {}
    for path in sorted((conf_dir() / group).glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        data.pop("defaults", None)
        out[path.stem] = data
    return out


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; an empty mapping below the top stays a leaf."""
    if isinstance(tree, dict) and (tree or not prefix):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _schema_defaults(cls: type, prefix: str = "") -> dict[str, Any]:
    """{dotted key: the schema's default}; a nested dataclass that defaults to None
    (an optional section, such as callbacks.early_stopping) contributes its own
    defaults, which apply once it is enabled."""
    values = _flat(OmegaConf.to_container(OmegaConf.structured(cls), enum_to_str=True))
    out = {f"{prefix}{k}": v for k, v in values.items()}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        node = _dataclass_of(hints[f.name])
        if node is not None and out.get(f"{prefix}{f.name}", "") is None:
            out.update(_schema_defaults(node, f"{prefix}{f.name}."))
    return out


def _groups() -> dict[str, type]:
    """{config group: the schema of the key it fills}: a field of an app's schema
    named like a folder of conf/ (a field of another type by that name, such as
    localize's map-time ``model``, is not filled by the group)."""
    found: dict[str, set[type]] = {}
    for cls in APPS.values():
        for f in dataclasses.fields(cls):
            node = _dataclass_of(typing.get_type_hints(cls)[f.name])
            if node is not None and (conf_dir() / f.name).is_dir():
                found.setdefault(f.name, set()).add(node)
    out = {}
    for group, candidates in found.items():
        keys = {k for values in _option_files(group).values() for k in _flat(values)}
        fitting = [c for c in candidates if keys <= set(_schema_defaults(c))]
        assert len(fitting) == 1, (group, candidates)
        out[group] = fitting[0]
    return out


GROUPS = _groups()


def _same(a: Any, b: Any) -> bool:
    return str(a) == str(b)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_no_option_file_repeats_the_schema_and_no_schema_value_is_always_replaced(group):
    defaults = _schema_defaults(GROUPS[group])
    options = {name: _flat(values) for name, values in _option_files(group).items()}
    repeated = [
        f"conf/{group}/{name}.yaml: {key}={value}"
        for name, values in options.items()
        for key, value in values.items()
        if _same(value, defaults[key]) and defaults[key] != MISSING
    ]
    assert not repeated, f"option files repeat the schema's default (state it once): {repeated}"
    set_by_all = set.intersection(*(set(v) for v in options.values()))
    never_run = {k: defaults[k] for k in sorted(set_by_all) if defaults[k] != MISSING}
    assert not never_run, (
        f"{GROUPS[group].__name__} holds values that never run, since every option of "
        f"conf/{group}/ sets them; leave them without a value (MISSING): {never_run}"
    )


@pytest.mark.parametrize("app", sorted(APPS))
def test_each_key_runs_what_its_one_place_states(app):
    cfg = compose_app(app, return_hydra_config=True)
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if v is not None}
    del cfg.hydra
    composed = _flat(OmegaConf.to_container(cfg, resolve=False, enum_to_str=True))
    stated = _schema_defaults(APPS[app])
    for group, option in choices.items():
        if group not in GROUPS or not (conf_dir() / group / f"{option}.yaml").is_file():
            continue
        base = {f"{group}.{k}": v for k, v in _schema_defaults(GROUPS[group]).items()}
        values = _flat(_option_files(group)[option], f"{group}.")
        stated.update({**base, **values})
    wrong = {
        key: (value, stated.get(key, "<no such key>"))
        for key, value in composed.items()
        if not _same(value, stated.get(key, "<no such key>"))
    }
    assert not wrong, (
        f"ficklenet-{app} runs values its schema or its group's option file does not "
        f"state (key: (runs, stated)): {wrong}"
    )


def test_the_stage_and_app_files_state_no_value():
    """conf/<app>.yaml and conf/stage/*.yaml choose groups and link stages; a value
    set there would compete with the schema's."""
    files = [conf_dir() / f"{app}.yaml" for app in APPS] + sorted(
        (conf_dir() / "stage").glob("*.yaml")
    )
    files.append(conf_dir() / "pipeline.yaml")
    for path in files:
        data = yaml.safe_load(Path(path).read_text()) or {}
        data.pop("defaults", None)
        data.pop("hydra", None)  # Hydra's own settings (where a run writes), no app key
        values = {k: v for k, v in _flat(data).items() if not str(v).startswith("${")}
        assert not values, f"{path} states values {values}: state them in the schema"
