"""ficklenet-pipeline: a Hydra app running four stages chained in one run directory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ficklenet.config.experiments import expand_experiment
from ficklenet.localization.quality import load_maps
from ficklenet.models.backbones import BACKBONES
from ficklenet.tasks.pipeline import run_pipeline, stage_configs
from tests.conftest import compose_config


def _tiny(root) -> list[str]:
    return [
        f"data.root={root}",
        "data.make_toy_if_missing=false",
        "data.crop_size=64",
        "data.num_workers=0",
        "trainer.enable_progress_bar=false",
        "classify.trainer.max_epochs=1",
        "localize.localize.n=4",
        "localize.localize.overlays=1",
        "segment.trainer.max_epochs=1",
    ]


def pipeline(run_dir, root, *overrides):
    """Run the pipeline app's config in-process (run_dir given: no Hydra runtime)."""
    cfg = compose_config("pipeline", [*_tiny(root), *overrides])
    run_pipeline(cfg, run_dir)
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_pipeline_runs_all_stages_then_skips_them(tmp_path, toy_root):
    run = tmp_path / "pipe"
    res = pipeline(run, toy_root)
    assert set(res) == {"classify", "localize", "segment", "evaluate", "evaluate_crf"}
    assert 0 <= res["classify"]["val/mAP"] <= 1
    assert 0 <= res["localize"]["seed/miou"] <= 1
    assert 0 <= res["evaluate"]["miou"] <= 1 and 0 <= res["evaluate_crf"]["miou"] <= 1
    report = (run / "report.md").read_text()
    assert "seed precision" in report and "localize/overlays/" in report
    assert "end of each training schedule" in report
    # the stages are chained through their outputs: the end-of-schedule checkpoints
    seg_cfg = OmegaConf.load(run / "segment" / "config.yaml")
    assert seg_cfg.seeds == str(run.absolute() / "localize")
    eval_cfg = OmegaConf.load(run / "evaluate" / "config.yaml")
    assert eval_cfg.segmenter.ckpt.endswith("segment/checkpoints/last.ckpt")
    assert (run / "config.yaml").is_file() and (run / "run_info.json").is_file()

    stamps = {p: p.stat().st_mtime_ns for p in run.glob("*/metrics.json")}
    assert pipeline(run, toy_root) == res
    assert {p: p.stat().st_mtime_ns for p in run.glob("*/metrics.json")} == stamps

    (run / "evaluate_crf" / "metrics.json").unlink()
    pipeline(run, toy_root, "stages=[evaluate_crf]")
    assert (run / "evaluate_crf" / "metrics.json").is_file()


def test_shared_keys_reach_every_stage_and_stage_keys_one(tmp_path):
    cfg = compose_config(
        "pipeline",
        [
            "data=voc",
            "data.root=/data/VOC2012",
            "model.p=0.5",
            "table5=general_0.9",  # the command line's model.p wins over the group
            "trainer=gpu",
            "seed=3",
            "segment.segmenter.grow_fg_prob=0.9",
            "optim@classify.optim=sgd",
            "classify.trainer.max_epochs=7",
            "checkpoint=best",
        ],
    )
    stages = stage_configs(cfg, tmp_path)
    assert stages["classify"].model.p == 0.5 and stages["classify"].model.dropout == "general"
    assert stages["classify"].optim.name == "sgd" and stages["segment"].optim.name == "adam"
    assert stages["classify"].trainer.max_epochs == 7 and stages["segment"].trainer.max_epochs == 40
    for name, stage in stages.items():
        assert stage.seed == 3 and stage.trainer.accelerator == "gpu", name
        assert stage.data.root == "/data/VOC2012" and stage.data.name == "voc", name
        assert stage.pipeline.model_p == 0.5 and stage.pipeline.seed == 3
        assert stage.name.endswith(f"/{name}")
    assert stages["segment"].segmenter.grow_fg_prob == 0.9
    assert stages["localize"].classifier.ckpt == str(tmp_path / "classify/checkpoints/best.ckpt")
    assert stages["evaluate_crf"].crf and not stages["evaluate"].crf


