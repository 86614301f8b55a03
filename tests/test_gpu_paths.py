"""The GPU path's switches: they compose and build on CPU, the compile option runs
where torch can compile, and the checks that need a GPU are marked and skipped here."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from ficklenet.lit.processes import process_settings, resolve_precision, speed_up
from ficklenet.lit.segmenter import DSRGSegmenter
from ficklenet.tasks.classify import run_classify
from tests.conftest import compose_config, gpu_only, small_toy_overrides


def test_auto_mixed_precision_is_bf16_fp16_or_float32_by_hardware(monkeypatch):
    assert resolve_precision("auto-mixed", gpu=False) == "32-true"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto-mixed", gpu=True) == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto-mixed", gpu=True) == "16-mixed"
    assert resolve_precision("16-mixed", gpu=True) == "16-mixed"  # an explicit choice stays


def test_gpu_trainer_configs_ask_for_the_fast_defaults():
    for trainer in ("gpu", "ddp"):
        cfg = compose_config("classify", [f"trainer={trainer}"])
        assert cfg.trainer.precision == "auto-mixed" and cfg.trainer.channels_last
        assert cfg.trainer.tf32 and cfg.trainer.benchmark is None
    # Without a GPU the same config means float32 on the CPU, no NHWC.
    cfg = compose_config("classify", ["trainer.precision=auto-mixed"])
    assert process_settings(cfg.trainer)["precision"] == "32-true"


def test_cudnn_autotuning_only_for_fixed_size_inputs(monkeypatch):
    """benchmark=null: on for training crops, off with trainer.deterministic and
    for whole images of many sizes (localize, evaluate, predict), where cuDNN
    would retune per size and could pick other kernels per run or rank; an
    explicit value wins. (The switches are only set on a GPU: on_gpu faked.)"""
    from ficklenet.lit import processes

    monkeypatch.setattr(processes, "on_gpu", lambda cfg: True)
    cfg = compose_config("classify", ["trainer=gpu"]).trainer
    assert processes._backends(cfg, varying_sizes=False) == {"benchmark": True}
    assert processes._backends(cfg, varying_sizes=True) == {"benchmark": False}
    deterministic = compose_config("classify", ["trainer=gpu", "trainer.deterministic=true"])
    assert processes._backends(deterministic.trainer, varying_sizes=False) == {"benchmark": False}
    forced = compose_config("classify", ["trainer=gpu", "trainer.benchmark=true"]).trainer
    assert processes._backends(forced, varying_sizes=True) == {"benchmark": True}
    # localize asks for varying_sizes: tests/test_localize_stage.py


def _compile_works() -> bool:
    try:
        torch.compile(torch.nn.Linear(2, 2))(torch.zeros(1, 2))
        return True
    except Exception:  # noqa: BLE001 - no compiler toolchain, unsupported platform
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _compile_works(), reason="torch.compile does not run on this machine")
def test_compile_option_trains_and_keeps_checkpoints_loadable(tmp_path, toy_root):
    cfg = compose_config(
        "classify",
        [
            *small_toy_overrides(toy_root),
            "trainer.compile=true",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
        ],
    )
    run_classify(cfg, run_dir=tmp_path / "run")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 2
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert not any("_orig_mod" in k for k in ckpt["state_dict"]), "keys unchanged"
    # ... so training resumes from it (a longer schedule, in a new run directory) ...
    cfg.trainer.max_epochs = 2
    cfg.ckpt_path = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    run_classify(cfg, run_dir=tmp_path / "longer")
    assert json.loads((tmp_path / "longer" / "metrics.json").read_text())["steps"] == 4
    # ... and it loads into an uncompiled model that computes the same scores.
    from ficklenet.lit.classifier import FickleClassifier

    plain = FickleClassifier.from_checkpoint(tmp_path / "longer" / "checkpoints" / "last.ckpt")
    compiled = speed_up(
        FickleClassifier.from_checkpoint(tmp_path / "longer" / "checkpoints" / "last.ckpt"),
        cfg.trainer,
    )
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(compiled.eval()(x), plain.eval()(x), rtol=1e-4, atol=1e-5)


def test_speed_up_without_a_gpu_leaves_the_memory_format(toy_root):
    cfg = compose_config("segment", ["trainer.channels_last=true"])
    model = DSRGSegmenter(OmegaConf.to_container(cfg, resolve=True))
    speed_up(model, cfg.trainer)
    assert not model.channels_last  # NHWC only on a GPU


@gpu_only
def test_channels_last_bf16_segmenter_step_on_gpu():
    cfg = compose_config("segment", ["trainer=gpu", "data.pixel_labels=train_aug"])
    model = DSRGSegmenter(OmegaConf.to_container(cfg, resolve=True)).cuda()
    speed_up(model, cfg.trainer)
    assert model.channels_last
    images = torch.randn(2, 3, 96, 96, device="cuda")
    targets = torch.randint(0, 21, (2, 96, 96), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model.supervised_step(images, targets)
    loss.backward()
    assert torch.isfinite(loss)
