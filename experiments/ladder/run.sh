#!/usr/bin/env bash
# The ladder on the proving ground under the papers' recipe (docs/proving_ground.md):
# background seeds from the toy's saliency maps, foreground seeds from the
# aggregated maps, with every threshold and the map formula chosen on `train`; from
# the fully supervised ceiling down to the weakly supervised pipelines of the
# FickleNet paper's Table 5, each row over several training seeds, and the paired
# rows along a saliency-quality axis. Every step is one ficklenet command (or one
# script of experiments/); rerunning resumes (finished steps are skipped).
#     bash experiments/ladder/run.sh && python experiments/ladder/gather.py runs/ladder --out experiments/ladder
# OUT: where the runs go (default runs/ladder); BIN: the environment's bin/; CHOICE:
# the settings chosen on train (written by step 3 when missing).
# Two jobs at a time, one thread each (2 cores).
set -euo pipefail
BIN=${BIN:-.venv/bin}
OUT=${OUT:-runs/ladder}
CHOICE=${CHOICE:-experiments/recipe/choice.json}
export OMP_NUM_THREADS=1
Q="trainer.enable_progress_bar=false data.num_workers=0"
PAIRED="deterministic fickle_0.9"  # the paired comparison: 5 seeds, both formulas
PAIRED_SEEDS="0 1 2 3 4"
OTHERS="general_0.9 fickle_0.3 fickle_0.5 fickle_0.7 general_0.5"  # the rest of Table 5
OTHER_SEEDS="0 1 2"
AXIS_SEEDS="0 1 2 3 4"  # the saliency-quality axis (paired rows) and the growing ablation
FORMULAS="gradcam grad_x_act"
# Saliency level -> data overrides. The images are the same at every level.
declare -A LEVEL=(
    [realistic]=""
    [perfect]="data.root=data/toy-voc-perfect data.toy.saliency=perfect"
    [none]="data.saliency_dir=null"
)
mkdir -p "$OUT"

# `wait -n` also returns for a job that ended earlier (a skipped step), so count the
# running jobs again after each return.
two_at_a_time() {
    "$@" &
    while [ "$(jobs -r | wc -l)" -ge 2 ]; do wait -n || echo "a job failed: see its .log" >&2; done
}
finish() { while [ "$(jobs -r | wc -l)" -gt 0 ]; do wait -n || echo "a job failed" >&2; done; wait; }

# 1. The classifiers: one per Table 5 row and training seed (they do not read saliency).
classify() {  # row, seed
    local dir="$OUT/cls/$1/seed$2"
    [ -f "$dir/metrics.json" ] && return
    mkdir -p "$(dirname "$dir")"
    # shellcheck disable=SC2086
    "$BIN/ficklenet-classify" $Q "table5=$1" seed="$2" hydra.run.dir="$dir" > "$dir.log" 2>&1
}
"$BIN/ficklenet-make-toy" > /dev/null
"$BIN/ficklenet-make-toy" out=data/toy-voc-perfect toy.saliency=perfect > /dev/null
for seed in $PAIRED_SEEDS; do for row in $PAIRED; do two_at_a_time classify "$row" "$seed"; done; done
for row in $OTHERS; do for seed in $OTHER_SEEDS; do two_at_a_time classify "$row" "$seed"; done; done
finish

# 2. Maps of `train` for every classifier and formula (maps depend on neither
#    threshold nor saliency), then 3. the choice on train.
train_maps() {  # row, seed, formula
    local dir="$OUT/choose/$1/seed$2/$3"
    [ -f "$dir/metrics.json" ] && return
    mkdir -p "$(dirname "$dir")"
    # shellcheck disable=SC2086
    "$BIN/ficklenet-localize" $Q classifier.ckpt="$OUT/cls/$1/seed$2/checkpoints/last.ckpt" \
        seed="$2" localize.split=train localize.formula="$3" localize.overlays=0 \
        hydra.run.dir="$dir" > "$dir.log" 2>&1
}
mkdir -p "$OUT/choose"
RUNS="$OUT/choose/runs.json"
echo "[" > "$RUNS.tmp"
for row in $PAIRED $OTHERS; do
    seeds=$OTHER_SEEDS
    [[ " $PAIRED " == *" $row "* ]] && seeds=$PAIRED_SEEDS
    for seed in $seeds; do
        for formula in $FORMULAS; do
            two_at_a_time train_maps "$row" "$seed" "$formula"
            echo "{\"row\": \"$row\", \"seed\": $seed, \"formula\": \"$formula\", \"dir\": \"$OUT/choose/$row/seed$seed/$formula\"}," >> "$RUNS.tmp"
        done
    done
done
finish
sed -i '$ s/,$//' "$RUNS.tmp" && echo "]" >> "$RUNS.tmp" && mv "$RUNS.tmp" "$RUNS"
[ -f "$CHOICE" ] || "$BIN/python" experiments/recipe/choose.py --runs "$RUNS" \
    --levels realistic=data/toy-voc perfect=data/toy-voc-perfect none= --out "$(dirname "$CHOICE")"

