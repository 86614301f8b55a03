#!/usr/bin/env bash
# Where FickleNet should win (docs/proving_ground.md, "Window and body evidence"): the
# paired rows (deterministic p=0, FickleNet p=0.9) across window size x body evidence,
# under the papers' recipe, and the premise measured (how much class evidence the
# bodies carry without their parts). Every step is one ficklenet command or one script
# of experiments/; rerunning resumes (finished steps are skipped).
#     bash experiments/window_evidence/run.sh && python experiments/window_evidence/gather.py
# OUT: where the runs go (default runs/window_evidence); BIN: the environment's bin/;
# SETTINGS: the cells to run (default: all, cheapest first; "" runs the premise only);
# JOBS: jobs at a time (default 2, one thread each, for 2 cores).
# Cost: the w12 cells run both formulas for both classifiers; the w24 cells (3.3x the
# cost of a w12 pipeline) run each classifier's formula chosen on train only.
set -euo pipefail
BIN=${BIN:-.venv/bin}
OUT=${OUT:-runs/window_evidence}
export OMP_NUM_THREADS=1
Q="trainer.enable_progress_bar=false data.num_workers=0"
ROWS="deterministic fickle_0.9"
SEEDS="0 1 2"
FORMULAS="gradcam grad_x_act"
EVIDENCE="0.5 1"  # body evidence levels besides 0 (the toy's default)
# Settings: <map>_s<window>_ev<evidence>. w12: the default 96-pixel toy (12x12 map);
# w24: experiment=voc_window (192 pixels, 24x24 map). w12_s3_ev0 is the ladder.
SETTINGS=${SETTINGS-w12_s3_ev0.5 w12_s3_ev1 w24_s5_ev0 w24_s9_ev0 w24_s5_ev0.5 w24_s5_ev1 w24_s9_ev0.5 w24_s9_ev1}
JOBS=${JOBS:-2}
mkdir -p "$OUT"

two_at_a_time() {  # JOBS at a time, in fact
    "$@" &
    while [ "$(jobs -r | wc -l)" -ge "$JOBS" ]; do wait -n || echo "a job failed: see its .log" >&2; done
}
finish() { while [ "$(jobs -r | wc -l)" -gt 0 ]; do wait -n || echo "a job failed" >&2; done; wait; }

