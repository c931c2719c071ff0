#!/usr/bin/env bash
# The GPU check, as one device run: the forget-mult tests (CUDA ones included)
# and the GPU benchmark. Needs python3 with torch, CuPy, numba and pytest
# (the device image has them; fairseq is not needed). Logs go to $OUT.
#   bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, cupy; print('torch', torch.__version__, '| cupy', cupy.__version__)" | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider -rs tests/unit/test_forget_mult.py tests/unit/test_forget_mult_cuda_source.py 2>&1 | tee "$OUT/tests.log"
status=${PIPESTATUS[0]}
python3 benchmarks/bench_forget_mult.py --gpu-only 2>&1 | tee "$OUT/bench.log"
exit "$status"
