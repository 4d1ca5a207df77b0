#!/usr/bin/env bash
# The one prepared device check (benchmarks/device_suite.py): every paper-value config at full width on the first
# accelerator (compile time, training steps/s, MFU, sampler steps/s, peak memory, also in bfloat16), the MDSM / DSM
# step ratio and Denoising-EBM vs NCSN sampling time, in under 8 minutes, into one JSON file.
#   bash benchmarks/gpu_suite.sh            # writes ${OUT:-/tmp/gpu_suite}/device_suite.json
set -uo pipefail
OUT=${OUT:-/tmp/gpu_suite}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
timeout 480 python3 benchmarks/device_suite.py --out="$OUT/device_suite.json" --budget_s=450 "$@" 2>&1 | tee "$OUT/device_suite.log"
