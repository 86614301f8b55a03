#!/usr/bin/env bash
# Table 5 of the FickleNet paper (dropout kind x rate) on the toy data.
# One full pipeline (classify -> localize -> segment -> evaluate (+CRF)) per setting,
# each in runs/dropout_ablation/<kind>_p<p>/. Run from the repository root:
#     bash experiments/dropout_ablation/run.sh && python experiments/dropout_ablation/gather.py
# A rerun skips every stage whose metrics.json already exists.
# Arguments (optional): a subset of settings as <kind>:<p>, e.g. `run.sh fickle:0.9 general:0.5`,
# to split the work over several shells (never give two shells the same setting).
# BIN: the folder holding ficklenet-pipeline (default: the repository's .venv/bin).
set -euo pipefail
BIN=${BIN:-.venv/bin}
OUT=${OUT:-runs/dropout_ablation}

# fickle:0 is the deterministic classifier (the FickleNet head with p=0 drops nothing);
# general = plain dropout; fickle = FickleNet's centre-preserving spatial dropout.
SETTINGS=(fickle:0 general:0.5 general:0.9 fickle:0.3 fickle:0.5 fickle:0.7 fickle:0.9)
if [ $# -gt 0 ]; then SETTINGS=("$@"); fi

for setting in "${SETTINGS[@]}"; do
    kind=${setting%%:*}
    p=${setting#*:}
    "$BIN/ficklenet-pipeline" run_dir="$OUT/${kind}_p${p}" \
        classify/model.dropout="$kind" classify/model.p="$p"
done
