#!/usr/bin/env bash
# Set up and run mlplat's main job: the offline preview of the dev and production stacks.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

mlplat synth dev
mlplat synth production
