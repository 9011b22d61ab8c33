#!/usr/bin/env bash
# Create (or refresh) the project's virtualenv in .venv with everything mlplat needs.
# torch is pinned here, not in pyproject: an unpinned torch pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

# pip, minus the noise of this machine's local index mirrors and setuptools' deprecation banners.
pip_install() {
  .venv/bin/python -m pip install --quiet "$@" 2>&1 \
    | { grep -vE '^WARNING: Location|BuildBackendWarning|^ *!!|\*{20}|^ *$|Please be careful|name as your package|with strategy, WheelFile' || true; }
  return "${PIPESTATUS[0]}"
}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
pip_install --upgrade pip
pip_install "torch==${TORCH_VERSION}"
pip_install -e '.[infra,serving,training,dev]'
# An editable install leaves byte-compiling mlplat to its first import, which never writes a .pyc where
# PYTHONDONTWRITEBYTECODE is set (as on this project's machines): compile once here, as a wheel install would.
.venv/bin/python -m compileall -q components infra serving training >/dev/null
echo "mlplat: virtualenv ready in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