root_of() {  # map, evidence, part -> the toy's root
    local root=data/toy-voc
    [ "$1" = w24 ] && root=data/toy-voc-192
    [ "$3" = erased ] && root="$root-erased"
    [ "$2" = 0 ] || root="$root-ev$2"
    echo "$root"
}
# The 24x24 cells were measured with the segmenter's ASPP dilations of the 96-pixel toy
# (null: the small backbone's own, 1, 2, 3, 4); experiment=voc_window has doubled them
# since (head.sh measures what that changes). Pinned here so that every 24x24 cell is
# the same setting, recorded as it was.
head_of() {  # map -> the pipeline's override of the segmenter's dilations
    if [ "$1" = w24 ]; then echo "segment.segmenter.dilations=null"; fi
}
# The overrides of a setting; ficklenet-localize takes the window from the checkpoint.
args_of() {  # setting [localize]
    local map=${1%%_*} rest=${1#*_} s ev root
    s=${rest%%_*}; s=${s#s}; ev=${1##*_ev}
    root=$(root_of "$map" "$ev" shown)
    [ "$map" = w24 ] && echo -n "experiment=voc_window "
    [ "${2:-}" = localize ] || echo -n "backbone.fickle_kernel_size=$s "
    echo "data.root=$root data.toy.body_evidence=$ev"
}

# 1. The toys, written once (the apps would write them too, but not two at a time).
for ev in 0 $EVIDENCE; do
    "$BIN/ficklenet-make-toy" out="$(root_of w12 "$ev" shown)" toy.body_evidence="$ev" > /dev/null
    "$BIN/ficklenet-make-toy" out="$(root_of w12 "$ev" erased)" toy.part=erased \
        toy.body_evidence="$ev" > /dev/null
    "$BIN/ficklenet-make-toy" out="$(root_of w24 "$ev" shown)" toy.size=192 \
        toy.body_evidence="$ev" > /dev/null
done

# 2. The premise: a deterministic classifier trained and tested on the toy with every
#    part erased, at each body-evidence level.
premise() {  # evidence, seed
    local dir="$OUT/premise/ev$1/seed$2"
    [ -f "$dir/metrics.json" ] && return
    mkdir -p "$(dirname "$dir")"
    # shellcheck disable=SC2086
    "$BIN/ficklenet-classify" $Q table5=deterministic seed="$2" data.root="$(root_of w12 "$1" erased)" \
        data.toy.part=erased data.toy.body_evidence="$1" hydra.run.dir="$dir" > "$dir.log" 2>&1
}
for ev in 0 $EVIDENCE; do for seed in $SEEDS; do two_at_a_time premise "$ev" "$seed"; done; done
finish

# 3. Per setting: the classifiers, their maps of train, the thresholds and formulas
#    chosen on train (as the ladder chose them), then the pipelines and seeds on val.
classify() {  # setting, row, seed
    local dir="$OUT/$1/cls/$2/seed$3"
    [ -f "$dir/metrics.json" ] && return
    mkdir -p "$(dirname "$dir")"
    # shellcheck disable=SC2086
    "$BIN/ficklenet-classify" $(args_of "$1") $Q "table5=$2" seed="$3" hydra.run.dir="$dir" \
        > "$dir.log" 2>&1
}
train_maps() {  # setting, row, seed, formula
    local dir="$OUT/$1/choose/$2/seed$3/$4"
    [ -f "$dir/metrics.json" ] && return
    mkdir -p "$(dirname "$dir")"
    # shellcheck disable=SC2086
    "$BIN/ficklenet-localize" $(args_of "$1" localize) $Q classifier.ckpt="$OUT/$1/cls/$2/seed$3/checkpoints/last.ckpt" \
        seed="$3" localize.split=train localize.formula="$4" localize.overlays=0 \
        hydra.run.dir="$dir" > "$dir.log" 2>&1
}
choose() {  # setting
    local runs="$OUT/$1/choose/runs.json" ev=${1##*_ev} map=${1%%_*}
    [ -f "$OUT/$1/choice/choice.json" ] && return
    echo "[" > "$runs.tmp"
    for row in $ROWS; do for seed in $SEEDS; do for formula in $FORMULAS; do
        echo "{\"row\": \"$row\", \"seed\": $seed, \"formula\": \"$formula\", \"dir\": \"$OUT/$1/choose/$row/seed$seed/$formula\"}," >> "$runs.tmp"
    done; done; done
    sed -i '$ s/,$//' "$runs.tmp" && echo "]" >> "$runs.tmp" && mv "$runs.tmp" "$runs"
    mkdir -p "$OUT/$1/choice"
    "$BIN/python" experiments/recipe/choose.py --runs "$runs" \
        --levels "realistic=$(root_of "$map" "$ev" shown)" --out "$OUT/$1/choice" > "$OUT/$1/choice.log" 2>&1
}
formulas_of() {  # setting, row -> the formulas whose pipelines run
    if [ "${1%%_*}" = w12 ]; then echo "$FORMULAS"; return; fi
    "$BIN/python" experiments/recipe/settings.py "$OUT/$1/choice/choice.json" realistic "$2" \
        | tr ' ' '\n' | sed -n 's/^localize.formula=//p'
}
# The fully supervised ceiling of a setting's toy (the default toy's is the ladder's bar).
ceiling() {  # setting, seed
    local map=${1%%_*} ev=${1##*_ev} dir
    dir="$OUT/ceiling/${map}_ev$ev/seed$2"
    grep -qs evaluate_crf "$dir/metrics.json" && return
    mkdir -p "$dir"
    local extra=""
    [ "$map" = w24 ] && extra="experiment=voc_window"
    # shellcheck disable=SC2086
    "$BIN/ficklenet-pipeline" $extra $(head_of "$map") data.root="$(root_of "$map" "$ev" shown)" \
        data.toy.body_evidence="$ev" seed="$2" 'stages=[segment,evaluate,evaluate_crf]' \
        segment.seeds=null data.pixel_labels=train_aug $Q hydra.run.dir="$dir" \
        > "$dir/pipeline.log" 2>&1
}
weak() {  # setting, row, formula, seed
    local dir="$OUT/$1/$2/$3/seed$4" choice="$OUT/$1/choice/choice.json" settings
    mkdir -p "$dir"
    if ! grep -qs evaluate_crf "$dir/metrics.json"; then
        settings=$("$BIN/python" experiments/recipe/settings.py "$choice" realistic "$2" "$3" \
            --prefix localize.localize.)
        # shellcheck disable=SC2086
        "$BIN/ficklenet-pipeline" $(args_of "$1") $(head_of "${1%%_*}") "table5=$2" seed="$4" \
            'stages=[localize,segment,evaluate,evaluate_crf]' \
            localize.classifier.ckpt="$OUT/$1/cls/$2/seed$4/checkpoints/last.ckpt" \
            $settings $Q hydra.run.dir="$dir" > "$dir/pipeline.log" 2>&1
    fi
    [ -f "$dir/localize_val/metrics.json" ] && return
    settings=$("$BIN/python" experiments/recipe/settings.py "$choice" realistic "$2" "$3")
    # shellcheck disable=SC2086
    "$BIN/ficklenet-localize" $(args_of "$1" localize) $Q classifier.ckpt="$OUT/$1/cls/$2/seed$4/checkpoints/last.ckpt" \
        seed="$4" localize.split=val localize.overlays=0 $settings \
        hydra.run.dir="$dir/localize_val" > "$dir/localize_val.log" 2>&1
}
for setting in $SETTINGS; do
    for seed in $SEEDS; do for row in $ROWS; do two_at_a_time classify "$setting" "$row" "$seed"; done; done
    finish
    for seed in $SEEDS; do for row in $ROWS; do for formula in $FORMULAS; do
        two_at_a_time train_maps "$setting" "$row" "$seed" "$formula"
    done; done; done
    finish
    choose "$setting"
    for seed in $SEEDS; do for row in $ROWS; do for formula in $(formulas_of "$setting" "$row"); do
        two_at_a_time weak "$setting" "$row" "$formula" "$seed"
    done; done; done
    for seed in $SEEDS; do two_at_a_time ceiling "$setting" "$seed"; done
    finish
done
echo "window x evidence done"
