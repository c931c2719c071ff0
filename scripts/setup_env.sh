#!/usr/bin/env bash
# Create .venv in the repository (if missing) and install everything into it.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu takes PyTorch from its
# CPU-only wheel index (where pip sees only PyPI, torch==2.13.0 is the CUDA build)
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  echo "== installing torch from $TORCH_INDEX_URL"
  "${PIP[@]}" --index-url "$TORCH_INDEX_URL" "$(grep -E '^torch==' requirements.txt)"
fi
echo "== installing requirements (torch CPU build, fairseq's dependencies)"
"${PIP[@]}" -r requirements.txt
# FAIRSEQ_PACKAGE=fairseq-fixed==0.12.3.1 builds fairseq from source instead
# (see README, "Installing fairseq from source").
FAIRSEQ_PACKAGE=${FAIRSEQ_PACKAGE:-ve-fairseq==0.12.3}
if ! .venv/bin/python -c "import fairseq" 2>/dev/null; then
  echo "== installing $FAIRSEQ_PACKAGE (without its torchaudio dependency)"
  if [[ "$FAIRSEQ_PACKAGE" == fairseq-fixed* ]]; then
    "${PIP[@]}" --no-deps --no-build-isolation "$FAIRSEQ_PACKAGE"
  else
    "${PIP[@]}" --no-deps "$FAIRSEQ_PACKAGE"
  fi
fi
echo "== installing altsg-fairseq (editable)"
"${PIP[@]}" --no-deps --no-build-isolation -e .
.venv/bin/python -c "import altsg_fairseq, fairseq, torch; print('ready: fairseq', fairseq.__version__, '| torch', torch.__version__)"
