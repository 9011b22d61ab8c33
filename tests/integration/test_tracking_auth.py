"""MLflow authentication for real: the Tracking component's MLflow pod, replayed on loopback.

PostgreSQL 15 (the database password holds every special character RDS allows, '%' included), then the pod's
two init containers and `mlflow server --app-name basic-auth`, each with the command, arguments, environment and
mounted files the component renders (the Secrets' values come from the render too). Only what a laptop cannot be
is swapped: the database URI, the artifact destination, the listen address and the file paths. Then each identity
does what it is there for, and is refused what it is not.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pulumi
import pulumi_kubernetes as k8s
import pytest
from support.secrets import CreatedSecrets, record_secrets, tracking_args

from mlplat.components.tracking import Tracking, TrackingAuth
from mlplat.demo.services import LOOPBACK, ManagedProcess, PostgresServer, free_port
from mlplat.infra.engine import render
from mlplat.infra.mock_outputs import fake_certificate, kubeconfig

pytestmark = pytest.mark.integration

DB_PASSWORD = "Aa0%41!#$%^&*()-_=+[]{}<>:?"
MODEL = "digits"


@dataclass
class Rendered:
    """The MLflow pod as the component renders it, with the plain values of the Secrets it reads."""

    pod: dict[str, Any]
    secrets: CreatedSecrets
    bootstrap_source: str

    def container(self, name: str) -> dict[str, Any]:
        return next(c for c in [*self.pod["initContainers"], *self.pod["containers"]] if c["name"] == name)

    def env(self, container: str, **overrides: str) -> dict[str, str]:
        """The container's environment as the kubelet builds it (secretKeyRef resolved), then ``overrides``."""
        env: dict[str, str] = {}
        for var in self.container(container)["env"]:
            ref = (var.get("valueFrom") or {}).get("secretKeyRef")
            env[var["name"]] = self.secrets[("mlflow", ref["name"])][ref["key"]] if ref else var["value"]
        return {**env, **overrides}

    def credentials(self, identity: str, namespace: str = "mlflow") -> tuple[str, str]:
        name = f"mlflow-{identity}" if namespace != "mlflow" else f"mlflow-user-{identity}"
        secret = self.secrets[(namespace, name)]
        return secret["username"], secret["password"]


def render_pod(models: Sequence[str]) -> Rendered:
    created: CreatedSecrets = {}
    script: dict[str, str] = {}

    def program() -> None:
        record_secrets(created)
        config = kubeconfig("test", "https://example.eks.amazonaws.com", fake_certificate("test"), "us-east-1")
        provider = k8s.Provider("k8s", kubeconfig=pulumi.Output.secret(json.dumps(config)))
        tracking = Tracking(
            "tracking",
            tracking_args(auth=TrackingAuth(registered_models=list(models))),
            opts=pulumi.ResourceOptions(providers=[provider]),
        )
        # What MlPlatform hands the model servers and the trainer, in their own namespaces.
        tracking.client_credentials("serving", "serving")
        tracking.client_credentials("trainer", "training")

    stack = render(program, project="mlplat", stack="test")
    script.update(stack.one("kubernetes:core/v1:ConfigMap").inputs["data"])
    pod = stack.one("kubernetes:apps/v1:Deployment").inputs["spec"]["template"]["spec"]
    return Rendered(pod, created, script["bootstrap.py"])


def flag(args: list[str], name: str, value: str) -> list[str]:
    """``args`` with the value after ``name`` replaced (the flag must be there)."""
    i = args.index(name)
    return [*args[: i + 1], value, *args[i + 2 :]]


