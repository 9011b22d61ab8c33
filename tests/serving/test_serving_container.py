"""The container pieces: the HEALTHCHECK probe against a real server, and the Dockerfile's required properties.

No Docker engine exists here, so the image is checked by construction (hadolint lints it elsewhere).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from support.serving import free_port

DOCKERFILE = Path(__file__).resolve().parents[2] / "serving" / "Dockerfile"


def probe(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlplat.serving.healthcheck"],
        env={"MLPLAT_SERVING_PORT": str(port), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_healthcheck_passes_against_a_live_server_and_fails_without_one(serve: Any, mlflow_model_dir: Any) -> None:
    with serve(model_uri=str(mlflow_model_dir)) as live:
        port = int(live.url.rsplit(":", 1)[1])
        alive = probe(port)
    dead = probe(free_port())
    assert alive.returncode == 0, alive.stderr
    assert dead.returncode == 1
    assert "not live" in dead.stderr


def test_the_dockerfile_is_multi_stage_slim_non_root_and_read_only_friendly() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM \$\{BASE_IMAGE\} AS (\w+)$", text, flags=re.MULTILINE)
    assert stages == ["build", "runtime"]
    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm" in text  # CPU by default, a build arg for a CUDA base
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    runtime = text.split("AS runtime", 1)[1]
    assert "USER 10001:10001" in runtime
    assert "pip install" not in runtime  # the runtime stage only copies the built virtualenv
    assert "PYTHONDONTWRITEBYTECODE=1" in runtime  # nothing written to the (read-only) root at run time
    assert "TMPDIR=/tmp" in runtime
    assert 'CMD ["python", "-m", "mlplat.serving.healthcheck"]' in runtime
    assert 'ENTRYPOINT ["mlplat", "serve"]' in runtime
    assert "MLPLAT_SERVING_HOST=0.0.0.0" in runtime
