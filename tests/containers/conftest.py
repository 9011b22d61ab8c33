"""Fixtures for running the production render's container specs in the images scripts/build-images.sh built.

Needs a Docker engine (``export DOCKER_HOST=$(scripts/docker-engine.sh)``) and the three images
(``scripts/build-images.sh``). Without them the tests that run containers (all of which use ``production``) skip
with the reason; under ``CI`` they fail instead, because CI must run them (.ci/run builds the images first).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from support.containers import Cluster, LocalServices, RenderedStack, engine_problem, missing_images
from support.manifests import manifests  # the render's Kubernetes objects, masked secrets left out
from support.secrets import CreatedSecrets, record_secrets

from mlplat.demo.services import LOCAL_AWS_ENV, LOOPBACK, MotoS3Server, PostgresServer, running
from mlplat.infra.engine import program_from_path, render
from mlplat.infra.stacks import load_stack

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def engine_and_images() -> None:
    """Skip (locally) or fail (under CI) when there is no engine or an image has not been built."""
    problem = engine_problem()
    if problem is None and (missing := missing_images()):
        problem = f"images not built: {', '.join(missing)} (run scripts/build-images.sh)"
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the container tests, but {problem}", pytrace=False)
        pytest.skip(problem)


@pytest.fixture(scope="session")
def production(engine_and_images: None) -> RenderedStack:
    """The shipped production stack rendered offline, with the values of the Secrets it creates (the mock
    runtime's generated passwords and keys), which the engine's records mask."""
    files = load_stack(REPO, "production")
    program = program_from_path(files.main)
    created: CreatedSecrets = {}

    def recorded() -> None:
        record_secrets(created)
        program()

    stack = render(
        recorded, project=files.project, stack=files.stack, config=files.config, secret_keys=files.secret_keys
    )
    region = str(stack.one("pulumi:providers:aws").inputs["region"])
    return RenderedStack(Cluster(manifests(stack)), created, region)


def require_tls(postgres: PostgresServer) -> None:
    """Serve TLS and refuse plain connections on TCP, as RDS with ``rds.force_ssl`` does (self-signed: the
    rendered URI says ``sslmode=require``, which encrypts without verifying the server's certificate)."""
    cert, key = postgres.root / "server.crt", postgres.root / "server.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={LOOPBACK}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    key.chmod(0o600)
    if os.geteuid() == 0:
        for path in (cert, key):
            shutil.chown(path, postgres.os_user, postgres.os_user)
    hba = postgres.data_dir / "pg_hba.conf"
    hba.write_text(re.sub(r"^host(\s)", r"hostssl\1", hba.read_text(), flags=re.MULTILINE))
    for setting in (f"ssl_cert_file = '{cert}'", f"ssl_key_file = '{key}'", "ssl = on"):
        postgres.psql(f"ALTER SYSTEM SET {setting}")
    postgres.psql("SELECT pg_reload_conf()")
    assert postgres.psql("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == "t"


@pytest.fixture(scope="session")
def local_services(production: RenderedStack) -> Iterator[LocalServices]:
    """PostgreSQL with the rendered database, user and password; moto S3 with the rendered buckets."""
    rendered_uri = production.secret_value("MLFLOW_BACKEND_STORE_URI")
    rds = urlsplit(rendered_uri)
    assert rds.username and rds.password and rds.hostname, rendered_uri
    root = Path(tempfile.mkdtemp(prefix="mlplat-containers-"))
    root.chmod(0o755)  # PostgreSQL runs as its own user and must reach its data directory
    postgres = PostgresServer(
        root / "postgres", database=rds.path.lstrip("/"), user=unquote(rds.username), password=unquote(rds.password)
    )
    buckets = tuple(sorted(set(re.findall(r"s3://([a-z0-9.-]+)", repr(production.cluster.objects)))))
    assert buckets, "the render names no S3 bucket"
    s3 = MotoS3Server(root / "s3", buckets=buckets)
    try:
        with running(postgres, s3):
            require_tls(postgres)
            # RDS's endpoint is the one thing replaced in the rendered secrets (URI, auth config).
            yield LocalServices(postgres, s3, {f"{rds.hostname}:{rds.port or 5432}": f"{LOOPBACK}:{postgres.port}"})
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def irsa_env(local_services: LocalServices, production: RenderedStack) -> dict[str, str]:
    """What a pod whose service account has an IAM role gets here instead of EKS's web-identity token."""
    endpoint = local_services.s3.endpoint_url
    return {
        "AWS_ACCESS_KEY_ID": LOCAL_AWS_ENV["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": LOCAL_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        "AWS_REGION": production.region,
        "AWS_DEFAULT_REGION": production.region,
        "AWS_ENDPOINT_URL": endpoint,
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
    }