@pytest.mark.parametrize(
    "override", ["classify.modle.p=0.5", "segment.segmenter.grow_fg_prob=high", "stagess=[x]"]
)
def test_typos_and_wrong_types_are_refused_before_any_stage_runs(tmp_path, override):
    with pytest.raises(Exception, match=r"modle|grow_fg_prob|stagess"):
        stage_configs(compose_config("pipeline", [override]), tmp_path)


def test_paper_experiments_compose_for_the_pipeline(tmp_path):
    """experiment=paper_* gives each stage the paper's settings, offline."""
    for name, backbone in (("paper_vgg16", "vgg16"), ("paper_resnet101", "resnet101")):
        argv = expand_experiment(
            "pipeline",
            [f"experiment={name}", "data.root=/data/VOC2012", "localize.localize.n=20"],
        )
        cfgs = stage_configs(compose_config("pipeline", argv), tmp_path)
        assert cfgs["classify"].backbone.name == backbone and cfgs["classify"].model.p == 0.9
        assert cfgs["classify"].model.kernel_size == 9 and cfgs["classify"].optim.name == "sgd"
        assert cfgs["localize"].data.root == "/data/VOC2012"
        assert cfgs["localize"].localize.n == 20  # the command line wins over the preset
        assert cfgs["localize"].localize.fg_threshold == 0.2
        assert cfgs["segment"].backbone.name == backbone
        assert cfgs["segment"].optim.name == "sgd" and cfgs["segment"].trainer.max_steps == 8000
        assert cfgs["segment"].optim.step_size == 1000
        assert list(cfgs["evaluate_crf"].scales) == [0.75, 1.0, 1.25]
        assert cfgs["evaluate_crf"].crf and not cfgs["evaluate"].crf


def test_voc_window_experiment_gives_every_stage_a_24_by_24_map(tmp_path):
    """experiment=voc_window: the toy at 192 px (a 24x24 map at stride 8) with s=5 and
    the segmenter's dilations doubled, everything else the proving ground's; s=9 from
    the command line."""
    argv = expand_experiment(
        "pipeline", ["experiment=voc_window", "table5=fickle_0.9", "backbone.fickle_kernel_size=9"]
    )
    cfgs = stage_configs(compose_config("pipeline", argv), tmp_path)
    for stage in ("classify", "localize", "segment", "evaluate"):
        data = cfgs[stage].data
        assert data.toy.size == 192 and data.root == "data/toy-voc-192", stage
        assert data.saliency_dir == "Saliency" and data.toy.saliency == "realistic", stage
    assert cfgs["classify"].data.crop_size == 192
    assert cfgs["classify"].model.kernel_size == 9 and cfgs["classify"].model.p == 0.9
    plain = stage_configs(
        compose_config("pipeline", expand_experiment("pipeline", ["experiment=voc_window"])),
        tmp_path / "plain",
    )
    assert plain["classify"].model.kernel_size == 5
    assert plain["localize"].localize.fg_threshold == 0.15  # the recipe's, unchanged
    # The segmenter's field of view scaled with the image: the small backbone's own
    # ASPP dilations, doubled.
    assert list(plain["segment"].segmenter.dilations) == [
        2 * d for d in BACKBONES["small"].aspp_dilations
    ]


@pytest.mark.slow
def test_multi_process_stages_run_as_their_own_apps(tmp_path, toy_root):
    """trainer=ddp_cpu: every stage is its app's command in 2 processes; the
    results chain as in one process and land in the same layout."""
    run = tmp_path / "pipe"
    # evaluate_crf is the evaluate app again: left out to keep the test short.
    res = pipeline(run, toy_root, "trainer=ddp_cpu", "stages=[classify,localize,segment,evaluate]")
    assert set(res) == {"classify", "localize", "segment", "evaluate"}
    assert res["evaluate"]["processes"] == 2 and res["evaluate"]["images"] == 20
    assert res["localize"]["images"] == 40
    for stage in ("classify", "segment"):
        cfg = (run / stage / "config.yaml").read_text()
        assert "strategy: ddp" in cfg and "devices: 2" in cfg, stage
        assert (run / stage / "launch.yaml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"], "no stray output folders"


