"""The tracking image (tracking/Dockerfile): MLflow with the PostgreSQL driver and boto3, built like the others.

No Docker engine exists here, so the image is checked by construction and linted with hadolint.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "tracking" / "Dockerfile"
REQUIREMENTS = REPO / "tracking" / "requirements.txt"


def pins() -> dict[str, str]:
    found = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{line!r} is not pinned with =="
            found[name.lower()] = version
    return found


def test_the_tracking_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    done = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_pins_mlflow_as_tested_with_the_driver_and_boto3() -> None:
    found = pins()
    assert set(found) == {"mlflow", "psycopg2-binary", "boto3", "flask-wtf"}
    assert found["mlflow"] == importlib.metadata.version("mlflow")  # the version this repository tests against
    # The basic-auth app (TrackingArgs.auth, on by default) imports flask_wtf; pinned as the tests run it.
    assert found["flask-wtf"] == importlib.metadata.version("Flask-WTF")
    assert all(re.fullmatch(r"\d+(\.\d+)+", v) for v in found.values())


def test_the_dockerfile_is_multi_stage_non_root_and_read_only_friendly() -> None:
    text = DOCKERFILE.read_text()
    assert re.findall(r"^FROM \$\{BASE_IMAGE\} AS (\w+)$", text, flags=re.MULTILINE) == ["build", "runtime"]
    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm" in text
    build, runtime = text.split("AS runtime", 1)
    assert "COPY tracking/requirements.txt" in build and "pip install --no-cache-dir -r" in build
    # The build fails if the driver, boto3 or the basic-auth app's Flask-WTF is missing.
    assert 'python -c "import mlflow, psycopg2, boto3, flask_wtf"' in build
    assert "pip install" not in runtime  # the runtime stage only copies the built virtualenv
    assert "--uid 10001" in runtime and "USER 10001:10001" in runtime
    # python and mlflow from the virtualenv: the component runs `mlflow server` and `python -c` (db upgrade).
    assert "PATH=/opt/venv/bin:$PATH" in runtime
    assert "PYTHONDONTWRITEBYTECODE=1" in runtime and "HOME=/tmp" in runtime and "TMPDIR=/tmp" in runtime
    assert "HEALTHCHECK" in runtime and "/health" in runtime
    assert 'ENTRYPOINT ["mlflow"]' in runtime


def test_the_build_context_is_only_the_requirements() -> None:
    ignore = (REPO / "tracking" / "Dockerfile.dockerignore").read_text().splitlines()
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules == ["*", "!tracking/requirements.txt"]
