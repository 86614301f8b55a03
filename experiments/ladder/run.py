"""Run the ladder on the proving ground: every row × seed, resumable.

    python experiments/ladder/run.py                 # all rows, seeds as in ROWS
    python experiments/ladder/run.py --rows deterministic fickle_0.9 --seeds 0 1 2
    python experiments/ladder/run.py --dry-run       # print the commands only

Rows (``ROWS``): the fully supervised ceiling (``ficklenet-segment`` without seeds,
on the ground truth of every ``train_aug`` image), DSRG on seeds derived from the
ground truth (``experiments/segmenter_sanity/gt_seeds.py``: every region eroded by
2 pixels, half the pixels dropped), and whole pipelines whose classifier differs
only in its dropout (paper Table 5): deterministic (p=0), FickleNet's
centre-preserving dropout and general dropout at several rates. Each (row, seed)
is one directory ``<out>/<row>/seed<S>`` written by ``ficklenet-pipeline``; a rerun
skips finished stages, so an interrupted ladder resumes where it stopped. The
pipeline rows also localize ``val`` (``localize_val/``): seed quality on a split
that chose nothing (thresholds are chosen on ``train``).

``gather.py`` turns the directories into ``results.md``, ``results.json`` and the
Table 5 plot.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "experiments" / "segmenter_sanity"))


@dataclass(frozen=True)
class Row:
    """One rung of the ladder: what trains the segmenter, and on how many seeds."""

    kind: str  # supervised | gt_seeds | pipeline
    seeds: tuple[int, ...] = (0, 1, 2)
    dropout: str = "fickle"
    p: float = 0.0


ROWS: dict[str, Row] = {
    "supervised": Row("supervised"),
    "gt_seeds": Row("gt_seeds"),
    "deterministic": Row("pipeline", p=0.0),
    "fickle_0.9": Row("pipeline", p=0.9),
    "general_0.9": Row("pipeline", dropout="general", p=0.9),
    "fickle_0.3": Row("pipeline", seeds=(0,), p=0.3),
    "fickle_0.5": Row("pipeline", seeds=(0,), p=0.5),
    "fickle_0.7": Row("pipeline", seeds=(0,), p=0.7),
    "general_0.5": Row("pipeline", seeds=(0,), dropout="general", p=0.5),
}

SEGMENT_STAGES = "stages=[segment,evaluate,evaluate_crf]"


def commands(
    row: Row, run_dir: Path, seed: int, bin_dir: Path, extra: list[str]
) -> list[list[str]]:
    """The commands of one (row, seed), in order."""
    pipeline = [str(bin_dir / "ficklenet-pipeline"), f"run_dir={run_dir}", f"seed={seed}"]
    if row.kind == "supervised":
        return [
            pipeline
            + [SEGMENT_STAGES, "segment/seeds=null", "segment/data.pixel_labels=train_aug"]
            + extra
        ]
    if row.kind == "gt_seeds":
        seeds = run_dir / "gt_seeds"
        roots = [o.split("=", 1)[1] for o in extra if o.startswith("data.root=")]
        root = roots[-1] if roots else "data/toy-voc"
        toy = [str(bin_dir / "ficklenet-make-toy"), f"out={root}"] if not roots else None
        make = [
            str(bin_dir / "python"),
            str(REPO / "experiments" / "segmenter_sanity" / "gt_seeds.py"),
            f"--root={root}",
            "--split=train_aug",
            f"--out={seeds}",
            f"--seed={seed}",
        ]
        train = pipeline + [SEGMENT_STAGES, f"segment/seeds={seeds}"] + extra
        return [cmd for cmd in (toy, make, train) if cmd is not None]
    classify = [f"classify/model.dropout={row.dropout}", f"classify/model.p={row.p}"]
    val_seeds = [
        str(bin_dir / "ficklenet-localize"),
        f"classifier.ckpt={run_dir / 'classify' / 'checkpoints' / 'last.ckpt'}",
        "localize.split=val",
        f"seed={seed}",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir / 'localize_val'}",
    ]
    return [pipeline + classify + extra, val_seeds]


def finished(row: Row, run_dir: Path) -> bool:
    done = run_dir / "metrics.json"
    if row.kind == "pipeline":
        return done.is_file() and (run_dir / "localize_val" / "metrics.json").is_file()
    return done.is_file()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/ladder", help="where the runs go")
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seeds", nargs="*", type=int, help="override every row's seeds")
    parser.add_argument("--bin", default=str(Path(sys.executable).parent))
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("overrides", nargs="*", help="extra pipeline overrides (key=value)")
    args = parser.parse_args()
    out, bin_dir = Path(args.out), Path(args.bin)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    for name in args.rows:
        row = ROWS[name]
        for seed in args.seeds if args.seeds is not None else row.seeds:
            run_dir = out / name / f"seed{seed}"
            if finished(row, run_dir):
                print(f"[{name} seed {seed}] finished earlier: {run_dir}", flush=True)
                continue
            for cmd in commands(row, run_dir, seed, bin_dir, args.overrides):
                print(f"[{name} seed {seed}] {shlex.join(cmd)}", flush=True)
                if args.dry_run:
                    continue
                start = time.perf_counter()
                log = run_dir / "ladder.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                with open(log, "a") as fh:
                    code = subprocess.run(
                        cmd, stdout=fh, stderr=subprocess.STDOUT, env=env
                    ).returncode
                if code != 0:
                    raise SystemExit(f"[{name} seed {seed}] failed ({code}); see {log}")
                print(f"    {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
