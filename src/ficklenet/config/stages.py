"""The pipeline's stages, each declared once.

A :class:`StageSpec` says everything the rest of the package needs to know about a
stage: its name (its key in ``conf/pipeline.yaml``, its folder in a run directory, its
section in an experiment file), the app that runs it (``conf/<app>.yaml``,
``conf/stage/<app>.yaml``, ``ficklenet-<app>``), the app's typed schema, the function
that runs it, what it reads from the stages before it in a pipeline run directory,
the settings that make it this stage (``evaluate_crf`` is the evaluate app with
``crf=true``), and the checkpoint it writes.

Everything else reads :data:`STAGES`: the schemas registered in Hydra's ConfigStore
and the pipeline's config (:mod:`ficklenet.config.schema`), the experiment sections
(:mod:`ficklenet.config.experiments`), the pipeline (:mod:`ficklenet.tasks.pipeline`)
and the checkpoint reader (:mod:`ficklenet.checkpoints`). Adding a stage is one entry
here plus its config file (``conf/stage/<app>.yaml``, and ``conf/<app>.yaml`` with a
console script in ``pyproject.toml`` for a new app); ``tests/test_stage_registry.py``
adds a throw-away one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, make_dataclass
from functools import partial
from typing import Any, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import II

from ficklenet.choices import CheckpointChoice, Choice
from ficklenet.config import schema


@dataclass(frozen=True)
class StageSpec:
    """One stage of the pipeline.

    Attributes:
        name: the stage's name.
        app: the Hydra app that runs it.
        schema: the app's typed config.
        run: ``"module:function"``, called as ``function(cfg, run_dir=stage_dir)``.
        reads: in a pipeline, each config key this stage reads from an earlier stage,
            and the path inside the pipeline's run directory (``${checkpoint}`` is the
            pipeline's checkpoint choice), e.g. ``{"seeds": "localize"}``.
        settings: keys set to these values in the pipeline (what makes the stage).
        checkpoint: what the checkpoint it writes holds (None: it writes none).
        depends_on: ``"module:name"`` of its
            :class:`~ficklenet.tasks.run_record.DependsOn`: what its outputs depend on
            (its run record), which the pipeline checks before skipping it.
    """

    name: str
    app: str
    schema: type
    run: str
    reads: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    depends_on: str = ""

    @property
    def after(self) -> tuple[str, ...]:
        """The stages whose outputs it reads."""
        return tuple(dict.fromkeys(path.split("/", 1)[0] for path in self.reads.values()))

    @property
    def command(self) -> str:
        return f"ficklenet-{self.app}"

    @property
    def module(self) -> str:
        """The module whose ``python -m`` runs the app."""
        return self.run.split(":", 1)[0]

    def runner(self) -> Callable[..., Any]:
        return _load(self.run)

    def dependencies(self) -> Any:
        """Its ``DependsOn`` (see ``depends_on``)."""
        return _load(self.depends_on)


def _load(ref: str) -> Any:
    module, name = ref.split(":", 1)
    return getattr(importlib.import_module(module), name)


def _ckpt(stage: str) -> str:
    return f"{stage}/checkpoints/${{checkpoint}}.ckpt"


def _evaluation(name: str, crf: bool) -> StageSpec:
    """The evaluate app on the segmenter's checkpoint, without or with the dense CRF."""
    return StageSpec(
        name,
        "evaluate",
        schema.EvaluateConfig,
        "ficklenet.tasks.evaluate:run_evaluate",
        reads={"segmenter.ckpt": _ckpt("segment")},
        settings={"crf": crf},
        depends_on="ficklenet.tasks.evaluate:SEGMENTER_INPUT",
    )


# In pipeline order.
STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec(
            "classify",
            "classify",
            schema.ClassifyConfig,
            "ficklenet.tasks.classify:run_classify",
            checkpoint="FickleNet classifier",
            depends_on="ficklenet.tasks.classify:DEPENDS_ON",
        ),
        StageSpec(
            "localize",
            "localize",
            schema.LocalizeConfig,
            "ficklenet.tasks.localize:run_localize",
            reads={"classifier.ckpt": _ckpt("classify")},
            depends_on="ficklenet.tasks.localize:DEPENDS_ON",
        ),
        StageSpec(
            "segment",
            "segment",
            schema.SegmentConfig,
            "ficklenet.tasks.segment:run_segment",
            reads={"seeds": "localize"},
            checkpoint="segmenter",
            depends_on="ficklenet.tasks.segment:DEPENDS_ON",
        ),
        _evaluation("evaluate", crf=False),
        _evaluation("evaluate_crf", crf=True),
    )
}


def stage_names() -> list[str]:
    return list(STAGES)


def stage_apps() -> dict[str, type]:
    """{app: schema} of the apps that run stages, in pipeline order."""
    return {spec.app: spec.schema for spec in STAGES.values()}


