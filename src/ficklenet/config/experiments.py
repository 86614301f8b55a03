"""Experiments: named settings for every app, one file each (``conf/experiment/``).

An experiment file lists Hydra overrides: ``shared`` ones, then one list per stage
(:data:`ficklenet.config.stages.STAGES`) and one for ``predict``; ``extends: OTHER``
starts from another experiment (:func:`load_experiment`). Every
app reads the same file the same way (:func:`expand_experiment`): ``experiment=NAME``
on the command line is replaced by the overrides that concern the app, placed
before the command line's own, which therefore win:

- a stage app (``ficklenet-classify`` ...) takes the ``shared`` overrides whose
  key it has, then its own stage's list;
- ``ficklenet-pipeline`` takes ``shared`` at its top level (where the shared
  ``seed``, ``data``, ``backbone``, ``model``, ``trainer``, ``logger`` live) and
  every stage's list under that stage: ``key=value`` becomes ``<stage>.key=value``
  and a group choice ``group=option`` becomes ``group@<stage>.group=option``.

Written as overrides rather than as a Hydra config, one file can set stage-specific
config groups (``optim=sgd`` for the classifier, ``optim=dsrg_sgd`` for the
segmenter) for apps that hold them at different places. A multirun over several
experiments is one command per experiment.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from ficklenet.config import schema
from ficklenet.config.stages import STAGES, stage_apps


def experiment_sections() -> tuple[str, ...]:
    """An experiment file's sections: shared, each stage (:data:`STAGES`), and predict
    (no pipeline stage, but an app an experiment may set too)."""
    return ("shared", *STAGES, "predict")


class ExperimentError(ValueError):
    """An experiment that does not exist or is malformed; the message names the file."""


def experiment_dir() -> Path:
    from ficklenet.config import conf_dir

    return conf_dir() / "experiment"


def available() -> list[str]:
    return sorted(p.stem for p in experiment_dir().glob("*.yaml"))


def load_experiment(name: str, _seen: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """The experiment's sections as lists of override strings.

    ``extends: OTHER`` makes it ``OTHER`` plus its own overrides: section by section,
    an override of a key ``OTHER`` sets replaces that one in place, any other is added.
    """
    path = experiment_dir() / f"{name}.yaml"
    if "," in name:
        raise ExperimentError(
            f"experiment={name}: one experiment per command (a multirun over experiments "
            "is one command each); sweep the settings inside one instead"
        )
    if not path.is_file():
        raise ExperimentError(f"experiment={name}: no {path}; choose one of {available()}")
    raw = OmegaConf.load(path)
    allowed = experiment_sections()
    if not isinstance(raw, DictConfig):
        raise ExperimentError(f"{path}: expected sections {list(allowed)}, got a list")
    unknown = sorted(set(raw.keys()) - set(allowed) - {"extends"})
    if unknown:
        raise ExperimentError(
            f"{path}: unknown sections {unknown}; sections are {list(allowed)} and extends"
        )
    base: dict[str, list[str]] = {section: [] for section in allowed}
    parent = raw.get("extends")
    if parent is not None:
        if not isinstance(parent, str) or parent in (*_seen, name):
            raise ExperimentError(
                f"{path}: `extends` must name one other experiment, without a cycle "
                f"(got {parent!r} after {list(_seen) + [name]})"
            )
        base = load_experiment(parent, (*_seen, name))
    out: dict[str, list[str]] = {}
    for section in allowed:
        items = raw.get(section)
        items = [] if items is None else items
        if not isinstance(items, ListConfig | list) or not all(
            isinstance(i, str) and "=" in i for i in items
        ):
            raise ExperimentError(f"{path}: `{section}` must be a list of key=value overrides")
        merged = {key_of(o): o for o in base[section]}
        merged.update({key_of(str(o)): str(o) for o in items})
        out[section] = list(merged.values())
    return out


def split_experiment(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """(the experiment named on the command line, the other arguments)."""
    name, rest = None, []
    for arg in argv:
        if arg.startswith("experiment="):
            if name is not None:
                raise ExperimentError("experiment= given twice: one experiment per command")
            name = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return name, rest


def expand_experiment(app: str, argv: Sequence[str]) -> list[str]:
    """``argv`` with ``experiment=NAME`` replaced by its overrides for ``app`` (a stage
    app's name or ``pipeline``), before the command line's other arguments."""
    name, rest = split_experiment(argv)
    if name is None:
        return list(argv)
    sections = load_experiment(name)
    if app == "pipeline":
        expanded = list(sections["shared"])
        for stage in STAGES:
            expanded += [nest(stage, o) for o in sections[stage]]
    else:
        base = base_config(app)
        expanded = [o for o in sections["shared"] if concerns(base, o)]
        expanded += sections[app]
    # Hydra's options (-m, --cfg job, ...) stay first; the experiment's overrides
    # come before the command line's, which win.
    from ficklenet.config.sweeps import split_options

    options, others = split_options(rest)
    return [*options, *expanded, *others]


def key_of(override: str) -> str:
    """The key (or group) an override sets: ``+a.b=1`` → ``a.b``."""
    return override.split("=", 1)[0].lstrip("+~")


def is_group_choice(override: str) -> bool:
    """``optim=sgd`` (a config group's option) rather than ``optim.lr=...``."""
    from ficklenet.config import conf_dir

    key = key_of(override)
    return "." not in key and "@" not in key and (conf_dir() / key).is_dir()


def nest(stage: str, override: str) -> str:
    """A stage app's override as the same setting under ``<stage>`` in the pipeline."""
    prefix = override[: len(override) - len(override.lstrip("+~"))]
    key, value = override.lstrip("+~").split("=", 1)
    if is_group_choice(override):
        return f"{prefix}{key}@{stage}.{key}={value}"
    return f"{prefix}{stage}.{key}={value}"


def concerns(base: DictConfig, override: str) -> bool:
    """Whether an app whose default config is ``base`` has the key ``override`` sets."""
    key = key_of(override)
    if is_group_choice(override):
        return key in base
    # The key exists when its parent is a section holding it (a key the schema leaves
    # without a value, MISSING, exists too; a section that is None holds nothing).
    parent, _, last = key.rpartition(".")
    node = (
        OmegaConf.select(base, parent, default=_ABSENT, throw_on_missing=False) if parent else base
    )
    return isinstance(node, DictConfig) and last in list(node.keys())  # MISSING keys too


_ABSENT = object()


def base_config(app: str) -> DictConfig:
    """The app's typed schema with its defaults: which keys it has."""
    schemas = {**stage_apps(), "predict": schema.PredictConfig}
    if app not in schemas:
        raise ExperimentError(f"no app {app!r}; apps are {sorted(schemas)} and pipeline")
    return OmegaConf.structured(schemas[app])


def describe(name: str) -> dict[str, Any]:
    """An experiment's sections (for documentation and tests)."""
    return dict(load_experiment(name))