def _pipeline_outputs(run):
    """Everything a run computed, without paths, times and provenance."""
    res = json.loads((run / "metrics.json").read_text())
    volatile = {"checkpoint", "best_checkpoint", "seeds", "seconds", "images_per_second"}
    volatile |= {"predictions", "overlays", "classifier_ckpt"}
    metrics = {
        stage: {k: v for k, v in m.items() if k not in volatile and "root" not in k}
        for stage, m in res.items()
    }
    files = {
        str(p.relative_to(run)): p.read_bytes()
        for sub in ("localize/maps", "localize/seeds", "evaluate/predictions")
        for p in sorted((run / sub).iterdir())
    }
    weights = {
        stage: torch.load(run / stage / "checkpoints" / "last.ckpt", weights_only=False)
        for stage in ("classify", "segment")
    }
    return metrics, files, weights


@pytest.mark.slow
def test_same_seed_same_machine_gives_identical_maps_seeds_and_metrics(tmp_path, toy_root):
    stages = "stages=[classify,localize,segment,evaluate]"
    # 20 epochs: a 1-epoch classifier's maps are mostly all zero on the small toy.
    epochs = "classify.trainer.max_epochs=20"
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        pipeline(tmp_path / name, toy_root, stages, epochs, f"seed={seed}")
        runs[name] = _pipeline_outputs(tmp_path / name)
    (ma, fa, wa), (mb, fb, wb), (_, _, wc) = runs["a"], runs["b"], runs["c"]
    assert ma == mb
    assert fa.keys() == fb.keys() and all(fa[k] == fb[k] for k in fa)
    for stage in wa:
        sa, sb = wa[stage]["state_dict"], wb[stage]["state_dict"]
        assert all(torch.equal(sa[k], sb[k]) for k in sa), stage
        # Provenance travels with the checkpoint: config, version, commit, threads.
        info = wa[stage]["hyper_parameters"]["config"]["run_info"]
        assert info["ficklenet_version"] and "git_sha" in info and info["torch_threads"] >= 1
        assert (tmp_path / "a" / stage / "config.yaml").is_file()
        assert (tmp_path / "a" / stage / "run_info.json").is_file()
    # Not vacuous: the maps compared are not all zero, and the seed matters.
    peaks = [load_maps(m)[0].max() for m in (tmp_path / "a" / "localize" / "maps").glob("*.npz")]
    assert np.mean(np.equal(peaks, 1)) > 0.9
    sc = wc["classify"]["state_dict"]
    assert not all(torch.equal(wa["classify"]["state_dict"][k], sc[k]) for k in sc)


def test_stage_commands_inside_a_one_task_slurm_job_start_their_own_processes():
    from ficklenet.tasks.pipeline import stage_environment

    one_task = {"SLURM_NTASKS": "1", "SLURM_JOB_ID": "7", "PATH": "/bin"}
    assert stage_environment(one_task) == {"PATH": "/bin"}
    four_tasks = {"SLURM_NTASKS": "4", "SLURM_JOB_ID": "7", "PATH": "/bin"}
    assert stage_environment(four_tasks) == four_tasks
    assert stage_environment({"PATH": "/bin"}) == {"PATH": "/bin"}


@pytest.mark.slow
def test_the_pipeline_app_has_help_cfg_and_multirun(tmp_path):
    """--help lists the groups, --cfg job prints every stage's settings, -m sweeps."""
    import sys

    from tests.conftest import ENV, run_ok

    app = [sys.executable, "-m", "ficklenet.tasks.pipeline"]
    help_text = run_ok([*app, "--help"], tmp_path, ENV).stdout
    assert "table5: deterministic" in help_text and "experiment: paper_resnet101" in help_text
    cfg = run_ok(
        [*app, "--cfg", "job", "model.p=0.3", "segment.segmenter.grow_fg_prob=0.8"], tmp_path, ENV
    ).stdout
    loaded = OmegaConf.create(cfg)
    assert loaded.model.p == 0.3 and loaded.segment.segmenter.grow_fg_prob == 0.8
    assert OmegaConf.to_container(loaded.classify)["model"] == "${model}"  # the shared key
    # A multirun of two (empty) pipelines: one run directory per job, named by number.
    run_ok([*app, "-m", "model.p=0,0.9", "stages=[]"], tmp_path, ENV)
    (sweep,) = (tmp_path / "runs" / "pipeline-multirun").iterdir()
    ps = [OmegaConf.load(sweep / job / "config.yaml").classify.model.p for job in ("0", "1")]
    assert ps == [0.0, 0.9]


