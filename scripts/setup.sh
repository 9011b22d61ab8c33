#!/usr/bin/env bash
# Create (or refresh) the project's virtualenv in .venv with everything mlplat needs.
# torch is pinned here, not in pyproject: an unpinned torch pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION}"
.venv/bin/python -m pip install --quiet -e '.[serving,training,dev]'
echo "mlplat: virtualenv ready in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
