"""The platform's services on one machine: PostgreSQL, an S3-compatible endpoint (moto) and an MLflow server.

The production topology in miniature — MLflow's backend store in PostgreSQL, its artifacts in S3 — for the
end-to-end tests and ``mlplat demo``. Every server listens on 127.0.0.1 on a free port, runs in its own
process group (so stopping it stops its workers too) and can be restarted in place, keeping its data.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
# Dummy credentials for the local S3 endpoint; boto3 refuses to sign without some.
LOCAL_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "mlplat-local",
    "AWS_SECRET_ACCESS_KEY": "mlplat-local",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class ServiceError(RuntimeError):
    """A local service failed to start; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _wait_for(
    check: Callable[[], bool], what: str, timeout: float, log: Path | None, proc: subprocess.Popen[bytes] | None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        with contextlib.suppress(OSError, urllib.error.URLError):
            if check():
                return
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
    raise ServiceError(f"{what} did not become ready within {timeout:.0f}s\n{tail}")


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


@dataclass
class ManagedProcess:
    """A server process in its own session, stopped with its whole process group."""

    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def spawn(self, argv: list[str], env: Mapping[str, str] | None = None, user: str | None = None) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            argv,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            user=user,
        )
        handle.close()

    def stop(self, timeout: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


class _Service:
    """Shared lifecycle of the local servers: ``start`` (each its own), ``stop`` and ``restart`` in place."""

    _process: ManagedProcess | None

    def start(self) -> _Service:
        raise NotImplementedError

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def restart(self) -> None:
        """Stop and start again on the same port, keeping the data."""
        self.stop()
        self.start()


def _postgres_bin(tool: str) -> str:
    found = shutil.which(tool)
    if found:
        return found
    for version in ("17", "16", "15"):
        candidate = Path(f"/usr/lib/postgresql/{version}/bin/{tool}")
        if candidate.exists():
            return str(candidate)
    raise ServiceError(f"{tool} not found: install PostgreSQL (Debian: apt-get install postgresql-15)")


@dataclass
class PostgresServer(_Service):
    """A throwaway PostgreSQL cluster in ``root``, owned by a non-root user (PostgreSQL refuses root).

    Run as root, the cluster belongs to ``os_user`` (default ``postgres``, which Debian's package creates),
    so ``root`` and its parents must be traversable by that user (e.g. a ``tempfile.mkdtemp()`` in /tmp).
    """

    root: Path
    port: int = field(default_factory=free_port)
    database: str = "mlflow"
    user: str = "mlplat"
    password: str = "mlplat-local"
    os_user: str = "postgres"
    _process: ManagedProcess | None = None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def uri(self) -> str:
        """A SQLAlchemy URI naming the driver (SQLAlchemy 2.1 defaults ``postgresql://`` to psycopg 3)."""
        return f"postgresql+psycopg2://{self.user}:{self.password}@{LOOPBACK}:{self.port}/{self.database}"

    def _run_as(self) -> str | None:
        return self.os_user if os.geteuid() == 0 else None

    def _own(self, path: Path) -> None:
        if self._run_as() is not None:
            entry = pwd.getpwnam(self.os_user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self, timeout: float = 60) -> PostgresServer:
        first_start = not (self.data_dir / "PG_VERSION").exists()
        self.root.mkdir(parents=True, exist_ok=True)
        self._own(self.root)
        if first_start:
            pwfile = self.root / "pwfile"
            pwfile.write_text(self.password + "\n")
            self._own(pwfile)
            initdb = subprocess.run(
                [
                    _postgres_bin("initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.user,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
                check=False,
                capture_output=True,
                text=True,
                user=self._run_as(),
            )
            pwfile.unlink()
            if initdb.returncode != 0:
                raise ServiceError(
                    f"initdb failed in {self.data_dir} (as {self._run_as() or 'this user'}): "
                    f"{initdb.stderr.strip()[-2000:]}"
                )
        self._process = ManagedProcess(self.root / "postgres.log")
        self._process.spawn(
            [
                _postgres_bin("postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-c",
                f"listen_addresses={LOOPBACK}",
                "-c",
                f"unix_socket_directories={self.root}",
                "-c",
                "fsync=off",
            ],
            user=self._run_as(),
        )
        _wait_for(self._accepts, f"PostgreSQL on port {self.port}", timeout, self._process.log, self._process.proc)
        if first_start:
            self.psql(f"CREATE DATABASE {self.database}", database="postgres")
        return self

    def _accepts(self) -> bool:
        return (
            subprocess.run(
                [_postgres_bin("pg_isready"), "-h", LOOPBACK, "-p", str(self.port)], capture_output=True, check=False
            ).returncode
            == 0
        )

    def psql(self, sql: str, database: str | None = None) -> str:
        """Run one SQL statement and return psql's unaligned output."""
        completed = subprocess.run(
            [
                "psql",
                "-h",
                LOOPBACK,
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                database or self.database,
                "-tAc",
                sql,
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PGPASSWORD": self.password},
        )
        return completed.stdout.strip()


@dataclass
class MotoS3Server(_Service):
    """moto's server as an S3-compatible endpoint (``moto_server``), with ``buckets`` created at start.

    moto keeps objects in memory: a restart of this server loses them, unlike PostgreSQL's data.
    """

    root: Path
    buckets: tuple[str, ...] = ("mlplat-artifacts",)
    port: int = field(default_factory=free_port)
    _process: ManagedProcess | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout: float = 60) -> MotoS3Server:
        self._process = ManagedProcess(self.root / "moto.log")
        self._process.spawn(
            [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(self.port)], env=LOCAL_AWS_ENV
        )
        _wait_for(
            lambda: _http_ok(f"{self.endpoint_url}/moto-api/"),
            "moto S3 server",
            timeout,
            self._process.log,
            self._process.proc,
        )
        client = self.client()
        for bucket in self.buckets:
            client.create_bucket(Bucket=bucket)
        return self

    def client(self) -> Any:
        """A boto3 S3 client for this endpoint."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=LOCAL_AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        )


@dataclass
class MlflowServer(_Service):
    """``mlflow server`` with a given backend store and artifact destination (``--serve-artifacts``)."""

    root: Path
    backend_store_uri: str
    artifacts_destination: str
    s3_endpoint_url: str | None = None
    port: int = field(default_factory=free_port)
    _process: ManagedProcess | None = None

    @property
    def uri(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def env(self) -> dict[str, str]:
        env = {**LOCAL_AWS_ENV, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        if self.s3_endpoint_url:
            env["MLFLOW_S3_ENDPOINT_URL"] = self.s3_endpoint_url
        return env

    def start(self, timeout: float = 120) -> MlflowServer:
        self._process = ManagedProcess(self.root / "mlflow.log")
        mlflow = str(Path(sys.executable).with_name("mlflow"))
        self._process.spawn(
            [
                mlflow,
                "server",
                "--host",
                LOOPBACK,
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                self.backend_store_uri,
                "--artifacts-destination",
                self.artifacts_destination,
                "--serve-artifacts",
            ],
            env=self.env(),
        )
        _wait_for(
            lambda: _http_ok(f"{self.uri}/health"), "MLflow server", timeout, self._process.log, self._process.proc
        )
        return self


@contextlib.contextmanager
def running(*services: PostgresServer | MotoS3Server | MlflowServer) -> Iterator[None]:
    """Start services in order and stop them in reverse, whatever happens in between."""
    started: list[PostgresServer | MotoS3Server | MlflowServer] = []
    try:
        for service in services:
            service.start()
            started.append(service)
        yield
    finally:
        for service in reversed(started):
            service.stop()
