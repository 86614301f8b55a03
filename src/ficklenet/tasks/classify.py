"""``ficklenet-classify``: pipeline stage 1, train the FickleNet classifier.

Writes into the Hydra run directory: ``checkpoints/{best,last}.ckpt`` (config
inside), ``config.yaml``, ``run_info.json`` (version, git sha, command),
the logger's files and ``metrics.json``. Returns ``val/mAP_best`` so Hydra
sweepers can optimise it. Rerunning into a directory that holds
``checkpoints/last.ckpt`` resumes from it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from ficklenet.checkpoints import checkpoint_path
from ficklenet.data.datamodule import VOCDataModule, check_toy_root
from ficklenet.errors import UserValueError
from ficklenet.files import existing_path
from ficklenet.lit.classifier import FickleClassifier
from ficklenet.metric_names import TRAIN_LOSS, VAL_F1, VAL_MAP, VAL_MAP_BEST
from ficklenet.models.fickle import check_rate
from ficklenet.tasks.entry_point import stage_main
from ficklenet.tasks.run_record import DependsOn
from ficklenet.tasks.training import fit, training_run

log = logging.getLogger(__name__)


def validate_classify(cfg: DictConfig) -> None:
    """Value checks the schema's types cannot express (choices are enums, refused
    when the config is composed); each names the key."""
    check_rate(cfg.model.p, "model.p")
    if cfg.model.kernel_size < 1 or cfg.model.kernel_size % 2 == 0:
        raise UserValueError(
            f"model.kernel_size={cfg.model.kernel_size}: must be a positive odd number"
        )
    check_toy_root(cfg.data)


# Every setting but where and how it runs; no input file.
DEPENDS_ON = DependsOn()


def run_classify(cfg: DictConfig, run_dir: Path | None = None) -> float:
    """Train the classifier; return ``val/mAP_best`` (stored, when the run in
    ``run_dir`` finished earlier with these settings)."""
    validate_classify(cfg)
    with training_run(cfg, run_dir, "classify", DEPENDS_ON) as run:
        if run.finished is not None:
            return float(run.finished[VAL_MAP_BEST])
        datamodule = VOCDataModule(cfg.data, rng_seed=cfg.seed)
        model = FickleClassifier(run.config)
        trainer, metrics = fit(cfg, run, model, datamodule, monitor=VAL_MAP)
        best = float(metrics.get(VAL_MAP_BEST, model.best_map))
        run.write_metrics(
            {
                "stage": "classify",
                VAL_MAP: metrics.get(VAL_MAP),
                VAL_MAP_BEST: best,
                VAL_F1: metrics.get(VAL_F1),
                TRAIN_LOSS: metrics.get(TRAIN_LOSS),
                "epochs": trainer.current_epoch,
                "steps": trainer.global_step,
                # The end of the schedule is what later stages use by default;
                # best.ckpt (best val mAP) is kept as an option.
                "checkpoint": existing_path(checkpoint_path(run.path)),
                "best_checkpoint": existing_path(checkpoint_path(run.path, "best")),
                "model.p": float(cfg.model.p),
                "model.dropout": cfg.model.dropout,
            }
        )
        if run.writer:
            log.info(
                "classifier val mAP %.4f (best %.4f); outputs in %s",
                metrics.get(VAL_MAP, float("nan")),
                best,
                run.path,
            )
        return best


main = stage_main("classify", run_classify)


if __name__ == "__main__":
    main()
