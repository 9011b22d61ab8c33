#!/usr/bin/env bash
# Run the CUDA tests (tests/gpu) on a machine with an NVIDIA GPU and torch with CUDA.
#
#   scripts/gpu-check.sh [WHEEL_DIR]
#
# With the project installed (`./scripts/setup.sh` on a GPU machine), this is just pytest on tests/gpu. On a
# bare GPU machine that has torch but not the project (the project's lent device machine), it installs the few
# pure dependencies the GPU tests need from WHEEL_DIR (no network needed) and puts the source folders on the
# path as the `mlplat` namespace package, as the wheel would. Output goes to $OUT when that is set.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
wheels="${1:-}"
out="${OUT:-$(mktemp -d)}"

"$PYTHON" -c 'import torch; assert torch.cuda.is_available(), "torch sees no CUDA device"; print("torch", torch.__version__, torch.cuda.get_device_name(0))'
if ! "$PYTHON" -c 'import mlplat.training, pydantic_settings' 2>/dev/null; then
  site=$(mktemp -d)
  if [ -n "$wheels" ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl
  fi
  mkdir -p "$site/mlplat"
  for package in components infra serving training; do ln -s "$PWD/$package" "$site/mlplat/$package"; done
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
# --noconftest: the suite's conftest renders stacks with Pulumi, which a GPU box running only the trainer and
# the server does not need. tests/gpu imports its helpers from tests/support (`support.training_helpers`): pytest
# puts tests/ on sys.path from pyproject's `pythonpath` setting, which needs pytest >= 7 and holds with --noconftest.
PYTHONUNBUFFERED=1 "$PYTHON" -m pytest tests/gpu --noconftest -p no:cacheprovider -q -rA \
  --junitxml "$out/gpu-junit.xml" 2>&1 | tee "$out/gpu-check.log"
