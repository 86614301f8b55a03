"""Refuse keys an app's schema does not have.

Hydra checks a composed config against the app's typed schema, but an override with
``+`` (or ``++``) adds a key wherever it is written: ``+modle.p=0.5`` composes to an
unused ``modle: {p: 0.5}`` beside the real ``model.p``, and the run goes on with the
default. :func:`check_known_keys` walks the composed config against the schema's
dataclasses and refuses every key they do not declare, naming the closest key that
exists.

What the walk reads as the schema says it:

* a section typed ``X | None`` (evaluate's ``data``) is walked against ``X`` when it
  holds one;
* a field typed ``dict`` or ``Any`` is free-form: its keys are not checked. That is
  how a schema states an extension point (a logger's own keyword arguments, say):
  type the field ``dict[str, Any]``.
"""

from __future__ import annotations

import difflib
from dataclasses import fields, is_dataclass
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig

from ficklenet.errors import UserError

__all__ = ["UnknownKeyError", "check_known_keys", "schema_keys", "unknown_keys"]

# Hydra's own node (present when a config is composed with return_hydra_config).
_HYDRA_KEYS = frozenset({"hydra"})


class UnknownKeyError(UserError):
    """A config key that the app's schema does not have."""


def _section(tp: Any) -> type | None:
    """The dataclass a field holds (``X`` or ``X | None``), else None."""
    if get_origin(tp) in (Union, UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else None
    return tp if isinstance(tp, type) and is_dataclass(tp) else None


def _field_types(schema: type) -> dict[str, Any]:
    hints = get_type_hints(schema)
    return {f.name: hints.get(f.name, Any) for f in fields(schema)}


def schema_keys(schema: type, prefix: str = "") -> list[str]:
    """Every dotted key ``schema`` declares: sections and the keys inside them."""
    out: list[str] = []
    for name, tp in _field_types(schema).items():
        key = f"{prefix}{name}"
        out.append(key)
        section = _section(tp)
        if section is not None:
            out += schema_keys(section, f"{key}.")
    return out


def _walkable(node: Any) -> bool:
    """A section holding keys: not None, ``???`` or an interpolation (``${data}``
    in the pipeline's stages is checked where it points)."""
    return isinstance(node, DictConfig) and not (
        node._is_none() or node._is_missing() or node._is_interpolation()
    )


def _leaves(node: Any, prefix: str) -> list[str]:
    """The dotted keys under an unknown node (itself when it holds a value)."""
    if _walkable(node) and len(node):
        return [k for key in node for k in _leaves(node._get_node(key), f"{prefix}.{key}")]
    return [prefix]


def unknown_keys(cfg: DictConfig, schema: type, prefix: str = "") -> list[str]:
    """The dotted keys of ``cfg`` that ``schema`` does not declare (an unknown
    section as the keys set inside it)."""
    types = _field_types(schema)
    out: list[str] = []
    for key in cfg:
        key = str(key)
        dotted = f"{prefix}{key}"
        if not prefix and key in _HYDRA_KEYS:
            continue
        if key not in types:
            out += _leaves(cfg._get_node(key), dotted)
            continue
        section = _section(types[key])
        node = cfg._get_node(key)
        if section is not None and _walkable(node):
            out += unknown_keys(node, section, f"{dotted}.")
    return out


def closest_key(key: str, known: list[str]) -> str | None:
    """The declared key most like ``key`` (difflib), if any is close."""
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if match:
        return match[0]
    # A misspelt section: compare its first part alone (``modle.p`` -> ``model``).
    head, _, rest = key.partition(".")
    sections = [k for k in known if "." not in k]
    match = difflib.get_close_matches(head, sections, n=1, cutoff=0.6)
    if match and rest and f"{match[0]}.{rest}" in known:
        return f"{match[0]}.{rest}"
    return match[0] if match else None


def check_known_keys(cfg: DictConfig, schema: type, app: str) -> None:
    """Raise :class:`UnknownKeyError` naming every key of ``cfg`` that ``app``'s
    ``schema`` does not declare, with the closest declared key and the fix."""
    unknown = unknown_keys(cfg, schema)
    if not unknown:
        return
    script = f"ficklenet-{app.replace('_', '-')}"
    known = schema_keys(schema)
    parts = []
    for key in unknown:
        near = closest_key(key, known)
        parts.append(f"{key} (did you mean {near}?)" if near else key)
    fix = (
        "Hydra's '+' adds a key that nothing reads, so the run would silently use the "
        "defaults. Fix the spelling and drop the '+'"
    )
    if len(unknown) == 1 and (near := closest_key(unknown[0], known)):
        fix += f" ({near}=...)"
    raise UnknownKeyError(
        f"unknown config key{'s' if len(unknown) > 1 else ''} {', '.join(parts)}: "
        f"{script}'s config has no such key. {fix}; `{script} --cfg job` "
        "shows the keys there are."
    )
