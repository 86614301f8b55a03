"""``ficklenet-pipeline``: classify → localize → segment → evaluate in one run directory.

    ficklenet-pipeline                                          # toy data, CPU
    ficklenet-pipeline -m model.p=0,0.3,0.5,0.7,0.9 seed=0,1,2   # one pipeline per setting
    ficklenet-pipeline -m 'table5=glob(*)' seed=0,1,2             # the paper's Table 5
    ficklenet-pipeline experiment=paper_vgg16 data.root=/path/VOCdevkit/VOC2012
    ficklenet-pipeline segment.segmenter.grow_fg_prob=0.9 checkpoint=best
    ficklenet-pipeline hydra.run.dir=<run> stages=[segment,evaluate,evaluate_crf]

A Hydra app like the stages' (``--help``, ``--cfg job``, ``-m``, launchers). Its
config (``conf/pipeline.yaml``) holds every stage's settings under the stage's name,
composed from the same ``conf/stage/<stage>.yaml`` as that stage's own app, and the
settings they share at the top level (``seed``, ``data``, ``backbone``, ``model``,
``trainer``, ``logger``), which each stage's copy interpolates. Each job is one whole
pipeline in its Hydra output directory, each stage in ``<run dir>/<stage>/``, chained
through their outputs (classifier checkpoint → seeds → segmenter checkpoint). A stage
whose ``metrics.json`` exists is finished and skipped; an interrupted one resumes
(training from ``last.ckpt``, localization at the next image); so rerunning a crashed
multirun with the same command resumes it (its sweep folder is named by the command).

The checkpoints passed on are those at the end of each schedule (``last.ckpt``), as
the papers report; ``checkpoint=best`` passes the best-on-val ones instead, which the
report labels, since choosing them on the split that is then reported inflates it.

A stage runs in this process, except when it needs several processes
(``trainer=ddp``/``ddp_cpu``, ``trainer.devices>1``, ``trainer.num_nodes>1``): then
its own app runs it as a command on the stage's resolved config
(``<stage dir>/launch.yaml``), so Lightning starts its processes exactly as for that
app alone. Loggers: every stage run of one pipeline shares a group named after the
pipeline run (``name``), is named ``<name>/<stage>``, and carries the pipeline's
shared settings (``pipeline.model_p``, ``pipeline.model_dropout``, ``pipeline.seed``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ficklenet.config import schema
from ficklenet.config.stages import STAGES
from ficklenet.errors import UserValueError
from ficklenet.files import atomic_path, read_json
from ficklenet.metric_names import CAM_BEST_MIOU, CAM_OBJECT_RECALL, MIOU, SEED, VAL_MAP
from ficklenet.tasks.entry_point import stage_main
from ficklenet.tasks.run_dir import hydra_run_dir, open_run_dir
from ficklenet.tasks.run_record import RECORD, compare, refusal

log = logging.getLogger("ficklenet.pipeline")


def pipeline_name(cfg: DictConfig, run_dir: Path) -> str:
    """``name``, else the overrides that made this job (Hydra's override_dirname),
    else the run directory's name."""
    if cfg.get("name"):
        return str(cfg.name)
    if HydraConfig.initialized():
        dirname = HydraConfig.get().job.override_dirname
        if dirname:
            return str(dirname)
    return run_dir.name


def stage_configs(cfg: DictConfig, run_dir: Path) -> dict[str, DictConfig]:
    """Each stage's config as its own app would get it: resolved, typed by its
    schema (a wrong type is refused here, before any stage runs), and labelled with
    the pipeline it belongs to."""
    cfg.run_dir = str(run_dir)
    name = pipeline_name(cfg, run_dir)
    info = schema.PipelineInfo(
        name=name,
        run_dir=str(run_dir),
        seed=int(cfg.seed),
        model_p=float(cfg.model.p),
        model_dropout=str(cfg.model.dropout),
    )
    out = {}
    for stage, spec in STAGES.items():
        values = OmegaConf.to_container(cfg[stage], resolve=True)
        typed = OmegaConf.merge(OmegaConf.structured(spec.schema), values)
        typed.name = f"{name}/{stage}"
        if typed.logger.group is None:
            typed.logger.group = name
        typed.pipeline = info
        out[stage] = typed
    return out


def needs_own_processes(cfg: DictConfig) -> bool:
    """Whether the stage's trainer spreads it over several processes."""
    trainer = cfg.get("trainer")
    if trainer is None:
        return False
    devices = trainer.get("devices", 1)
    several = devices not in (1, "1", "auto", [0])
    return several or int(trainer.get("num_nodes", 1)) > 1 or "ddp" in str(trainer.strategy)


def run_stage_command(stage: str, cfg: DictConfig, stage_dir: Path) -> None:
    """Run the stage's own app as a command on its resolved config."""
    spec = STAGES[stage]
    stage_dir.mkdir(parents=True, exist_ok=True)
    launch = OmegaConf.create({"defaults": [f"{spec.app}_schema", "_self_"]})
    launch = OmegaConf.merge(launch, OmegaConf.to_container(cfg, resolve=True))
    with atomic_path(stage_dir / "launch.yaml") as tmp:
        tmp.write_text(OmegaConf.to_yaml(launch))
    cmd = [
        sys.executable,
        "-m",
        spec.module,
        f"--config-dir={stage_dir}",
        "--config-name=launch",
        f"hydra.run.dir={stage_dir}",
    ]
    log.info("[%s] %s", stage, " ".join(cmd))
    returncode = subprocess.run(cmd, env=stage_environment(dict(os.environ))).returncode
    if returncode != 0:
        raise SystemExit(
            f"[{stage}] failed (exit status {returncode}); its log is in {stage_dir}. Rerun the "
            "same command to resume: finished stages are skipped."
        )


def stage_environment(env: dict[str, str]) -> dict[str, str]:
    """The environment of a stage run as a command.

    Inside a SLURM job of one task (a pipeline job from ``hydra/launcher=
    slurm_pipeline``), the stage's app must start its own processes on the node's
    GPUs, as on any machine: without SLURM's variables Lightning does so, while with
    them it would wait for tasks SLURM never starts. A job of several tasks (the
    stage apps' ``slurm_ddp``) keeps them: there SLURM starts the processes.
    """
    if env.get("SLURM_NTASKS", "1") == "1":
        return {k: v for k, v in env.items() if not k.startswith("SLURM_")}
    return env


def run_stage(stage: str, cfg: DictConfig, stage_dir: Path) -> None:
    STAGES[stage].runner()(cfg, run_dir=stage_dir)


def results(run_dir: Path) -> dict[str, Any]:
    """Each stage's metrics.json (those that exist), keyed by stage."""
    out = {}
    for stage in STAGES:
        path = run_dir / stage / "metrics.json"
        if path.is_file():
            out[stage] = read_json(path)
    return out


def results_table(res: dict[str, Any]) -> list[tuple[str, str]]:
    """The headline figures as (name, value) rows."""

    def pct(stage: str, key: str) -> str:
        value = res.get(stage, {}).get(key)
        return "-" if value is None else f"{100 * float(value):.1f}"

    return [
        ("classifier val mAP (end of training)", pct("classify", VAL_MAP)),
        ("seed mIoU (labelled pixels, localize split)", pct("localize", SEED.miou)),
        ("seed precision", pct("localize", SEED.precision)),
        ("seed recall", pct("localize", SEED.recall)),
        ("seed labelled fraction", pct("localize", SEED.labelled_fraction)),
        ("CAM best mIoU (bg sweep)", pct("localize", CAM_BEST_MIOU)),
        ("CAM object recall (at the seed threshold)", pct("localize", CAM_OBJECT_RECALL)),
        ("segmenter val mIoU, no CRF", pct("evaluate", MIOU)),
        ("segmenter val mIoU, dense CRF", pct("evaluate_crf", MIOU)),
    ]


def results_markdown(res: dict[str, Any]) -> str:
    """:func:`results_table` as a Markdown table."""
    rows = results_table(res)
    return "| figure | % |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def settings_lines(cfg: DictConfig) -> list[str]:
    """What made this run, for its report: the overrides of the defaults (Hydra's,
    an experiment already expanded into them) and, for a smoke run, a warning."""
    overrides: list[str] | None = None
    debug = None
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        overrides = list(hydra_cfg.overrides.task)
        debug = hydra_cfg.runtime.choices.get("debug")
    lines = []
    if debug or cfg.data.get("limit") is not None:
        limit = cfg.data.get("limit")
        lines += [
            f"**A debug run{f' (debug={debug})' if debug else ''}**: every stage saw "
            + (f"only the first {limit} ids of each split" if limit else "every id")
            + " with a shortened schedule; its figures check the plumbing, not the method.",
            "",
        ]
    if overrides is None:
        lines.append("Settings: composed outside a command line (see `config.yaml`).")
    elif overrides:
        shown = " ".join(f"`{o}`" for o in overrides)
        lines.append(f"Settings that differ from the defaults: {shown} (all: `config.yaml`).")
    else:
        lines.append("Settings: the defaults (all of them: `config.yaml`).")
    return [*lines, ""]


def write_report(
    run_dir: Path,
    res: dict[str, Any],
    seconds: float,
    checkpoint: str,
    settings: list[str] | None = None,
) -> str:
    table = results_markdown(res)
    chosen = (
        "the end of each training schedule (last.ckpt)"
        if checkpoint == "last"
        else "the best epoch on the validation split (best.ckpt): selected on the split "
        "the segmenter figures are reported on, so they are optimistic"
    )
    lines = [
        f"# ficklenet pipeline: {run_dir}",
        "",
        *(settings or []),
        table,
        "",
        f"Checkpoints passed between stages: {chosen}.",
        "",
        f"Wall time of this invocation: {seconds:.0f} s.",
        "",
    ]
    for stage in STAGES:
        overlays = sorted((run_dir / stage / "overlays").glob("*.png"))[:4]
        if overlays:
            lines += [f"## {stage} overlays", ""]
            lines += [f"![{p.stem}]({p.relative_to(run_dir)})" for p in overlays]
            lines.append("")
    text = "\n".join(lines)
    with atomic_path(run_dir / "report.md") as tmp:
        tmp.write_text(text)
    return table


def run_pipeline(cfg: DictConfig, run_dir: Path | None = None) -> float:
    """Run the stages of ``cfg.stages`` in ``run_dir`` (default: Hydra's output
    directory); return the final segmenter val mIoU (with CRF when it ran) for
    sweepers, NaN when no evaluation ran."""
    if run_dir is None:
        run_dir = hydra_run_dir()
        if run_dir is not None and Path(cfg.run_dir).absolute() != run_dir.absolute():
            raise UserValueError(
                f"run_dir={cfg.run_dir} is Hydra's output directory ({run_dir}) and is "
                f"not set on its own: set hydra.run.dir={cfg.run_dir} instead"
            )
    run_dir = Path(run_dir if run_dir is not None else cfg.run_dir or ".")
    configs = stage_configs(cfg, run_dir.absolute())
    check_stages(cfg, configs, run_dir)
    to_run = [s for s in cfg.stages if not (run_dir / s / "metrics.json").is_file()]
    if not to_run and (run_dir / "metrics.json").is_file():
        # Finished with these settings: report it again, write nothing.
        res = read_json(run_dir / "metrics.json")
        log.info("every stage of %s finished earlier with these settings: nothing to run", run_dir)
        print(f"\nficklenet pipeline results ({run_dir}):\n\n{results_markdown(res)}\n")
        return _final(res)
    # The pipeline's own directory: locked, config.yaml and the attempt in run_info.json
    # (each stage's directory is its stage's own).
    with open_run_dir("pipeline", cfg, None, run_dir, writer=True) as run:
        start = time.perf_counter()
        for stage in cfg.stages:
            stage_dir = run_dir / stage
            if stage not in to_run:
                log.info("[%s] finished earlier (%s): skipped", stage, stage_dir / "metrics.json")
                continue
            t0 = time.perf_counter()
            if needs_own_processes(configs[stage]):
                run_stage_command(stage, configs[stage], stage_dir)
            else:
                run_stage(stage, configs[stage], stage_dir)
            log.info("[%s] done in %.0f s", stage, time.perf_counter() - t0)
        res = results(run_dir)
        run.write_metrics(res)
        seconds = time.perf_counter() - start
        table = write_report(run_dir, res, seconds, str(cfg.checkpoint), settings_lines(cfg))
    print(f"\nficklenet pipeline results ({run_dir}):\n\n{table}\n")
    return _final(res)


def _final(res: dict[str, Any]) -> float:
    final = res.get("evaluate_crf", res.get("evaluate", {})).get(MIOU)
    return float("nan") if final is None else float(final)


def check_stages(cfg: DictConfig, configs: dict[str, DictConfig], run_dir: Path) -> None:
    """Refuse, before anything is written, a run directory whose stages were made with
    other settings or inputs than this pipeline's (each stage's run record, as the
    stage itself would check it): a finished stage is skipped only when it is this
    pipeline's."""
    refusals = []
    for stage in cfg.stages:
        stage_dir = run_dir / stage
        spec = STAGES[stage]
        if not (stage_dir / RECORD).is_file():
            continue
        try:
            now, before, differ = compare(stage_dir, spec.app, configs[stage], spec.dependencies())
        except FileNotFoundError:
            continue  # an input it read is gone: the stage itself says so if it runs
        if before is not None and differ:
            refusals.append(f"[{stage}] " + refusal(stage_dir, stage, before, now, differ))
    if refusals:
        raise UserValueError("\n".join(refusals))


main = stage_main("pipeline", run_pipeline)


if __name__ == "__main__":
    main()
