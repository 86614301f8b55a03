#!/usr/bin/env bash
# Why FickleNet p=0.9 does not beat the deterministic classifier on the proving
# ground (experiments/ladder): the knobs of the method, measured one at a time.
#   1. Map-time settings on the ladder's own classifiers (no training): the number of
#      stochastic passes N, max vs mean aggregation, one pass with no mask at all
#      (the same classifier's plain CAM), the map formula, the seed threshold.
#      Seed and CAM quality on `train` and on `val`, five training seeds each.
#   2. The formula that lets the masks spread the maps: the ladder's classifiers
#      (deterministic and FickleNet p=0.9, five seeds) localized with grad_x_act
#      instead of gradcam, then DSRG and evaluation as in the ladder.
#   3. The window size s: whole pipelines with s=5 instead of the toy's 3, for the
#      deterministic classifier and FickleNet p=0.9, three seeds each.
# Reads the runs of the ladder before the papers' recipe (no saliency; LADDER, default
# runs/ladder): run both at commit a02f831, where the toy had no saliency default. Rerunning skips finished steps. Two jobs at a time, one thread each.
#     bash experiments/diagnosis/run.sh && python experiments/diagnosis/gather.py
set -euo pipefail
BIN=${BIN:-.venv/bin}
LADDER=${LADDER:-runs/ladder}
OUT=${OUT:-runs/diagnosis}
export OMP_NUM_THREADS=1
Q="trainer.enable_progress_bar=false data.num_workers=0"
mkdir -p "$OUT/maps"

# shellcheck source=../ladder/job_of.sh
source "$(dirname "$0")/../ladder/job_of.sh"

# name -> map-time overrides; "ladder" is the ladder's own setting (N=200, max,
# gradcam, fg 0.5).
declare -A VARIANT=(
    [ladder]=""
    [n1]="localize.n=1"
    [n10]="localize.n=10"
    [n50]="localize.n=50"
    [mean]="localize.aggregate=mean"
    [no_mask]="model.p=0 localize.n=1"
    [grad_x_act]="localize.formula=grad_x_act"
    [fg0.3]="localize.fg_threshold=0.3"
    [fg0.7]="localize.fg_threshold=0.7"
)
# The deterministic classifier's passes are all the same map: only the formula and
# the threshold mean anything for it.
DET_VARIANTS="ladder grad_x_act fg0.3 fg0.7"
FICKLE_VARIANTS="ladder n1 n10 n50 mean no_mask grad_x_act fg0.3 fg0.7"

localize() {  # row, seed, variant, split
    local job dir
    job=$(job_of "$1" "$2")
    dir="$OUT/maps/$1/seed$2/$3_$4"
    [ -f "$dir/metrics.json" ] && return
    mkdir -p "$(dirname "$dir")"
    # shellcheck disable=SC2086
    "$BIN/ficklenet-localize" $Q classifier.ckpt="$job/classify/checkpoints/last.ckpt" \
        seed="$2" localize.split="$4" localize.overlays=0 ${VARIANT[$3]} \
        hydra.run.dir="$dir" > "$dir.log" 2>&1
}
for seed in 0 1 2 3 4; do
    for split in val train; do
        for v in $DET_VARIANTS; do
            localize deterministic "$seed" "$v" "$split" &
            [ "$(jobs -r | wc -l)" -ge 2 ] && wait -n
        done
        for v in $FICKLE_VARIANTS; do
            localize fickle_0.9 "$seed" "$v" "$split" &
            [ "$(jobs -r | wc -l)" -ge 2 ] && wait -n
        done
    done
done
wait

# grad_x_act maps -> DSRG, the rest of the pipeline as in the ladder (its own run
# directory per classifier; the classifier is the ladder's).
gxa_pipeline() {  # row, seed
    local job
    job=$(job_of "$1" "$2")
    "$BIN/ficklenet-pipeline" "table5=$1" seed="$2" 'stages=[localize,segment,evaluate,evaluate_crf]' \
        localize.classifier.ckpt="$job/classify/checkpoints/last.ckpt" \
        localize.localize.formula=grad_x_act trainer.enable_progress_bar=false \
        hydra.run.dir="$OUT/gxa/$1/seed$2" > "$OUT/gxa_$1_seed$2.log" 2>&1
}
mkdir -p "$OUT/gxa"
for seed in 0 1 2 3 4; do
    for row in deterministic fickle_0.9; do
        [ -f "$OUT/gxa/$row/seed$seed/metrics.json" ] && \
            grep -q evaluate_crf "$OUT/gxa/$row/seed$seed/metrics.json" && continue
        gxa_pipeline "$row" "$seed" &
        [ "$(jobs -r | wc -l)" -ge 2 ] && wait -n
    done
done
wait

# The window size: s=5 on the 12x12 feature map, whole pipelines (one sweep per
# classifier so the two run side by side), then seed and CAM quality on val.
for row in deterministic fickle_0.9; do
    "$BIN/ficklenet-pipeline" -m "table5=$row" model.kernel_size=5 seed=0,1,2 \
        trainer.enable_progress_bar=false hydra.sweep.dir="$OUT/s5_$row" \
        > "$OUT/s5_$row.log" 2>&1 &
done
wait
for job in "$OUT"/s5_*/*/; do
    [ -f "$job/classify/checkpoints/last.ckpt" ] || continue
    [ -f "$job/localize_val/metrics.json" ] || "$BIN/ficklenet-localize" $Q localize.split=val \
        classifier.ckpt="$job/classify/checkpoints/last.ckpt" localize.overlays=0 seed="$(
            "$BIN/python" -c "import sys,yaml;print(yaml.safe_load(open(sys.argv[1]))['seed'])" \
                "$job/config.yaml")" hydra.run.dir="$job/localize_val" > "$job/localize_val.log" 2>&1
done
echo done
