#!/usr/bin/env bash
# The ladder on the proving ground (README, "The proving ground"): from the fully
# supervised ceiling down to the weakly supervised pipelines of the FickleNet
# paper's Table 5, each row over several seeds. Every step is one ficklenet
# command; rerunning this script resumes (finished jobs and stages are skipped).
#     bash experiments/ladder/run.sh && python experiments/ladder/gather.py
# OUT: where the runs go (default runs/ladder); BIN: the environment's bin/.
set -euo pipefail
BIN=${BIN:-.venv/bin}
OUT=${OUT:-runs/ladder}
QUIET="trainer.enable_progress_bar=false"

# Table 5, the rows with error bars: deterministic CAM (p=0), FickleNet p=0.9 and
# general dropout p=0.9, three seeds each; one whole pipeline per job.
"$BIN/ficklenet-pipeline" -m table5=deterministic,fickle_0.9,general_0.9 seed=0,1,2 \
    $QUIET hydra.sweep.dir="$OUT/table5"
# Two more seeds for the rows of the paired comparison (FickleNet p=0.9 against
# deterministic): with five pairs the exact sign-flip test can reach p = 1/16.
"$BIN/ficklenet-pipeline" -m table5=deterministic,fickle_0.9 seed=3,4 \
    $QUIET hydra.sweep.dir="$OUT/table5_more"
# The other Table 5 rates, one seed each.
"$BIN/ficklenet-pipeline" -m table5=fickle_0.3,fickle_0.5,fickle_0.7,general_0.5 seed=0 \
    $QUIET hydra.sweep.dir="$OUT/table5_single"

# The ceiling: the same segmenter trained fully supervised (cross-entropy on the
# ground truth of every train_aug image, no seeds).
"$BIN/ficklenet-pipeline" -m seed=0,1,2 'stages=[segment,evaluate,evaluate_crf]' \
    segment.seeds=null data.pixel_labels=train_aug $QUIET hydra.sweep.dir="$OUT/supervised"

# DSRG on seeds derived from the ground truth (every region eroded by 2 pixels,
# half the pixels dropped; the drop drawn per seed).
"$BIN/ficklenet-make-toy"
for seed in 0 1 2; do
    [ -d "$OUT/gt_seeds/seeds_$seed" ] || "$BIN/python" experiments/segmenter_sanity/gt_seeds.py \
        --root data/toy-voc --split train_aug --seed "$seed" --out "$OUT/gt_seeds/seeds_$seed"
done
"$BIN/ficklenet-pipeline" -m seed=0,1,2 'stages=[segment,evaluate,evaluate_crf]' \
    "segment.seeds=$OUT/gt_seeds/seeds_\${seed}" $QUIET hydra.sweep.dir="$OUT/gt_seeds"

# Seed and CAM quality on val, a split that chose nothing (thresholds and the map
# formula were chosen on train: experiments/defaults).
for job in "$OUT"/table5/*/ "$OUT"/table5_more/*/ "$OUT"/table5_single/*/; do
    [ -f "$job/localize_val/metrics.json" ] || "$BIN/ficklenet-localize" localize.split=val \
        classifier.ckpt="$job/classify/checkpoints/last.ckpt" seed="$(
            "$BIN/python" -c "import sys,yaml;print(yaml.safe_load(open(sys.argv[1]))['seed'])" \
                "$job/config.yaml")" \
        $QUIET hydra.run.dir="$job/localize_val"
done
