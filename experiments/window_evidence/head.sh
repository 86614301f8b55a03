#!/usr/bin/env bash
# The segmenter's field of view on the 192-pixel toy (docs/proving_ground.md, "Window
# and body evidence"). The study's 24x24 cells (run.sh) trained the segmenter with the
# small backbone's ASPP dilations, set for the 12x12 map of the 96-pixel toy (1, 2, 3,
# 4); drawn at 192 pixels, every object is twice as many feature cells wide, and
# errors.py finds most of the fully supervised segmenter's errors inside bodies given a
# sibling class's label. This reruns the segmenters of the 24x24 s=5 cell, body
# evidence 0, with the dilations doubled (2, 4, 6, 8: the same field of view, relative
# to the object, as on the 96-pixel toy): the fully supervised ceiling, and both weak
# rows on the very seeds run.sh's pipelines grew from (their localize/ folders), so
# classifiers, maps and seeds are unchanged and only the segmenter differs.
#     bash experiments/window_evidence/head.sh && \
#         python experiments/window_evidence/gather.py runs/window_evidence_head \
#             --ladder none --out experiments/window_evidence/head
# OUT: where the runs go (default runs/window_evidence_head); CELLS: run.sh's output
# (default runs/window_evidence; its w24_s5_ev0 cell must be finished); BIN: the
# environment's bin/. One job at a time (one thread); rerunning resumes.
set -euo pipefail
BIN=${BIN:-.venv/bin}
OUT=${OUT:-runs/window_evidence_head}
CELLS=${CELLS:-runs/window_evidence}
export OMP_NUM_THREADS=1
Q="trainer.enable_progress_bar=false data.num_workers=0"
CELL=w24_s5_ev0
HEAD="segment.segmenter.dilations=[2,4,6,8]"
SEEDS="0 1 2"
# The head stated here as well as in the preset: what this measures must not move with it.
COMMON="experiment=voc_window data.toy.body_evidence=0 $HEAD $Q"

pipeline() {  # run folder, overrides...
    local dir=$1
    shift
    grep -qs evaluate_crf "$dir/metrics.json" && return
    mkdir -p "$dir"
    # shellcheck disable=SC2086
    "$BIN/ficklenet-pipeline" $COMMON "$@" 'stages=[segment,evaluate,evaluate_crf]' \
        hydra.run.dir="$dir" > "$dir/pipeline.log" 2>&1
}

# The cell's classifiers and choice, as gather.py reads them beside the pipelines.
mkdir -p "$OUT/$CELL"
for part in cls choice; do
    [ -e "$OUT/$CELL/$part" ] || ln -s "$(realpath "$CELLS/$CELL/$part")" "$OUT/$CELL/$part"
done
for seed in $SEEDS; do
    pipeline "$OUT/ceiling/w24_ev0/seed$seed" seed="$seed" segment.seeds=null \
        data.pixel_labels=train_aug
done
for seed in $SEEDS; do
    for row in deterministic fickle_0.9; do
        for grown in "$CELLS/$CELL/$row"/*/"seed$seed"; do  # the formula chosen on train
            formula=$(basename "$(dirname "$grown")")
            pipeline "$OUT/$CELL/$row/$formula/seed$seed" "table5=$row" seed="$seed" \
                segment.seeds="$(realpath "$grown/localize")"
        done
    done
done
echo "head done"
