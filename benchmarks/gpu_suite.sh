#!/usr/bin/env bash
# The GPU benchmark suite recorded in docs/RESULTS.md: paper-scale NCSN training and sampling, the MDSM /
# DSM step ratio, and Denoising-EBM vs NCSN sampling speed. Writes logs to ${OUT:-/tmp/gpu_suite}.
#   bash benchmarks/gpu_suite.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu_suite}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" | tee "$OUT/versions.txt"
timeout 200 python3 benchmarks/bench_train.py --configs=ncsn_cifar10:ngf=128:batch=128,ncsn_mnist:ngf=64:batch=128 \
  --steps_per_call=10 --sample_steps_each=10 2>&1 | tee "$OUT/bench_train.txt"
timeout 120 python3 benchmarks/bench_train.py --configs=ncsn_cifar10 --ngf=128 --batch=128 --steps_per_call=10 \
  --dtype=bfloat16 --no_sample 2>&1 | tee "$OUT/bench_train_bf16.txt"
timeout 150 python3 benchmarks/bench_mdsm.py --config=mdsm_cifar10 --chains=100 2>&1 | tee "$OUT/bench_mdsm.txt"
timeout 150 python3 benchmarks/bench_sampling_speed.py --n=64 2>&1 | tee "$OUT/sampling_speed.txt"
