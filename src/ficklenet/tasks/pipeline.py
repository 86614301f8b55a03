"""``ficklenet-pipeline``: classify → localize → segment → evaluate in one run directory.

    ficklenet-pipeline                                   # toy data, CPU, runs/pipeline/<time>
    ficklenet-pipeline run_dir=runs/pipeline/toy         # rerun: finished stages are skipped
    ficklenet-pipeline run_dir=... stages=[localize,segment,evaluate]   # rerun from a stage
    ficklenet-pipeline data.root=/x trainer=gpu classify/model.p=0.5 localize/localize.n=50
    ficklenet-pipeline experiment=paper_vgg16 data.root=/path/VOCdevkit/VOC2012
    ficklenet-pipeline checkpoint=best      # chain best-on-val checkpoints (labelled)

Each stage is composed from its own config (``conf/<stage>.yaml``) exactly as its
own app would be, and runs in ``<run_dir>/<stage>/``. An override ``key=value``
goes to every stage whose config has ``key``'s first part (``data``, ``trainer``,
``seed``, ...); ``stage/key=value`` goes to that stage only. The stages are
chained through their outputs (classifier checkpoint → ``classifier.ckpt``, seeds
→ ``seeds``, segmenter checkpoint → ``segmenter.ckpt``). The checkpoints passed on
are those at the end of each schedule (``last.ckpt``), as the papers report;
``checkpoint=best`` passes the best-on-val ones instead, which the report labels,
since picking them on the split that is then reported inflates the figure. A stage whose
``metrics.json`` exists is finished and skipped; an interrupted one resumes
(training from ``last.ckpt``, localization at the next image). At the end the
results table is printed and written to ``<run_dir>/metrics.json`` and
``<run_dir>/report.md``. ``experiment=NAME`` puts the per-stage overrides of
``conf/pipeline/NAME.yaml`` (the paper settings) before the command line's.

A stage runs in this process, except when it needs several processes
(``trainer=ddp``/``ddp_cpu``, ``trainer.devices>1``, ``trainer.num_nodes>1``) or a
Hydra launcher is given (``hydra/launcher=submitit_slurm``, ``slurm_ddp``, with
``hydra.launcher.*`` settings): then its own app runs it as a command
(``python -m ficklenet.tasks.<stage> hydra.run.dir=<run_dir>/<stage> ...``, or a
one-job multirun through the launcher: a SLURM job per stage), so Lightning, Fabric
or SLURM start its processes exactly as they do for that app alone.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from ficklenet.config import conf_dir, register_schemas
from ficklenet.files import atomic_path, read_json, write_json
from ficklenet.provenance import run_info

log = logging.getLogger("ficklenet.pipeline")

STAGES = ("classify", "localize", "segment", "evaluate", "evaluate_crf")
#: Which training checkpoint each stage passes on: the end of its schedule, or the
#: best epoch on the validation split.
CHECKPOINTS = {"last": "last.ckpt", "best": "best.ckpt"}
# evaluate_crf is the evaluate app with dense-CRF post-processing.
_APP = {"evaluate_crf": "evaluate"}


def parse_args(
    argv: list[str],
) -> tuple[Path, list[str], dict[str, list[str]], list[str], str]:
    """(run_dir, stages, per-stage overrides, common overrides, checkpoint) from ``argv``.

    Hydra's own overrides (``hydra/launcher=...``, ``hydra.launcher.*``) are among
    the common ones; :func:`launch_overrides` picks them out.
    """
    run_dir = Path("runs/pipeline") / time.strftime("%Y-%m-%d_%H-%M-%S")
    stages = list(STAGES)
    per_stage: dict[str, list[str]] = {s: [] for s in STAGES}
    common: list[str] = []
    checkpoint = "last"
    for arg in argv:
        if "=" not in arg:
            raise SystemExit(f"ficklenet-pipeline: expected key=value, got {arg!r} (see --help)")
        key, value = arg.split("=", 1)
        if key == "run_dir":
            run_dir = Path(value)
        elif key == "checkpoint":
            if value not in CHECKPOINTS:
                raise SystemExit(f"checkpoint={value}: choose one of {sorted(CHECKPOINTS)}")
            checkpoint = value
        elif key == "experiment":
            for stage, overrides in experiment_overrides(value).items():
                per_stage[stage] = overrides + per_stage[stage]
        elif key == "stages":
            stages = [s.strip() for s in value.strip("[]").split(",") if s.strip()]
            unknown = [s for s in stages if s not in STAGES]
            if unknown:
                raise SystemExit(f"stages={value}: unknown {unknown}; choose from {list(STAGES)}")
        elif "/" in key and key.split("/", 1)[0] in STAGES:
            stage, rest = key.split("/", 1)
            per_stage[stage].append(f"{rest}={value}")
        else:
            common.append(arg)
    return run_dir, stages, per_stage, common, checkpoint


def experiment_overrides(name: str) -> dict[str, list[str]]:
    """Per-stage overrides of ``conf/pipeline/<name>.yaml`` (a paper setting)."""
    path = conf_dir() / "pipeline" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise SystemExit(f"experiment={name}: no {path}; choose from {known}")
    preset = OmegaConf.to_container(OmegaConf.load(path))
    assert isinstance(preset, dict)
    unknown = sorted(set(preset) - set(STAGES))
    if unknown:
        raise SystemExit(f"{path}: unknown stages {unknown}; stages are {list(STAGES)}")
    return {stage: [str(o) for o in overrides] for stage, overrides in preset.items()}


def launch_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra's own overrides, the stage config's) of ``overrides``."""
    own = [o for o in overrides if o.lstrip("+~").startswith(("hydra/", "hydra."))]
    return own, [o for o in overrides if o not in own]