@pytest.mark.slow
def test_run_dir_is_set_through_hydra_run_dir(tmp_path):
    """run_dir is Hydra's output directory: setting it alone would split a run over
    two folders (and a rerun would not resume), so the app refuses and names the fix;
    hydra.run.dir=X puts every stage in X."""
    import subprocess
    import sys

    from tests.conftest import ENV, run_ok

    app = [sys.executable, "-m", "ficklenet.tasks.pipeline", "stages=[]"]
    bad = subprocess.run(
        [*app, "run_dir=elsewhere"], cwd=tmp_path, env=ENV, capture_output=True, text=True
    )
    assert bad.returncode != 0 and "hydra.run.dir=elsewhere" in bad.stderr
    run_ok([*app, "hydra.run.dir=chosen"], tmp_path, ENV)
    assert (tmp_path / "chosen" / "config.yaml").is_file()
    assert OmegaConf.load(tmp_path / "chosen" / "config.yaml").run_dir == str(tmp_path / "chosen")


@pytest.mark.slow
def test_debug_fast_is_a_smoke_run_of_every_stage_and_says_so(tmp_path, toy_root):
    """debug=fast: every stage on the first 16 ids of each split (data.limit), a
    shortened schedule; report.md flags the run and names the overrides."""
    from tests.conftest import BIN, ENV, run_ok

    run = tmp_path / "smoke"
    args = [f"data.root={toy_root}", "data.make_toy_if_missing=false", "data.crop_size=64"]
    run_ok(
        [str(BIN / "ficklenet-pipeline"), "debug=fast", *args, f"hydra.run.dir={run}"],
        tmp_path,
        ENV,
    )
    res = json.loads((run / "metrics.json").read_text())
    assert res["localize"]["images"] == 16  # of the small toy's 40 train_aug ids
    assert res["evaluate"]["images"] == 16 and res["evaluate_crf"]["images"] == 16  # of 20
    report = (run / "report.md").read_text()
    assert "**A debug run (debug=fast)**" in report and "first 16 ids" in report
    assert "`debug=fast`" in report and f"`data.root={toy_root}`" in report
    # Rerun as it is: nothing to do, nothing rewritten.
    kept = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and ".hydra" not in p.parts}
    run_ok(
        [str(BIN / "ficklenet-pipeline"), "debug=fast", *args, f"hydra.run.dir={run}"],
        tmp_path,
        ENV,
    )
    now = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and ".hydra" not in p.parts}
    changed = sorted(str(p.relative_to(run)) for p in now if now[p] != kept.get(p))
    assert changed in ([], ["pipeline.log"]), changed  # only the log gets a line


def test_data_limit_takes_the_first_ids_of_every_split(toy_root):
    from omegaconf import OmegaConf

    from ficklenet.data.datamodule import make_reader
    from ficklenet.errors import UserValueError
    from tests.conftest import compose_config

    data = compose_config("classify", [f"data.root={toy_root}", "data.limit=5"]).data
    full = make_reader(OmegaConf.merge(data, {"limit": None}), "train_aug")
    assert make_reader(data, "train_aug").ids == full.ids[:5]
    assert (
        make_reader(data, "val").ids
        == make_reader(OmegaConf.merge(data, {"limit": None}), "val").ids[:5]
    )
    with pytest.raises(UserValueError, match="data.limit=0"):
        make_reader(OmegaConf.merge(data, {"limit": 0}), "val")