# 4. The weakly supervised rows: localize (train_aug) -> DSRG -> evaluate without and
#    with the CRF, one pipeline per (saliency level, classifier, formula, seed) on the
#    classifier of step 1; then seed and CAM quality on val, a split that chose nothing.
weak() {  # level, row, formula ("chosen": the row's own), seed
    local level=$1 row=$2 formula=$3 seed=$4 dir settings
    [ "$formula" = chosen ] && formula=$("$BIN/python" -c \
        "import json,sys; print(json.load(open(sys.argv[1]))['levels'][sys.argv[2]]['rows'][sys.argv[3]]['formula'])" \
        "$CHOICE" "$level" "$row")
    dir="$OUT/$level/$row/$formula/seed$seed"
    mkdir -p "$dir"
    if ! grep -qs evaluate_crf "$dir/metrics.json"; then
        settings=$("$BIN/python" experiments/recipe/settings.py "$CHOICE" "$level" "$row" "$formula" \
            --prefix localize.localize.)
        # shellcheck disable=SC2086
        "$BIN/ficklenet-pipeline" "table5=$row" seed="$seed" \
            'stages=[localize,segment,evaluate,evaluate_crf]' \
            localize.classifier.ckpt="$OUT/cls/$row/seed$seed/checkpoints/last.ckpt" \
            ${LEVEL[$level]} $settings $Q hydra.run.dir="$dir" > "$dir/pipeline.log" 2>&1
    fi
    [ -f "$dir/localize_val/metrics.json" ] && return
    settings=$("$BIN/python" experiments/recipe/settings.py "$CHOICE" "$level" "$row" "$formula")
    # shellcheck disable=SC2086
    "$BIN/ficklenet-localize" $Q classifier.ckpt="$OUT/cls/$row/seed$seed/checkpoints/last.ckpt" \
        seed="$seed" localize.split=val localize.overlays=0 ${LEVEL[$level]} $settings \
        hydra.run.dir="$dir/localize_val" > "$dir/localize_val.log" 2>&1
}
# The paired rows at the default (realistic) saliency, both formulas, five seeds.
for seed in $PAIRED_SEEDS; do
    for formula in $FORMULAS; do
        for row in $PAIRED; do two_at_a_time weak realistic "$row" "$formula" "$seed"; done
    done
done

# 5. The bars: the fully supervised ceiling, and DSRG on seeds made from the ground
#    truth (every region eroded by 2 pixels, half its pixels dropped, per seed).
for seed in 0 1 2; do
    [ -d "$OUT/gt_seeds/seeds_$seed" ] || "$BIN/python" experiments/segmenter_sanity/gt_seeds.py \
        --root data/toy-voc --split train_aug --seed "$seed" --out "$OUT/gt_seeds/seeds_$seed"
done
bar() {  # name, seed, overrides...
    local dir="$OUT/$1/seed$2" seed=$2
    shift 2
    grep -qs evaluate_crf "$dir/metrics.json" && return
    mkdir -p "$dir"
    # shellcheck disable=SC2086
    "$BIN/ficklenet-pipeline" seed="$seed" 'stages=[segment,evaluate,evaluate_crf]' "$@" $Q \
        hydra.run.dir="$dir" > "$dir/pipeline.log" 2>&1
}
for seed in 0 1 2; do
    two_at_a_time bar supervised "$seed" segment.seeds=null data.pixel_labels=train_aug
    two_at_a_time bar gt_seeds "$seed" "segment.seeds=$OUT/gt_seeds/seeds_$seed"
done

# The rest of Table 5 at the default saliency, each with its own formula, three seeds.
for seed in $OTHER_SEEDS; do
    for row in $OTHERS; do two_at_a_time weak realistic "$row" chosen "$seed"; done
done

# 6. The saliency-quality axis: the paired rows with perfect saliency (the answer key)
#    and with none (background from low class scores), each formula, five seeds;
#    each level's own formula first.
for seed in $AXIS_SEEDS; do
    for level in perfect none; do
        for row in $PAIRED; do two_at_a_time weak "$level" "$row" chosen "$seed"; done
    done
done
for seed in $AXIS_SEEDS; do
    for level in perfect none; do
        for row in $PAIRED; do
            for formula in $FORMULAS; do two_at_a_time weak "$level" "$row" "$formula" "$seed"; done
        done
    done
done
finish

# 7. Does growing help? The paired rows at the default saliency, each with its chosen
#    formula, trained again on the same seeds with growing off (grow_fg_prob =
#    grow_bg_prob = 1.0: no probability exceeds it), five seeds.
no_growing() {  # row, seed
    local formula dir
    formula=$("$BIN/python" -c \
        "import json,sys; print(json.load(open(sys.argv[1]))['levels']['realistic']['rows'][sys.argv[2]]['formula'])" \
        "$CHOICE" "$1")
    dir="$OUT/realistic_no_growing/$1/$formula/seed$2"
    grep -qs evaluate_crf "$dir/metrics.json" && return
    mkdir -p "$dir"
    # shellcheck disable=SC2086
    "$BIN/ficklenet-pipeline" "table5=$1" seed="$2" 'stages=[segment,evaluate,evaluate_crf]' \
        segment.seeds="$OUT/realistic/$1/$formula/seed$2/localize" \
        segment.segmenter.grow_fg_prob=1.0 segment.segmenter.grow_bg_prob=1.0 $Q \
        hydra.run.dir="$dir" > "$dir/pipeline.log" 2>&1
}
for seed in $AXIS_SEEDS; do
    for row in $PAIRED; do two_at_a_time no_growing "$row" "$seed"; done
done
finish
echo "ladder done"