def _root_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~").split(".")[0].split("/")[0]


def compose_stage(stage: str, overrides: list[str]) -> DictConfig:
    """The stage's config as its own app would compose it."""
    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name=_APP.get(stage, stage), overrides=overrides)


def stage_overrides(
    stage: str, run_dir: Path, common: list[str], own: list[str], checkpoint: str = "last"
) -> list[str]:
    """Chaining + common overrides that apply to this stage + its own."""
    chain = _chain(stage, run_dir, checkpoint)
    base = compose_stage(stage, chain)
    # A key the stage leaves null (evaluate's data: taken from the checkpoint)
    # is not overridden.
    shared = [o for o in common if base.get(_root_key(o)) is not None]
    return chain + shared + own


def _check_common_overrides(run_dir: Path, common: list[str]) -> None:
    """An override that no stage has is a typo or an unsupported option: stop."""
    if not common:
        return
    known: set[str] = set()
    for stage in STAGES:
        known |= set(compose_stage(stage, _chain(stage, run_dir)).keys())
    unused = [o for o in common if _root_key(o) not in known]
    if unused:
        raise SystemExit(
            f"ficklenet-pipeline: {unused} applies to none of the stages "
            f"(their top-level keys: {sorted(known)}). Use stage/key=value for one stage."
        )


def _chain(stage: str, run_dir: Path, checkpoint: str = "last") -> list[str]:
    name = CHECKPOINTS[checkpoint]
    if stage == "localize":
        return [f"classifier.ckpt={run_dir / 'classify' / 'checkpoints' / name}"]
    if stage == "segment":
        return [f"seeds={run_dir / 'localize'}"]
    if stage in ("evaluate", "evaluate_crf"):
        chain = [f"segmenter.ckpt={run_dir / 'segment' / 'checkpoints' / name}"]
        return chain + (["crf=true"] if stage == "evaluate_crf" else ["crf=false"])
    return []


def needs_own_processes(cfg: DictConfig) -> bool:
    """Whether the stage's trainer spreads it over several processes."""
    trainer = cfg.get("trainer")
    if trainer is None:
        return False
    devices = trainer.get("devices", 1)
    several = devices not in (1, "1", "auto", [0])
    return several or int(trainer.get("num_nodes", 1)) > 1 or "ddp" in str(trainer.strategy)


def run_stage_command(stage: str, overrides: list[str], stage_dir: Path, launch: list[str]) -> None:
    """Run the stage's own app as a command into ``stage_dir`` (through the Hydra
    launcher of ``launch`` when given: a one-job multirun)."""
    cmd = [sys.executable, "-m", f"ficklenet.tasks.{_APP.get(stage, stage)}"]
    if launch:
        sweep = [f"hydra.sweep.dir={stage_dir.parent}", f"hydra.sweep.subdir={stage_dir.name}"]
        cmd += ["-m", *launch, *sweep]
    else:
        cmd.append(f"hydra.run.dir={stage_dir}")
    cmd += overrides
    log.info("[%s] %s", stage, " ".join(cmd))
    returncode = subprocess.run(cmd).returncode
    if returncode != 0:
        raise SystemExit(
            f"[{stage}] failed (exit status {returncode}); its log is in {stage_dir}. Rerun the "
            "same command to resume: finished stages are skipped."
        )