@dataclass
class AuthServer:
    """The running server and what the pod's processes were given."""

    root: Path
    uri: str
    backend_uri: str
    rendered: Rendered
    process: ManagedProcess
    postgres: PostgresServer

    def pod_files(self, rendered: Rendered) -> dict[str, str]:
        """Write the pod's mounted files under ``root`` (auth config, users' passwords, bootstrap script); returns
        the path each mount point maps to here."""
        config = configparser.ConfigParser()
        config.read_string(rendered.secrets[("mlflow", "mlflow-auth")]["basic_auth.ini"])
        # The rendered file names the RDS endpoint: point it at this database, the other settings as rendered.
        config.set("mlflow", "database_uri", self.backend_uri.replace("%", "%%"))
        mounts = {
            "/etc/mlflow-auth": self.root / "auth",
            "/etc/mlflow-users": self.root / "users",
            "/etc/mlflow-auth-bootstrap": self.root / "bootstrap",
        }
        for folder in mounts.values():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        with (mounts["/etc/mlflow-auth"] / "basic_auth.ini").open("w") as handle:
            config.write(handle)
        (users,) = [v for v in rendered.pod["volumes"] if v["name"] == "mlflow-users"]
        for source in users["projected"]["sources"]:
            (item,) = source["secret"]["items"]
            (mounts["/etc/mlflow-users"] / item["path"]).write_text(
                rendered.secrets[("mlflow", source["secret"]["name"])][item["key"]]
            )
        (mounts["/etc/mlflow-auth-bootstrap"] / "bootstrap.py").write_text(rendered.bootstrap_source)
        return {mount: str(path) for mount, path in mounts.items()}

    def run_init(self, rendered: Rendered, container: str) -> subprocess.CompletedProcess[str]:
        """Run an init container's command as the pod would, its mount points mapped to local folders."""
        paths = self.pod_files(rendered)
        spec = rendered.container(container)

        def local(text: str) -> str:
            for mount, path in sorted(paths.items(), key=lambda mp: -len(mp[0])):  # /etc/mlflow-auth-bootstrap first
                text = text.replace(mount, path)
            return text

        command = [local(a) for a in [*spec["command"], *spec.get("args", [])]]
        assert command[0] == "python"
        env = {
            k: local(v)
            for k, v in rendered.env(container, MLFLOW_BACKEND_STORE_URI=self.backend_uri, HOME=str(self.root)).items()
        }
        return subprocess.run(
            [sys.executable, *command[1:]],
            env={**env, "PATH": os.environ["PATH"]},
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )


