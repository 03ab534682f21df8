#!/usr/bin/env bash
# The one prepared device check: every GPU check of the GPU backends (bench/gpu_check.py) and of
# the training benchmark (bench/gpu_train_check.py), in one call on a machine with a CUDA GPU.
# Each prints its table; the output (and the training check's JSON) goes to $OUT (or ./device-check).
#   bash bench/device_check.sh [WHEELS_DIR]   # WHEELS_DIR: nvImageCodec/nvJPEG wheels to install
# Each half gets at most 290 s (never run yet: no device was lent); a failing half does not stop
# the other.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-device-check}"
mkdir -p "$out"
wheels=()
if [ $# -ge 1 ]; then wheels=(--wheels "$1"); fi
status=0
timeout 290 python bench/gpu_check.py "${wheels[@]}" 2>&1 | tee "$out/gpu_check.txt" || status=1
timeout 290 python bench/gpu_train_check.py --json "$out/gpu_train_check.json" 2>&1 \
    | tee "$out/gpu_train_check.txt" || status=1
exit $status
