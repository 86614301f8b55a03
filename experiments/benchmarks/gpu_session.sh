#!/usr/bin/env bash
# One prepared call on a lent GPU machine: the GPU-only tests and the VOC-size
# figures of docs/performance.md, each step time-boxed, every
# result under $OUT (the device tool brings that folder back).
#
# The machine has torch, torchvision, Lightning and torchmetrics but not hydra-core,
# omegaconf, pytest or pydensecrf (no wheel for its Python). Put the pure-Python
# wheels in the ignored folder .whl/ first, here:
#
#   pip download --no-deps -c constraints.txt -d .whl hydra-core omegaconf pytest pluggy iniconfig
#   pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3
#
# then, through the device tool, from the repository root:
#
#   bash experiments/benchmarks/gpu_session.sh          (carry: [".whl"], timeout ~560 s)
#
# Without pydensecrf the suite skips its pydensecrf-CRF rows and times the training
# CRF on the device (segmenter.crf_backend=torch). On a CPU, DEVICE=cpu SIZE=small
# runs the same steps at the small size (a dry run of this script).
set -u
export PYTHONUNBUFFERED=1
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-voc}
OUT=${OUT:-runs/gpu_session}
PY=${PY:-python3}
mkdir -p "$OUT"

if [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:src
else
  export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
fi

step() {  # step <name> <seconds> <command...>: run, keep its output, go on if it fails
  local name=$1 limit=$2
  shift 2
  echo "== $name ($(date +%T), at most ${limit}s)"
  { echo "\$ $*"; timeout "$limit" "$@"; echo "exit status $?"; } > "$OUT/$name.txt" 2>&1
  tail -n 25 "$OUT/$name.txt"
}

{ nvidia-smi || true; $PY -c "import torch; print(torch.__version__, torch.cuda.is_available())"; } \
  > "$OUT/machine.txt" 2>&1
step gpu_tests 150 $PY -m pytest -q -m gpu tests -p no:cacheprovider
step suite 300 $PY experiments/benchmarks/suite.py --device "$DEVICE" --size "$SIZE" \
  --out "$OUT/suite.json"
if [ "$SIZE" = voc ]; then
  step literal_gradcam 60 $PY experiments/benchmarks/localization_speed.py --device "$DEVICE" \
    --formula gradcam --literal-passes 20
  step crf_share 60 $PY experiments/benchmarks/crf_share.py --setting paper --backbone vgg16 \
    --device "$DEVICE" --backend torch
fi
echo "== done $(date +%T); results in $OUT"
