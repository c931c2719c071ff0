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
