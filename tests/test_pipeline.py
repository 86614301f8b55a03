"""ficklenet-pipeline: four stages chained in one run directory, resumable."""

from __future__ import annotations

import json

import torch

from ficklenet.tasks.pipeline import parse_args, run_pipeline


def _tiny(run_dir, root) -> list[str]:
    return [
        f"run_dir={run_dir}",
        f"data.root={root}",
        "data.make_toy_if_missing=false",
        "data.crop_size=64",
        "data.num_workers=0",
        "trainer.enable_progress_bar=false",
        "classify/trainer.max_epochs=1",
        "localize/localize.n=4",
        "localize/localize.overlays=1",
        "segment/trainer.max_epochs=1",
    ]


def test_pipeline_runs_all_stages_then_skips_them(tmp_path, toy_root):
    run = tmp_path / "pipe"
    res = run_pipeline(_tiny(run, toy_root))
    assert set(res) == {"classify", "localize", "segment", "evaluate", "evaluate_crf"}
    assert 0 <= res["classify"]["val/mAP_best"] <= 1
    assert 0 <= res["localize"]["seed/miou"] <= 1
    assert 0 <= res["evaluate"]["miou"] <= 1 and 0 <= res["evaluate_crf"]["miou"] <= 1
    assert json.loads((run / "metrics.json").read_text()) == json.loads(json.dumps(res))
    report = (run / "report.md").read_text()
    assert "seed precision" in report and "localize/overlays/" in report
    # the stages are chained through their outputs
    seg_cfg = (run / "segment" / "config.yaml").read_text()
    assert str(run / "localize") in seg_cfg

    stamps = {p: p.stat().st_mtime_ns for p in run.glob("*/metrics.json")}
    again = run_pipeline(_tiny(run, toy_root))
    assert again == res
    assert {p: p.stat().st_mtime_ns for p in run.glob("*/metrics.json")} == stamps

    (run / "evaluate_crf" / "metrics.json").unlink()
    run_pipeline([*_tiny(run, toy_root), "stages=[evaluate_crf]"])
    assert (run / "evaluate_crf" / "metrics.json").is_file()


def test_overrides_are_routed_to_stages(tmp_path):
    run_dir, stages, per_stage, common, _ = parse_args(
        [
            f"run_dir={tmp_path}",
            "stages=[segment,evaluate]",
            "trainer=gpu",
            "classify/model.p=0.5",
            "localize/localize.n=50",
        ]
    )
    assert run_dir == tmp_path and stages == ["segment", "evaluate"]
    assert per_stage["classify"] == ["model.p=0.5"]
    assert per_stage["localize"] == ["localize.n=50"]
    assert common == ["trainer=gpu"]


def test_an_override_no_stage_has_is_refused(tmp_path):
    import pytest

    with pytest.raises(SystemExit, match="applies to none of the stages"):
        run_pipeline([f"run_dir={tmp_path}", "modle.p=0.5"])


def test_paper_experiments_compose_for_every_stage(tmp_path):
    """experiment=paper_* gives each stage the paper's settings, offline."""
    from ficklenet.tasks.pipeline import STAGES, compose_stage, stage_overrides

    for name, backbone in (("paper_vgg16", "vgg16"), ("paper_resnet101", "resnet101")):
        run_dir, _, per_stage, common, _ = parse_args(
            [
                f"run_dir={tmp_path}",
                f"experiment={name}",
                "data.root=/data/VOC2012",
                "localize/localize.n=20",
            ]
        )
        cfgs = {
            stage: compose_stage(stage, stage_overrides(stage, run_dir, common, per_stage[stage]))
            for stage in STAGES
        }
        assert cfgs["classify"].backbone.name == backbone and cfgs["classify"].model.p == 0.9
        assert cfgs["classify"].model.kernel_size == 9
        assert cfgs["localize"].data.root == "/data/VOC2012"
        assert cfgs["localize"].localize.n == 20  # the command line wins over the preset
        assert cfgs["localize"].localize.fg_threshold == 0.2
        assert cfgs["segment"].backbone.name == backbone
        assert cfgs["segment"].optim.name == "sgd" and cfgs["segment"].trainer.max_steps == 8000
        assert list(cfgs["evaluate_crf"].scales) == [0.75, 1.0, 1.25]
        assert cfgs["evaluate_crf"].crf and not cfgs["evaluate"].crf


def test_unknown_experiment_is_refused(tmp_path):
    import pytest

    with pytest.raises(SystemExit, match="paper_vgg16"):
        parse_args([f"run_dir={tmp_path}", "experiment=paper_vgg19"])


def test_multi_process_stages_run_as_their_own_apps(tmp_path, toy_root):
    """trainer=ddp_cpu: every stage is its app's command in 2 processes; the
    results chain as in one process and land in the same layout."""
    run = tmp_path / "pipe"
    res = run_pipeline([*_tiny(run, toy_root), "trainer=ddp_cpu", "evaluate/crf_workers=0"])
    assert set(res) == {"classify", "localize", "segment", "evaluate", "evaluate_crf"}
    assert res["evaluate"]["processes"] == 2 and res["evaluate"]["images"] == 20
    assert res["localize"]["images"] == 40
    for stage in ("classify", "segment"):
        cfg = (run / stage / "config.yaml").read_text()
        assert "strategy: ddp" in cfg and "devices: 2" in cfg, stage
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"], "no stray output folders"


def test_a_hydra_launcher_runs_each_stage_as_a_job(tmp_path, toy_root):
    """hydra/launcher=submitit_local (the SLURM launcher's local twin): each stage
    is a one-job multirun of its app, written into <run_dir>/<stage>."""
    run = tmp_path / "pipe"
    argv = [*_tiny(run, toy_root), "hydra/launcher=submitit_local", "stages=[classify,localize]"]
    res = run_pipeline(argv)
    assert set(res) == {"classify", "localize"}
    assert (run / "classify" / "checkpoints" / "best.ckpt").is_file()
    assert list((run / ".submitit").iterdir()), "the jobs went through submitit"


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


def test_same_seed_same_machine_gives_identical_maps_seeds_and_metrics(tmp_path, toy_root):
    stages = "stages=[classify,localize,segment,evaluate]"
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        run_pipeline([*_tiny(tmp_path / name, toy_root), stages, f"seed={seed}"])
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
    # The seed matters (the comparison above is not vacuous).
    sc = wc["classify"]["state_dict"]
    assert not all(torch.equal(wa["classify"]["state_dict"][k], sc[k]) for k in sc)
