#!/usr/bin/env bash
# Does the training CRF's implementation change DSRG's result? The ladder's
# FickleNet p=0.9 and deterministic seeds (training seeds 0-2) are trained on again
# with segmenter.crf_backend=torch (exact dense kernels) instead of pydensecrf
# (permutohedral lattice), everything else as in the ladder; compare.py pairs the
# results with the ladder's by seed. It reads the ladder before the papers' recipe (no
# saliency): run both at commit a02f831, where the toy had no saliency default.
#     bash experiments/crf_backend/run.sh && python experiments/crf_backend/compare.py
set -euo pipefail
BIN=${BIN:-.venv/bin}
LADDER=${LADDER:-runs/ladder}
OUT=${OUT:-runs/crf_backend}
mkdir -p "$OUT"
# shellcheck source=../ladder/job_of.sh
source "$(dirname "$0")/../ladder/job_of.sh"
for row in fickle_0.9 deterministic; do
    for seed in 0 1 2; do
        job=$(job_of "$row" "$seed")
        dir="$OUT/$row/seed$seed"
        mkdir -p "$OUT/$row"
        [ -f "$dir/metrics.json" ] && grep -q evaluate_crf "$dir/metrics.json" && continue
        "$BIN/ficklenet-pipeline" "table5=$row" seed="$seed" 'stages=[segment,evaluate,evaluate_crf]' \
            segment.seeds="$job/localize" segment.segmenter.crf_backend=torch \
            trainer.enable_progress_bar=false hydra.run.dir="$dir" > "$dir.log" 2>&1
    done
done
echo done