def run_stage(stage: str, cfg: DictConfig, stage_dir: Path) -> None:
    from ficklenet.tasks.classify import run_classify
    from ficklenet.tasks.evaluate import run_evaluate
    from ficklenet.tasks.localize import run_localize
    from ficklenet.tasks.segment import run_segment

    runner = {
        "classify": run_classify,
        "localize": run_localize,
        "segment": run_segment,
        "evaluate": run_evaluate,
        "evaluate_crf": run_evaluate,
    }[stage]
    runner(cfg, run_dir=stage_dir)


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
        ("classifier val mAP (end of training)", pct("classify", "val/mAP")),
        ("seed mIoU (labelled pixels, localize split)", pct("localize", "seed/miou")),
        ("seed precision", pct("localize", "seed/precision")),
        ("seed recall", pct("localize", "seed/recall")),
        ("seed labelled fraction", pct("localize", "seed/labelled_fraction")),
        ("CAM best mIoU (bg sweep)", pct("localize", "cam/best_miou")),
        ("segmenter val mIoU, no CRF", pct("evaluate", "miou")),
        ("segmenter val mIoU, dense CRF", pct("evaluate_crf", "miou")),
    ]


def write_report(run_dir: Path, res: dict[str, Any], seconds: float, checkpoint: str) -> str:
    rows = results_table(res)
    table = "| figure | % |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    chosen = (
        "the end of each training schedule (last.ckpt)"
        if checkpoint == "last"
        else "the best epoch on the validation split (best.ckpt): selected on the split "
        "the segmenter figures are reported on, so they are optimistic"
    )
    lines = [
        f"# ficklenet pipeline: {run_dir}",
        "",
        table,
        "",
        f"Checkpoints passed between stages: {chosen}.",
        "",
        f"Wall time of this invocation: {seconds:.0f} s.",
        "",
    ]
    for stage in ("localize", "evaluate", "evaluate_crf"):
        overlays = sorted((run_dir / stage / "overlays").glob("*.png"))[:4]
        if overlays:
            lines += [f"## {stage} overlays", ""]
            lines += [f"![{p.stem}]({p.relative_to(run_dir)})" for p in overlays]
            lines.append("")
    text = "\n".join(lines)
    with atomic_path(run_dir / "report.md") as tmp:
        tmp.write_text(text)
    return table


def run_pipeline(argv: list[str]) -> dict[str, Any]:
    run_dir, stages, per_stage, common, checkpoint = parse_args(argv)
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    write_json(run_dir / "run_info.json", run_info())
    launch, common = launch_overrides(common)
    _check_common_overrides(run_dir, common)
    for stage in stages:
        stage_dir = run_dir / stage
        if (stage_dir / "metrics.json").is_file():
            log.info("[%s] finished earlier (%s): skipped", stage, stage_dir / "metrics.json")
            continue
        own_launch, overrides = launch_overrides(per_stage[stage])
        overrides = stage_overrides(stage, run_dir, common, overrides, checkpoint)
        log.info("[%s] %s", stage, " ".join(overrides) or "(defaults)")
        t0 = time.perf_counter()
        cfg = compose_stage(stage, overrides)
        if launch or own_launch or needs_own_processes(cfg):
            run_stage_command(stage, overrides, stage_dir, launch + own_launch)
        else:
            run_stage(stage, cfg, stage_dir)
        log.info("[%s] done in %.0f s", stage, time.perf_counter() - t0)
    res = results(run_dir)
    write_json(run_dir / "metrics.json", res)
    table = write_report(run_dir, res, time.perf_counter() - start, checkpoint)
    print(f"\nficklenet pipeline results ({run_dir}):\n\n{table}\n")
    return res


def main() -> None:
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
        return
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    run_pipeline(sys.argv[1:])


if __name__ == "__main__":
    main()
