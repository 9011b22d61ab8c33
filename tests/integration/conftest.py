"""The production topology in miniature: MLflow backed by a real PostgreSQL 15, artifacts in an S3 endpoint."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlplat.demo.services import MlflowServer, MotoS3Server, PostgresServer

BUCKET = "mlplat-artifacts"


@dataclass
class Platform:
    """The running services, and where they keep things."""

    postgres: PostgresServer
    s3: MotoS3Server
    mlflow: MlflowServer
    root: Path
    bucket: str = BUCKET


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    """PostgreSQL (as a non-root user), a moto S3 server and `mlflow server` on loopback, stopped afterwards."""
    root = Path(tempfile.mkdtemp(prefix="mlplat-e2e-"))
    root.chmod(0o755)  # PostgreSQL runs as its own user and must reach its data directory
    postgres = PostgresServer(root / "postgres")
    s3 = MotoS3Server(root / "s3", buckets=(BUCKET,))
    try:
        postgres.start()
        s3.start()
        mlflow = MlflowServer(root / "mlflow", postgres.uri, f"s3://{BUCKET}/mlflow", s3.endpoint_url).start()
        try:
            yield Platform(postgres, s3, mlflow, root)
        finally:
            mlflow.stop()
    finally:
        s3.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)
