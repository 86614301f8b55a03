"""``ficklenet-make-toy``: write the synthetic VOC in the real VOC2012 layout.

    ficklenet-make-toy                     # data/toy-voc with the defaults
    ficklenet-make-toy out=/tmp/toy toy.size=128 toy.n_train_aug=800

Deterministic by ``toy.seed``; see :mod:`ficklenet.data.toy` for the content.
"""

from __future__ import annotations

import logging
import time

from omegaconf import DictConfig

from ficklenet.data.toy import write_toy_voc
from ficklenet.tasks.entry_point import stage_main

log = logging.getLogger(__name__)


def run_make_toy(cfg: DictConfig) -> str:
    start = time.perf_counter()
    root = write_toy_voc(
        cfg.out,
        seed=cfg.toy.seed,
        n_train_aug=cfg.toy.n_train_aug,
        n_train=cfg.toy.n_train,
        n_val=cfg.toy.n_val,
        size=cfg.toy.size,
        saliency=cfg.toy.saliency,
        part=cfg.toy.part,
        body_evidence=cfg.toy.body_evidence,
    )
    log.info("toy VOC at %s (%.1f s)", root, time.perf_counter() - start)
    print(root)
    return str(root)


main = stage_main("make_toy", run_make_toy)


if __name__ == "__main__":
    main()
