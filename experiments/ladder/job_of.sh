# Sourced by the studies that reuse the ladder's runs (experiments/diagnosis,
# experiments/crf_backend). job_of ROW SEED prints the ladder job (under $LADDER)
# that trained Table 5 row ROW with training seed SEED, or fails naming what is missing.
job_of() {
    local j
    for j in "$LADDER"/table5/*/ "$LADDER"/table5_more/*/; do
        if grep -qx -- "- table5=$1" "$j.hydra/overrides.yaml" \
            && grep -qx -- "- seed=$2" "$j.hydra/overrides.yaml"; then
            echo "${j%/}"
            return
        fi
    done
    echo "no ladder job for table5=$1 seed=$2 under $LADDER: run the ladder of commit a02f831 (before the recipe) there" >&2
    return 1
}