def http_status(
    url: str, *, method: str = "GET", body: Any | None = None, auth: tuple[str, str] | None = None
) -> tuple[int, Message]:
    request = urllib.request.Request(
        url,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    if auth is not None:
        import base64

        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.headers


@pytest.fixture(scope="module")
def server() -> Iterator[AuthServer]:
    root = Path(tempfile.mkdtemp(prefix="mlplat-auth-"))
    root.chmod(0o755)  # PostgreSQL runs as its own user and must reach its data directory
    postgres = PostgresServer(root / "postgres", password=DB_PASSWORD)
    process = ManagedProcess(root / "mlflow.log")
    try:
        postgres.start()
        backend = (
            f"postgresql+psycopg2://{postgres.user}:{quote(DB_PASSWORD, safe='')}@{LOOPBACK}:{postgres.port}/"
            f"{postgres.database}"
        )
        rendered = render_pod([MODEL])
        port = free_port()
        live = AuthServer(root, f"http://{LOOPBACK}:{port}", backend, rendered, process, postgres)
        for init in ("db-upgrade", "auth-bootstrap"):
            done = live.run_init(rendered, init)
            assert done.returncode == 0, f"{init}:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
        spec = rendered.container("mlflow")
        args = list(spec["args"])
        assert args[0] == "server" and args[-2:] == ["--app-name", "basic-auth"] and "--serve-artifacts" in args
        args = flag(args, "--host", LOOPBACK)
        args = flag(args, "--port", str(port))
        args = flag(args, "--workers", "1")  # two cores shared by the whole suite
        args = flag(args, "--artifacts-destination", (root / "artifacts").as_uri())
        args = flag(args, "--allowed-hosts", f"{LOOPBACK}:{port}")
        paths = live.pod_files(rendered)
        env = {
            k: v.replace("/etc/mlflow-auth", paths["/etc/mlflow-auth"])
            for k, v in rendered.env("mlflow", MLFLOW_BACKEND_STORE_URI=backend, HOME=str(root)).items()
        }
        assert "MLFLOW_AUTH_ADMIN_PASSWORD" not in env  # the admin exists: the bootstrap made it
        process.spawn([str(Path(sys.executable).with_name("mlflow")), *args], env=env)
        deadline = time.monotonic() + 120
        while not (_listening(port) and http_status(f"{live.uri}/health")[0] == 200):
            assert process.proc is not None and process.proc.poll() is None, (root / "mlflow.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (root / "mlflow.log").read_text()[-3000:]
            time.sleep(0.3)
        yield live
    finally:
        process.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex((LOOPBACK, port)) == 0


@contextlib.contextmanager
def as_identity(uri: str, credentials: tuple[str, str] | None) -> Iterator[Any]:
    """An MlflowClient (and the fluent API) sending ``credentials`` as the pods do: MLFLOW_TRACKING_USERNAME and
    MLFLOW_TRACKING_PASSWORD in the environment, read by MLflow on every request."""
    import mlflow
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    saved = {name: os.environ.get(name) for name in names}
    for name, value in zip(names[1:], credentials or (None, None), strict=True):
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    try:
        with _use_tracking_uri(uri):  # restores whatever URI the process had (other tests set their own)
            yield mlflow.MlflowClient(tracking_uri=uri)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def refused(call: Any) -> int:
    """The HTTP status MLflow refused ``call()`` with (the test fails if it went through)."""
    import re

    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as caught:
        call()
    # mlflow.utils.rest_utils: "API request to endpoint ... failed with error code 403 != 200. Response body: ..."
    found = re.search(r"failed with error code (\d{3})", str(caught.value))
    assert found, f"refused, but not by the server's auth: {caught.value}"
    return int(found[1])


@pytest.fixture(scope="module")
def champion(server: AuthServer) -> str:
    """As the trainer: a run, the trainer's own registration (a torch.export program), then the champion alias."""
    import mlflow
    import numpy as np
    import torch

    from mlplat.training.registry import register_model

    with as_identity(server.uri, server.rendered.credentials("trainer", "training")) as client:
        # An experiment id, not mlflow.set_experiment: that would stay the process's active experiment for the
        # tests that run after this module, against servers where it does not exist.
        experiment = client.create_experiment("auth")
        with mlflow.start_run(experiment_id=experiment):
            mlflow.log_params({"epochs": 1, "hidden": 4})
            mlflow.log_metric("val_accuracy", 0.5)
            x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
            version = register_model(
                torch.nn.Sequential(torch.nn.Linear(4, 3)), name=MODEL, alias="staging", x_train=x, num_classes=3
            )
        client.set_registered_model_alias(MODEL, "champion", version)
        assert client.get_model_version_by_alias(MODEL, "champion").version == version
    return version


def test_anonymous_clients_get_401_and_health_answers_them(server: AuthServer) -> None:
    assert http_status(f"{server.uri}/health")[0] == 200  # what the kubelet's probes ask, without credentials
    status, headers = http_status(f"{server.uri}/api/2.0/mlflow/registered-models/get?name={MODEL}")
    assert status == 401 and headers.get("WWW-Authenticate") == 'Basic realm="mlflow"'
    alias = {"name": MODEL, "alias": "champion", "version": "1"}
    assert http_status(f"{server.uri}/api/2.0/mlflow/registered-models/alias", method="POST", body=alias)[0] == 401
    user, _ = server.rendered.credentials("serving", "serving")
    assert (
        http_status(f"{server.uri}/api/2.0/mlflow/registered-models/get?name={MODEL}", auth=(user, "not-the-password"))[
            0
        ]
        == 401
    )
    with as_identity(server.uri, None) as client:
        assert refused(lambda: client.get_registered_model(MODEL)) == 401


def test_the_trainer_logs_a_run_registers_a_version_and_sets_the_champion(server: AuthServer, champion: str) -> None:
    with as_identity(server.uri, server.rendered.credentials("trainer", "training")) as client:
        version = client.get_model_version_by_alias(MODEL, "champion")
        assert version.version == champion
        run = client.get_run(version.run_id)
        assert run.data.params == {"epochs": "1", "hidden": "4"} and run.data.metrics["val_accuracy"] == 0.5
        assert client.get_model_version_by_alias(MODEL, "staging").version == champion


def test_model_servers_load_the_champion_but_cannot_move_it_or_register(
    server: AuthServer, champion: str, tmp_path: Path
) -> None:
    import mlflow.pytorch
    import torch

    with as_identity(server.uri, server.rendered.credentials("trainer", "training")) as trainer:
        current = trainer.get_model_version_by_alias(MODEL, "champion")
    with as_identity(server.uri, server.rendered.credentials("serving", "serving")) as client:
        assert client.get_model_version_by_alias(MODEL, "champion").version == current.version
        # Through the artifact proxy, into this test's folder (MLflow's default temp folder is never removed).
        model = mlflow.pytorch.load_model(f"models:/{MODEL}@champion", dst_path=str(tmp_path), map_location="cpu")
        assert tuple(model(torch.zeros(2, 4)).shape) == (2, 3)
        assert refused(lambda: client.set_registered_model_alias(MODEL, "champion", champion)) == 403
        assert refused(lambda: client.delete_registered_model_alias(MODEL, "champion")) == 403
        assert refused(lambda: client.create_model_version(MODEL, f"models:/{MODEL}/{champion}")) == 403
        assert refused(lambda: client.set_registered_model_tag(MODEL, "owner", "serving")) == 403
        experiment = client.get_run(current.run_id).info.experiment_id  # the trainer's
        assert refused(lambda: client.create_run(experiment)) == 403
        assert client.get_model_version_by_alias(MODEL, "champion").version == current.version


def test_the_pipeline_registers_and_moves_the_champion(server: AuthServer, champion: str) -> None:
    from mlplat.training.registry import promote

    with as_identity(server.uri, server.rendered.credentials("pipeline")) as client:
        new = client.create_model_version(MODEL, f"models:/{MODEL}/{champion}").version  # a copy of the champion
        client.set_registered_model_alias(MODEL, "challenger", new)
        assert promote(MODEL, "challenger", "champion", tracking_uri=server.uri) == (new, champion)
    with as_identity(server.uri, server.rendered.credentials("serving", "serving")) as client:
        assert client.get_model_version_by_alias(MODEL, "champion").version == new
    with as_identity(server.uri, server.rendered.credentials("trainer", "training")) as client:
        client.set_registered_model_alias(MODEL, "champion", champion)  # the trainer may move it back


def test_a_model_a_reader_created_first_is_taken_back_when_the_platform_adds_it(server: AuthServer) -> None:
    # Any authenticated user may create a registered model, and MLflow makes its creator its manager: the reason
    # the bootstrap creates the platform's models before the servers have credentials, and revokes a squatter's.
    reader = server.rendered.credentials("serving", "serving")
    with as_identity(server.uri, reader) as client:
        client.create_registered_model("forecast")
        client.set_registered_model_tag("forecast", "owner", "serving")
    # A second deploy names the model (a new service serves it): the new pods run both init containers again, the
    # schema upgrade over a database that now holds the auth tables too.
    again = render_pod([MODEL, "forecast"])
    assert again.secrets == server.rendered.secrets  # same stack, same generated passwords
    upgrade = server.run_init(again, "db-upgrade")
    assert upgrade.returncode == 0, upgrade.stderr[-3000:]
    done = server.run_init(again, "auth-bootstrap")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "registered model forecast: exists" in done.stderr
    assert "reader serving: revoked registered_model forecast" in done.stderr
    for user in ("admin", "user trainer", "user pipeline", "user serving"):  # idempotent: nothing to change
        assert any(line.endswith(f"{user}: unchanged") for line in done.stderr.splitlines()), done.stderr
    with as_identity(server.uri, reader) as client:
        assert refused(lambda: client.set_registered_model_tag("forecast", "owner", "serving")) == 403
    with as_identity(server.uri, server.rendered.credentials("pipeline")) as client:
        client.set_registered_model_tag("forecast", "owner", "pipeline")  # the writers' grant covers it
