#!/usr/bin/env bash
# Set up and run mlplat's main job: the platform on this machine (MLflow, training, the gate, registration,
# serving real requests), then the offline preview of the dev and production stacks. Extra arguments go to
# `mlplat demo` (e.g. --production-topology for PostgreSQL + an S3 endpoint behind MLflow).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

mlplat demo "$@"
