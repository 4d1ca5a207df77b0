#!/usr/bin/env bash
# The device benchmark recorded in docs/RESULTS.md: paper-scale training and sampling throughput (NCSN, MDSM),
# the MDSM / DSM step ratio, and Denoising-EBM vs NCSN sampling speed. Writes logs to ${OUT:-/tmp/gpu_suite}.
#   bash benchmarks/gpu_suite.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu_suite}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" | tee "$OUT/versions.txt"
timeout 200 python3 benchmarks/bench_train.py --configs=ncsn_cifar10,ncsn_mnist,mdsm_cifar10 --steps=10 \
  --sample_n=64 2>&1 | tee "$OUT/bench_train.txt"
timeout 120 python3 benchmarks/bench_train.py --configs=ncsn_cifar10 --set=model.dtype=\'bfloat16\' --steps=10 \
  --no_sample 2>&1 | tee "$OUT/bench_train_bf16.txt"
timeout 150 python3 benchmarks/bench_mdsm.py --config=mdsm_cifar10 --chains=100 2>&1 | tee "$OUT/bench_mdsm.txt"
timeout 150 python3 benchmarks/bench_sampling_speed.py --n=64 2>&1 | tee "$OUT/sampling_speed.txt"
