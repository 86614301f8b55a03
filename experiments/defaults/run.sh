#!/usr/bin/env bash
# Choose the proving ground's localization defaults on `train` (never on val):
#   1. three classifiers at the toy defaults: deterministic (p=0) and FickleNet p=0.9
#      with the always-kept centre scaled by 1/(1-p) or not (model.scale_centre);
#   2. maps of the `train` split with both formulas -> seed thresholds chosen by
#      experiments/thresholds/choose.py over all six map sets;
#   3. seeds of train_aug with those thresholds -> DSRG segmenter (seed 0) for each
#      (classifier, formula); its predictions on `train` (metrics.json,
#      train/miou) choose the formula and the centre scaling for FickleNet.
# Two jobs at a time, one thread each (2 cores). Rerunning skips finished steps.
#     bash experiments/defaults/run.sh && python experiments/defaults/gather.py
set -euo pipefail
BIN=${BIN:-.venv/bin}
OUT=${OUT:-runs/defaults}
export OMP_NUM_THREADS=1
Q="trainer.enable_progress_bar=false data.num_workers=0"
mkdir -p "$OUT"

classify() {  # name, overrides...
    local name=$1; shift
    [ -f "$OUT/cls_$name/metrics.json" ] || \
        "$BIN/ficklenet-classify" $Q "$@" hydra.run.dir="$OUT/cls_$name" > "$OUT/cls_$name.log" 2>&1
}
classify p0 model.p=0 &
classify p9c model.p=0.9 model.scale_centre=true &
wait
classify p9n model.p=0.9 model.scale_centre=false

localize() {  # classifier, formula, split, dir, overrides...
    local cls=$1 formula=$2 split=$3 dir=$4; shift 4
    [ -f "$dir/metrics.json" ] || "$BIN/ficklenet-localize" $Q \
        classifier.ckpt="$OUT/cls_$cls/checkpoints/last.ckpt" localize.formula="$formula" \
        localize.split="$split" "$@" hydra.run.dir="$dir" > "$dir.log" 2>&1
}
CASES="p0:gradcam p0:grad_x_act p9c:gradcam p9c:grad_x_act p9n:gradcam p9n:grad_x_act"
for case in $CASES; do
    localize "${case%%:*}" "${case#*:}" train "$OUT/maps_${case%%:*}_${case#*:}" &
    [ "$(jobs -r | wc -l)" -ge 2 ] && wait -n
done
wait
[ -f "$OUT/thresholds.json" ] || "$BIN/python" experiments/thresholds/choose.py \
    "$OUT"/maps_*/ --json "$OUT/thresholds.json" > "$OUT/thresholds.md"
FG=$("$BIN/python" -c "import json;print(json.load(open('$OUT/thresholds.json'))['chosen']['fg'])")
BG=$("$BIN/python" -c "import json;print(json.load(open('$OUT/thresholds.json'))['chosen']['bg'])")
echo "thresholds chosen on train: fg=$FG bg=$BG"

dsrg() {  # classifier, formula
    local dir="$OUT/seg_$1_$2"
    localize "$1" "$2" train_aug "$OUT/seeds_$1_$2" localize.fg_threshold="$FG" \
        localize.bg_threshold="$BG"
    [ -f "$dir/metrics.json" ] || "$BIN/ficklenet-segment" $Q seeds="$OUT/seeds_$1_$2" \
        segmenter.crf_workers=0 hydra.run.dir="$dir" > "$dir.log" 2>&1
}
for case in $CASES; do
    dsrg "${case%%:*}" "${case#*:}" &
    [ "$(jobs -r | wc -l)" -ge 2 ] && wait -n
done
wait
echo done