def app_schemas() -> dict[str, type]:
    """{app: schema} of every app but the pipeline: the stages' and the two others."""
    return {**stage_apps(), "predict": schema.PredictConfig, "make_toy": schema.MakeToyConfig}


def trains(app: str) -> bool:
    """Whether ``app`` trains: it runs a stage that writes a checkpoint."""
    return any(spec.app == app and spec.checkpoint is not None for spec in STAGES.values())


def pipeline_links() -> dict[str, Any]:
    """The pipeline's chaining: each stage's ``reads`` as interpolations into the
    pipeline's run directory, and its ``settings`` (a config node Hydra merges after
    the stages' own configs)."""
    out: dict[str, Any] = {}
    for spec in STAGES.values():
        node: dict[str, Any] = {}
        for key, path in spec.reads.items():
            _set(node, key, f"${{run_dir}}/{path}")
        for key, value in spec.settings.items():
            _set(node, key, value)
        if node:
            out[spec.name] = node
    return out


def _set(node: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def readers_of(stage: str) -> list[tuple[StageSpec, str]]:
    """(spec, key) of every stage that reads ``stage``'s checkpoint."""
    prefix = f"{stage}/checkpoints/"
    return [
        (spec, key)
        for spec in STAGES.values()
        for key, path in spec.reads.items()
        if path.startswith(prefix)
    ]


# --------------------------------------------------------------------------------------
# ficklenet-pipeline's config: every stage's settings under its name, plus the settings
# the stages share at the top level.

# The settings at the pipeline's top level that every stage having them shares.
_SHARED_GROUPS: dict[str, type] = {
    "data": schema.DataConfig,
    "backbone": schema.BackboneConfig,
    "model": schema.ClassifierModelConfig,
    "trainer": schema.TrainerConfig,
    "logger": schema.LoggerConfig,
}


def _shared(stage: type) -> Any:
    """A stage's schema whose shared keys interpolate the pipeline's: seed, data,
    logger, the trainer key by key, the backbone, and the model where it is the
    classifier's (localize's ``model`` holds map-time overrides instead)."""
    hints = get_type_hints(stage)
    # Key by key: a stage's own value (classify's trainer.max_epochs from an
    # experiment) replaces the shared one.
    shared_trainer_keys = schema.keys_with_role(schema.TrainerConfig, schema.SHARED)
    shared: dict[str, Any] = dict(
        seed=II("seed"),
        data=II("data"),
        logger=II("logger"),
        backbone=II("backbone"),
        trainer=schema.TrainerConfig(**{k: II(f"trainer.{k}") for k in shared_trainer_keys}),
    )
    if hints.get("model") is schema.ClassifierModelConfig:
        shared["model"] = II("model")
    return stage(**{k: v for k, v in shared.items() if k in hints})


def pipeline_schema() -> type:
    """``ficklenet-pipeline``'s typed config, made from :data:`STAGES`: each stage's
    schema under its name (its shared keys interpolating the top-level ones), the
    stages' own config files in its defaults list, then :func:`pipeline_links`."""
    # The stages as a closed set of options, so Hydra refuses a misspelt one.
    stage_choice = Choice("Stage", [(name, name) for name in STAGES])
    defaults: list[Any] = ["_self_", *({f"stage@{n}": s.app} for n, s in STAGES.items())]
    defaults.append("pipeline_links")
    stage_fields = [
        (name, spec.schema, field(default_factory=partial(_shared, spec.schema)))
        for name, spec in STAGES.items()
    ]
    return make_dataclass(
        "PipelineConfig",
        [
            ("defaults", list[Any], field(default_factory=lambda: list(defaults))),
            *stage_fields,
            # Stages to run, in order; a stage whose metrics.json exists is skipped.
            ("stages", list[stage_choice], field(default_factory=stage_names)),
            # last: the end of each training schedule (as the papers report); best: the
            # best epoch on val, which then is labelled wherever it is reported.
            ("checkpoint", CheckpointChoice, CheckpointChoice.last),
            ("seed", int, 0),
            # This pipeline run's name in loggers (wandb group; stage runs
            # <name>/<stage>); null: the overrides that made it, else its run
            # directory's name.
            ("name", str | None, None),
            # The run directory (Hydra's output directory; unset in --cfg, which runs
            # nothing).
            ("run_dir", str | None, None),
            *((key, node, field(default_factory=node)) for key, node in _SHARED_GROUPS.items()),
        ],
    )


def register_schemas() -> None:
    """Put every app's schema in Hydra's ConfigStore as ``<app>_schema``, with the
    pipeline's (made from :data:`STAGES` as it is now) and its links. Cheap; call it
    again after changing :data:`STAGES`."""
    cs = ConfigStore.instance()
    apps: dict[str, type] = {**app_schemas(), "pipeline": pipeline_schema()}
    for app, node in apps.items():
        cs.store(name=f"{app}_schema", node=node)
    cs.store(name="pipeline_links", node=pipeline_links())
