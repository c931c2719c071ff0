#!/usr/bin/env bash
# The device check, as one run on a GPU machine (torch, CuPy, pytest, numba; no fairseq):
#   bash scripts/gpu_check.sh            (OUT=folder for the report and logs; default /tmp/gpu_check)
# In order, stopping with one line and exit status 1 at the first failure:
#   1. prerequisites: a CUDA GPU, a CuPy that imports, the kernels compile (benchmarks/gpu_check.py);
#   2. the GPU tests (pytest -m cuda): they must all run, none may be skipped;
#   3. the kernels at the real shapes, CUDA-event timed, beside the card's measured copy bandwidth;
#   4. --use-sg training windows of the paper's model in fp32, amp and fp16;
#   5. where fairseq is installed: fairseq-train --bf16 refused in one line (the CPU suite checks it too).
# $OUT/report.txt gets every line as it is written; pytest's output goes to $OUT/tests.log.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT" || { echo "gpu_check: cannot create OUT=$OUT"; exit 1; }
REPORT="$OUT/report.txt"
: > "$REPORT"
"$PY" -c "import torch" 2>/dev/null || { echo "gpu_check: no torch: $PY cannot import it" | tee -a "$REPORT"; exit 1; }
"$PY" benchmarks/gpu_check.py prerequisites --report "$REPORT" || exit 1

"$PY" benchmarks/gpu_check.py tests --report "$REPORT" --log "$OUT/tests.log" || exit 1
"$PY" benchmarks/gpu_check.py kernels --report "$REPORT" || exit 1
"$PY" benchmarks/gpu_check.py training --report "$REPORT" || exit 1
if "$PY" -c "import fairseq" 2>/dev/null; then
  last=$("$PY" -m fairseq_cli.train /nonexistent --user-dir altsg_fairseq --task alternating_lm --arch qrnn_lm \
         --criterion synthetic_gradient_lm --batch-size 2 --bf16 2>&1 | tail -n 1)
  case "$last" in
    "altsg_fairseq: error: --bf16"*"use --amp instead"*) echo "gpu_check: --bf16 refused in one line" | tee -a "$REPORT" ;;
    *) echo "gpu_check: --bf16 was not refused in one line: $last" | tee -a "$REPORT"; exit 1 ;;
  esac
else
  echo "gpu_check: no fairseq here: --bf16's one-line refusal is checked by the CPU suite (tests/cli/test_user_errors.py)" | tee -a "$REPORT"
fi
echo "gpu_check: passed; report in $REPORT" | tee -a "$REPORT"
