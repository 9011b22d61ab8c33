"""Tracking: RDS for MLflow locked down, the password kept secret, MLflow wired to RDS and S3."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url
from support.secrets import CreatedSecrets, record_secrets, secret_refs, unresolved

from mlplat.components import mlflow_auth_bootstrap
from mlplat.components import tracking as tracking_module
from mlplat.components.model_service import ModelServiceSpec
from mlplat.components.tracking import (
    PASSWORD_SPECIAL,
    DatabaseArgs,
    Tracking,
    TrackingArgs,
    TrackingAuth,
    auth_config_ini,
    backend_store_uri,
)
from mlplat.infra.engine import MASK, ProgramError, Render, render
from mlplat.infra.mock_outputs import MockOutputs, fake_certificate, kubeconfig, secret

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mlplat/tracking:0123abc"
ALB_HOST = "internal-k8s-mlflow-abc123-1234567890.us-east-1.elb.amazonaws.com"


def tracking_args(**overrides: Any) -> TrackingArgs:
    base: dict[str, Any] = dict(
        vpc_id="vpc-0abc",
        database_subnet_ids=["subnet-a", "subnet-b", "subnet-c"],
        client_security_group_ids=["sg-nodes"],
        artifacts_uri="s3://artifacts-bucket/mlflow",
        image=IMAGE,
        service_account_role_arn="arn:aws:iam::1:role/mlflow",
    )
    return TrackingArgs(**{**base, **overrides})


@pytest.fixture
def tracking(on_cluster: Callable[..., Render]) -> Callable[..., Render]:
    def _render(args: dict[str, Any] | None = None, **database: object) -> Render:
        def build(opts: pulumi.ResourceOptions) -> None:
            t = Tracking("tracking", tracking_args(database=DatabaseArgs(**database), **(args or {})), opts=opts)
            pulumi.export("uri", t.uri)
            pulumi.export("backend", t.backend_store_uri)

        return on_cluster(build)

    return _render


def containers(stack: Render) -> list[dict[str, Any]]:
    spec = stack.one("kubernetes:apps/v1:Deployment").inputs["spec"]["template"]["spec"]
    return [*spec["initContainers"], *spec["containers"]]


def server_args(stack: Render) -> list[str]:
    (server,) = stack.one("kubernetes:apps/v1:Deployment").inputs["spec"]["template"]["spec"]["containers"]
    return list(server["args"])


def allowed_hosts(stack: Render, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The rendered --allowed-hosts as MLflow reads it: `mlflow server` exports the flag's value as
    MLFLOW_SERVER_ALLOWED_HOSTS (mlflow/cli/__init__.py) and the middleware parses that variable."""
    from mlflow.server.security_utils import get_allowed_hosts_from_env

    args = server_args(stack)
    monkeypatch.setenv("MLFLOW_SERVER_ALLOWED_HOSTS", args[args.index("--allowed-hosts") + 1])
    hosts = get_allowed_hosts_from_env()
    assert hosts
    return hosts


def test_production_database_is_multi_az_encrypted_private_and_protected(tracking: Callable[..., Render]) -> None:
    stack = tracking()
    db = stack.one("aws:rds/instance:Instance")
    assert db.inputs["multiAz"] is True and db.inputs["storageEncrypted"] is True
    assert db.inputs["publiclyAccessible"] is False and db.inputs["deletionProtection"] is True
    assert db.inputs["backupRetentionPeriod"] >= 7 and db.inputs["skipFinalSnapshot"] is False
    assert db.inputs["storageType"] == "gp3" and db.inputs["maxAllocatedStorage"] > db.inputs["allocatedStorage"]
    assert db.options["protect"] and db.options["retain_on_delete"]
    params = stack.one("aws:rds/parameterGroup:ParameterGroup").inputs["parameters"]
    assert {(p["name"], p["value"]) for p in params} == {("rds.force_ssl", "1")}
    assert db.inputs["dbSubnetGroupName"] == stack.one("aws:rds/subnetGroup:SubnetGroup").id


def test_dev_database_can_be_cheap(tracking: Callable[..., Render]) -> None:
    db = tracking(
        multi_az=False, deletion_protection=False, backup_retention_days=1, final_snapshot=False, protect=False
    ).one("aws:rds/instance:Instance")
    assert db.inputs["multiAz"] is False and db.inputs["skipFinalSnapshot"] is True
    assert "finalSnapshotIdentifier" not in db.inputs and not db.options["protect"]


def test_security_group_admits_only_the_cluster_on_5432(tracking: Callable[..., Render]) -> None:
    stack = tracking()
    (rule,) = stack.by_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    assert rule.inputs["referencedSecurityGroupId"] == "sg-nodes"
    assert (rule.inputs["fromPort"], rule.inputs["toPort"]) == (5432, 5432)
    assert "cidrIpv4" not in rule.inputs
    assert stack.one("aws:rds/instance:Instance").inputs["vpcSecurityGroupIds"] == [
        stack.one("aws:ec2/securityGroup:SecurityGroup").id
    ]


def test_password_never_appears_in_plain_text(tracking: Callable[..., Render]) -> None:
    stack = tracking()
    assert stack.one("aws:rds/instance:Instance").inputs["password"] == MASK
    assert all(s.inputs["stringData"] == MASK for s in stack.by_type("kubernetes:core/v1:Secret"))
    assert stack.one("kubernetes:core/v1:Secret", "tracking-backend").inputs["stringData"] == MASK
    assert stack.outputs["backend"] == MASK
    # The mock's generated password is derived from the resource name; it must not leak anywhere.
    from mlplat.infra.mock_outputs import MockOutputs

    _, generated = MockOutputs("mlplat", "test").outputs(
        "random:index/randomPassword:RandomPassword", "tracking-db-password", {"length": 32}
    )
    assert generated["result"]["value"] not in stack.dumps()


def test_mlflow_points_at_rds_and_the_bucket(tracking: Callable[..., Render]) -> None:
    stack = tracking()
    deployment = stack.one("kubernetes:apps/v1:Deployment").inputs["spec"]["template"]["spec"]
    (server,) = deployment["containers"]
    args = server["args"]
    assert "--backend-store-uri" not in args  # read from MLFLOW_BACKEND_STORE_URI (the Secret)
    assert args[args.index("--artifacts-destination") + 1] == "s3://artifacts-bucket/mlflow"
    assert "--serve-artifacts" in args
    backend = next(e for e in server["env"] if e["name"] == "MLFLOW_BACKEND_STORE_URI")
    assert backend["valueFrom"]["secretKeyRef"]["name"] == "mlflow-backend"
    upgrade, bootstrap = deployment["initContainers"]
    assert upgrade["name"] == "db-upgrade" and server["image"] == upgrade["image"] == bootstrap["image"] == IMAGE
    assert bootstrap["name"] == "auth-bootstrap"  # after the upgrade: the auth tables share the database
    assert server["readinessProbe"]["httpGet"]["path"] == "/health"
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    assert stack.outputs["uri"] == "http://mlflow.mlflow.svc.cluster.local:5000"
    sa = stack.one("kubernetes:core/v1:ServiceAccount").inputs
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == "arn:aws:iam::1:role/mlflow"


def test_database_args_are_validated() -> None:
    with pytest.raises(ValueError, match=r"0\.\.35"):
        DatabaseArgs(backup_retention_days=40)
    with pytest.raises(ValueError, match="does not match"):
        DatabaseArgs(engine_version="15", parameter_family="postgres16")


# -- the image (issue 14, item 1) -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        "ghcr.io/mlflow/mlflow:v3.17.2",
        "ghcr.io/mlflow/mlflow",
        "ghcr.io/mlflow/mlflow:latest",
        "GHCR.IO/mlflow/mlflow:v3.17.2@sha256:" + "0" * 64,
    ],
)
def test_the_core_official_mlflow_image_is_refused_with_what_to_use(image: str) -> None:
    with pytest.raises(ValueError, match=r"TrackingArgs\.image=.*without psycopg2.*or boto3.*tracking/Dockerfile"):
        tracking_args(image=image)


@pytest.mark.parametrize(
    "image",
    [IMAGE, "ghcr.io/mlflow/mlflow:v3.17.2-full", "registry.local:5000/mlflow:v3.17.2", "registry.local:5000/mlflow"],
)
def test_images_with_the_driver_or_of_unknown_content_are_accepted(image: str) -> None:
    assert tracking_args(image=image).image == image


def test_an_image_is_required(on_cluster: Callable[..., Render]) -> None:
    assert tracking_args(image=None).image is None  # MlPlatform fills it in later
    with pytest.raises(ProgramError, match=r"TrackingArgs\.image is not set.*tracking/Dockerfile"):
        on_cluster(lambda opts: Tracking("tracking", tracking_args(image=None), opts=opts))


def test_an_image_output_is_used_and_checked_once_known(
    on_cluster: Callable[..., Render], monkeypatch: pytest.MonkeyPatch
) -> None:
    # (A render that fails inside an Output leaks its error into the next render in this process, so the check
    # on an Output's value is observed rather than provoked.)
    checked: list[str] = []
    original = tracking_module.check_image

    def check(image: str) -> str:
        checked.append(image)
        return original(image)

    monkeypatch.setattr(tracking_module, "check_image", check)
    stack = on_cluster(
        lambda opts: Tracking("tracking", tracking_args(image=pulumi.Output.from_input(IMAGE)), opts=opts)
    )
    assert {c["image"] for c in containers(stack)} == {IMAGE}
    assert checked == [IMAGE]


# -- the database password in the URI (issue 14, item 3) --------------------------------------------------------

# '%' followed by hex digits is what SQLAlchemy would decode in a raw (unquoted) password.
PASSWORDS = [PASSWORD_SPECIAL, PASSWORD_SPECIAL[::-1], "Aa0%41%2F%25%%", *(f"x{c}41{c}2fy" for c in PASSWORD_SPECIAL)]


@pytest.mark.parametrize("password", PASSWORDS)
def test_the_backend_uri_gives_sqlalchemy_back_the_exact_password(password: str) -> None:
    url = make_url(backend_store_uri(password, "tracking-db.abc.us-east-1.rds.amazonaws.com"))
    assert url.password == password
    assert (url.drivername, url.username, url.host, url.port, url.database) == (
        "postgresql+psycopg2",
        "mlflow",
        "tracking-db.abc.us-east-1.rds.amazonaws.com",
        5432,
        "mlflow",
    )
    assert dict(url.query) == {"sslmode": "require"}


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abcXYZ0129" + PASSWORD_SPECIAL, min_size=1, max_size=40))
def test_any_generated_password_round_trips(password: str) -> None:
    assert make_url(backend_store_uri(password, "db.internal")).password == password


class SpecialPasswords(MockOutputs):
    """The mock runtime, but RandomPassword returns a password holding every special character it was given."""

    def _RandomPassword(self, name: str, rid: str, physical: str, inputs: dict[str, Any]) -> dict[str, Any]:
        value = "Aa0%41" + inputs.get("overrideSpecial", "")
        return {"result": secret(value), "bcryptHash": secret("$2a$10$" + value)}


def test_the_rendered_backend_uri_encodes_the_generated_password_and_stays_secret() -> None:
    seen: list[str] = []

    def program() -> None:
        config = kubeconfig("test", "https://example.eks.amazonaws.com", fake_certificate("test"), "us-east-1")
        provider = k8s.Provider("k8s", kubeconfig=pulumi.Output.secret(json.dumps(config)))
        t = Tracking("tracking", tracking_args(), opts=pulumi.ResourceOptions(providers=[provider]))
        t.backend_store_uri.apply(seen.append)
        pulumi.export("backend", t.backend_store_uri)

    stack = render(program, project="mlplat", stack="test", mocks=SpecialPasswords("mlplat", "test"))
    special = stack.one("random:index/randomPassword:RandomPassword", "tracking-db-password").inputs["overrideSpecial"]
    password = "Aa0%41" + special
    (uri,) = seen
    assert make_url(uri).password == password
    assert stack.outputs["backend"] == MASK
    dump = stack.dumps()
    assert password not in dump and uri.split("@")[0] not in dump


def test_the_backend_uri_never_reaches_a_container_command_line(tracking: Callable[..., Render]) -> None:
    stack = tracking()
    from mlplat.infra.mock_outputs import MockOutputs

    _, generated = MockOutputs("mlplat", "test").outputs(
        "random:index/randomPassword:RandomPassword", "tracking-db-password", {"length": 32}
    )
    found = containers(stack)
    assert [c["name"] for c in found] == ["db-upgrade", "auth-bootstrap", "mlflow"]
    for container in found:
        argv = [*container.get("command", []), *container.get("args", [])]
        assert not [a for a in argv if "$(" in a or generated["result"]["value"] in a or "postgresql" in a], argv
        (backend,) = [e for e in container["env"] if e["name"] == "MLFLOW_BACKEND_STORE_URI"]
        assert backend["valueFrom"]["secretKeyRef"] == {"name": "mlflow-backend", "key": "MLFLOW_BACKEND_STORE_URI"}
        assert "value" not in backend


def test_mlflow_server_takes_the_backend_uri_from_the_env_var(
    tracking: Callable[..., Render], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Parse the rendered argv with MLflow's own CLI (no server started).
    from click.core import ParameterSource
    from mlflow.cli import server

    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", "postgresql+psycopg2://mlflow:pw@db:5432/mlflow")
    args = server_args(tracking())
    assert args[0] == "server"
    ctx = server.make_context("server", args[1:])
    assert ctx.params["backend_store_uri"] == "postgresql+psycopg2://mlflow:pw@db:5432/mlflow"
    assert ctx.get_parameter_source("backend_store_uri") == ParameterSource.ENVIRONMENT


def test_the_init_container_upgrades_the_database_named_by_the_env_var(
    tracking: Callable[..., Render], tmp_path: Path
) -> None:
    # Run the rendered init container's command line for real, against a SQLite store.
    (upgrade, _, _) = containers(tracking())
    command = [*upgrade["command"], *upgrade.get("args", [])]
    assert command[0] == "python"
    db = tmp_path / "mlflow.db"
    env = {"MLFLOW_BACKEND_STORE_URI": f"sqlite:///{db}", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, *command[1:]], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"alembic_version", "experiments", "runs"} <= tables


# -- the Host check behind the load balancer (issue 14, item 11) ------------------------------------------------

IN_CLUSTER_HOSTS = [
    "mlflow.mlflow.svc.cluster.local:5000",
    "mlflow.mlflow.svc.cluster.local",
    "mlflow:5000",
    "mlflow.mlflow:5000",
    "mlflow.mlflow.svc:5000",
]
FOREIGN_HOSTS = [
    "evil.example.com",
    "mlflow.evil.example.com",
    "elb.amazonaws.com.evil.example.com",
    "10.0.12.34:5000",
    "localhost:5000",
]


def test_mlflow_accepts_the_albs_name_and_the_in_cluster_names(
    tracking: Callable[..., Render], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.server.security_utils import is_allowed_host_header

    stack = tracking({"ingress": True})
    hosts = allowed_hosts(stack, monkeypatch)
    for host in [ALB_HOST, f"{ALB_HOST}:80", "internal-k8s-mlflow-x-1.eu-west-1.elb.amazonaws.com", *IN_CLUSTER_HOSTS]:
        assert is_allowed_host_header(hosts, host), host
    for host in FOREIGN_HOSTS:
        assert not is_allowed_host_header(hosts, host), host
    spec = stack.one("kubernetes:networking.k8s.io/v1:Ingress").inputs["spec"]
    assert spec["defaultBackend"]["service"] == {"name": "mlflow", "port": {"number": 5000}}


def test_without_ingress_only_the_in_cluster_names_are_accepted(
    tracking: Callable[..., Render], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.server.security_utils import is_allowed_host_header

    hosts = allowed_hosts(tracking(), monkeypatch)
    assert all(is_allowed_host_header(hosts, h) for h in IN_CLUSTER_HOSTS)
    assert not any(is_allowed_host_header(hosts, h) for h in [ALB_HOST, *FOREIGN_HOSTS])


def test_an_ingress_host_is_routed_and_accepted_and_nothing_else(
    tracking: Callable[..., Render], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.server.security_utils import is_allowed_host_header

    stack = tracking({"ingress": True, "ingress_host": "mlflow.internal.example.com"})
    hosts = allowed_hosts(stack, monkeypatch)
    assert is_allowed_host_header(hosts, "mlflow.internal.example.com")
    assert all(is_allowed_host_header(hosts, h) for h in IN_CLUSTER_HOSTS)
    assert not any(is_allowed_host_header(hosts, h) for h in [ALB_HOST, *FOREIGN_HOSTS])
    spec = stack.one("kubernetes:networking.k8s.io/v1:Ingress").inputs["spec"]
    assert "defaultBackend" not in spec
    (rule,) = spec["rules"]
    assert rule["host"] == "mlflow.internal.example.com"
    assert rule["http"]["paths"] == [
        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "mlflow", "port": {"number": 5000}}}}
    ]


def test_health_checks_from_the_alb_pass_mlflows_host_middleware(
    tracking: Callable[..., Render], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ALB's health checks (and kubelet probes) send the pod IP as Host; MLflow's own middleware lets /health by.
    from mlflow.server.fastapi_security import HostValidationMiddleware

    stack = tracking({"ingress": True})
    assert (
        stack.one("kubernetes:networking.k8s.io/v1:Ingress").inputs["metadata"]["annotations"][
            "alb.ingress.kubernetes.io/healthcheck-path"
        ]
        == "/health"
    )
    middleware = HostValidationMiddleware(_ok, allowed_hosts=allowed_hosts(stack, monkeypatch))
    assert _status(middleware, "/health", "10.0.12.34:5000") == 200
    assert _status(middleware, "/api/2.0/mlflow/experiments/search", ALB_HOST) == 200
    assert _status(middleware, "/api/2.0/mlflow/experiments/search", "10.0.12.34:5000") == 403
    assert _status(middleware, "/api/2.0/mlflow/experiments/search", "evil.example.com") == 403


async def _ok(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"OK"})


def _status(app: Any, path: str, host: str) -> int:
    """The status an ASGI ``app`` answers a GET of ``path`` with ``Host: host``."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": [(b"host", host.encode())]}
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(app(scope, receive, send))
    finally:
        loop.close()
    return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))


def test_ingress_host_is_validated() -> None:
    with pytest.raises(ValueError, match=r"ingress_host='mlflow\.example\.com' needs ingress=True"):
        tracking_args(ingress_host="mlflow.example.com")
    for bad in ["MLflow.example.com", "mlflow.example.com:80", "10.0.0.1", "a.*.example.com", "https://x.com"]:
        with pytest.raises(ValueError, match=r"TrackingArgs\.ingress_host=.*is not a DNS name"):
            tracking_args(ingress=True, ingress_host=bad)
    assert tracking_args(ingress=True, ingress_host="*.ml.example.com").ingress_host == "*.ml.example.com"


def test_only_the_named_namespaces_and_the_alb_reach_mlflow(tracking: Callable[..., Render]) -> None:
    stack = tracking(
        {"allowed_namespaces": ["training", "serving"], "ingress": True, "load_balancer_cidrs": ["10.0.0.0/19"]}
    )
    spec = stack.one("kubernetes:networking.k8s.io/v1:NetworkPolicy").inputs["spec"]
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "mlflow"
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5000}]
    assert rule["from"] == [
        {"ipBlock": {"cidr": "10.0.0.0/19"}},
        {
            "namespaceSelector": {
                "matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["serving", "training"]}
                ]
            }
        },
    ]


def test_mlflow_without_allowed_clients_is_closed_and_mounts_no_api_token(tracking: Callable[..., Render]) -> None:
    stack = tracking()
    spec = stack.one("kubernetes:networking.k8s.io/v1:NetworkPolicy").inputs["spec"]
    assert not spec.get("ingress")  # selected, no rule: deny all
    pod = stack.one("kubernetes:apps/v1:Deployment").inputs["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False


# -- MLflow authentication (issue 18, item 5) -------------------------------------------------------------------


def render_with_secrets(
    args: dict[str, Any] | None = None, clients: tuple[tuple[str, str], ...] = ()
) -> tuple[Render, CreatedSecrets, dict[str, str]]:
    """Tracking rendered with every Secret's plain keys and values recorded; ``clients``: (identity, namespace)
    pairs handed out with ``client_credentials``. Also returns the secret outputs (resolved)."""
    created: CreatedSecrets = {}
    seen: dict[str, str] = {}

    def program() -> None:
        record_secrets(created)
        config = kubeconfig("test", "https://example.eks.amazonaws.com", fake_certificate("test"), "us-east-1")
        provider = k8s.Provider("k8s", kubeconfig=pulumi.Output.secret(json.dumps(config)))
        t = Tracking("tracking", tracking_args(**(args or {})), opts=pulumi.ResourceOptions(providers=[provider]))
        t.backend_store_uri.apply(lambda v: seen.__setitem__("backend", v))
        if t.auth_config is not None:
            t.auth_config.apply(lambda v: seen.__setitem__("auth_config", v))
        for identity, namespace in clients:
            t.client_credentials(identity, namespace, resource_name=f"{identity}-in-{namespace}")

    return render(program, project="mlplat", stack="test"), created, seen


def test_mlflow_runs_basic_auth_with_every_secret_it_reads_rendered(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mlflow.server.auth.config import read_auth_config

    stack, created, seen = render_with_secrets(clients=(("trainer", "training"), ("serving", "serving")))
    assert server_args(stack)[-2:] == ["--app-name", "basic-auth"]
    assert unresolved(stack, created) == []
    refs = {(r.secret, r.key, r.where) for r in secret_refs(stack)}
    assert ("mlflow-auth", "admin-password", "auth-bootstrap env MLFLOW_AUTH_ADMIN_PASSWORD") in refs
    assert ("mlflow-auth", "flask-secret-key", "mlflow env MLFLOW_FLASK_SERVER_SECRET_KEY") in refs
    assert {(r.secret, r.key) for r in secret_refs(stack) if r.where == "volume mlflow-users"} == {
        ("mlflow-user-trainer", "password"),
        ("mlflow-user-pipeline", "password"),
        ("mlflow-user-serving", "password"),
    }
    # The server never holds the admin password: the bootstrap has created the admin before it starts.
    assert not any(r.where.startswith("mlflow env MLFLOW_AUTH_ADMIN") for r in secret_refs(stack))
    # Every identity's Secret is kubernetes.io/basic-auth with its own name as username; the clients' copies match.
    users = {s.inputs["metadata"]["name"]: s.inputs["type"] for s in stack.by_type("kubernetes:core/v1:Secret")}
    for identity in ("trainer", "pipeline", "serving"):
        assert users[f"mlflow-user-{identity}"] == "kubernetes.io/basic-auth"
        assert created[("mlflow", f"mlflow-user-{identity}")]["username"] == identity
        assert len(created[("mlflow", f"mlflow-user-{identity}")]["password"]) == 32
    for identity, namespace in (("trainer", "training"), ("serving", "serving")):
        assert created[(namespace, f"mlflow-{identity}")] == created[("mlflow", f"mlflow-user-{identity}")]
    # MLflow's own reader sees the rendered file as the platform means it.
    auth = created[("mlflow", "mlflow-auth")]
    assert auth["basic_auth.ini"] == seen["auth_config"]
    path = tmp_path / "basic_auth.ini"
    path.write_text(auth["basic_auth.ini"])
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(path))
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", auth["admin-password"])
    config = read_auth_config()
    assert (config.default_permission, config.admin_username, config.auth_cache_ttl_seconds) == ("READ", "admin", 60)
    assert config.database_uri == seen["backend"] == created[("mlflow", "mlflow-backend")]["MLFLOW_BACKEND_STORE_URI"]
    assert config.grant_default_workspace_access is False
    (server,) = pod_of_tracking(stack)["containers"]
    assert {"name": "MLFLOW_BASIC_AUTH_FAIL_CLOSED", "value": "true"} in server["env"]
    assert {"name": "MLFLOW_AUTH_CONFIG_PATH", "value": "/etc/mlflow-auth/basic_auth.ini"} in server["env"]
    # Generated passwords stay secrets: none of them is in the recorded render.
    dump = stack.dumps()
    assert not [k for values in created.values() for k, v in values.items() if len(v) >= 12 and v in dump]


def pod_of_tracking(stack: Render) -> dict[str, Any]:
    return dict(stack.one("kubernetes:apps/v1:Deployment").inputs["spec"]["template"]["spec"])


def test_health_probes_use_the_path_basic_auth_leaves_open(tracking: Callable[..., Render]) -> None:
    from mlflow.server.auth import is_unprotected_route

    (server,) = pod_of_tracking(tracking())["containers"]
    paths = {server[probe]["httpGet"]["path"] for probe in ("livenessProbe", "readinessProbe")}
    assert paths == {"/health"}
    assert all(is_unprotected_route(p) for p in paths)
    assert not is_unprotected_route("/api/2.0/mlflow/registered-models/alias")  # the check is live


def test_the_bootstrap_ships_verbatim_and_runs_between_the_upgrade_and_the_server(
    tracking: Callable[..., Render],
) -> None:
    import hashlib

    stack = tracking({"auth": TrackingAuth(registered_models=["digits", "-odd name"])})
    pod = pod_of_tracking(stack)
    script = stack.one("kubernetes:core/v1:ConfigMap").inputs
    assert script["metadata"]["name"] == "mlflow-auth-bootstrap"
    assert script["data"]["bootstrap.py"] == Path(mlflow_auth_bootstrap.__file__).read_text()
    annotations = stack.one("kubernetes:apps/v1:Deployment").inputs["spec"]["template"]["metadata"]["annotations"]
    assert (
        annotations["mlplat.io/auth-bootstrap-sha256"]
        == hashlib.sha256(script["data"]["bootstrap.py"].encode()).hexdigest()
    )
    _, bootstrap = pod["initContainers"]
    assert bootstrap["command"][:2] == ["python", "/etc/mlflow-auth-bootstrap/bootstrap.py"]
    parsed = mlflow_auth_bootstrap.parse_args(bootstrap["command"][2:])
    assert (parsed.writer, parsed.reader) == (["trainer", "pipeline"], ["serving"])
    assert parsed.model == ["digits", "-odd name"]  # --model=<name>: a name that starts with '-' stays a value
    assert parsed.passwords_dir == "/etc/mlflow-users"
    mounts = {m["mountPath"]: m["name"] for m in bootstrap["volumeMounts"]}
    assert mounts == {
        "/tmp": "tmp",
        "/etc/mlflow-auth": "auth-config",
        "/etc/mlflow-users": "mlflow-users",
        "/etc/mlflow-auth-bootstrap": "auth-bootstrap",
    }
    assert all(m.get("readOnly") for m in bootstrap["volumeMounts"] if m["mountPath"] != "/tmp")
    assert bootstrap["securityContext"]["readOnlyRootFilesystem"] is True


def test_client_credentials_need_auth_and_a_known_identity(on_cluster: Callable[..., Render]) -> None:
    with pytest.raises(ProgramError, match=r"no MLflow identity 'admin'; identities: trainer, pipeline, serving"):
        on_cluster(lambda opts: Tracking("tracking", tracking_args(), opts=opts).client_credentials("admin", "x"))
    with pytest.raises(ProgramError, match=r"authentication is off \(TrackingArgs\.auth=None\)"):
        on_cluster(
            lambda opts: Tracking("tracking", tracking_args(auth=None), opts=opts).client_credentials(
                "trainer", "training"
            )
        )


def test_without_auth_mlflow_serves_everyone_and_renders_no_auth_objects(tracking: Callable[..., Render]) -> None:
    stack = tracking({"auth": None})
    assert "--app-name" not in server_args(stack)
    assert [c["name"] for c in containers(stack)] == ["db-upgrade", "mlflow"]
    assert [s.inputs["metadata"]["name"] for s in stack.by_type("kubernetes:core/v1:Secret")] == ["mlflow-backend"]
    assert not stack.by_type("kubernetes:core/v1:ConfigMap")
    assert [p.name for p in stack.by_type("random:index/randomPassword:RandomPassword")] == ["tracking-db-password"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"writers": []}, r"writers is empty"),
        ({"writers": "trainer"}, r"writers='trainer': a list of names, not one string"),
        ({"readers": ["Serving"]}, r"user name 'Serving' is not allowed"),
        ({"readers": ["a_b"]}, r"user name 'a_b' is not allowed"),
        ({"readers": ["trainer"]}, r"\['trainer'\] named more than once"),
        ({"admin_username": "pipeline"}, r"\['pipeline'\] named more than once"),
        ({"registered_models": [" digits"]}, r"' digits' is not a registered model name"),
        ({"registered_models": [""]}, r"'' is not a registered model name"),
        ({"credential_cache_seconds": -1}, r"credential_cache_seconds=-1: must be >= 0"),
    ],
)
def test_auth_settings_are_validated(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=r"TrackingAuth.*" + message):
        TrackingAuth(**kwargs)


@pytest.mark.parametrize("password", PASSWORDS)
def test_the_auth_config_gives_mlflow_back_the_exact_database_uri(
    password: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # configparser's interpolation reads '%' as a directive: the percent-encoded password must be escaped.
    from mlflow.server.auth.config import read_auth_config

    uri = backend_store_uri(password, "db.internal")
    path = tmp_path / "basic_auth.ini"
    path.write_text(auth_config_ini(uri, "admin", 0))
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(path))
    config = read_auth_config()
    assert config.database_uri == uri and make_url(config.database_uri).password == password
    assert config.auth_cache_ttl_seconds == 0


def test_auth_tables_share_the_tracking_database_without_colliding(tmp_path: Path) -> None:
    # The auth store's own migrations, on an empty database: their tables and version table against the tracking
    # store's (and the registry's) tables, which `mlflow db upgrade` creates in the same database.
    import mlflow.store.model_registry.dbmodels.models  # registers the registry's tables
    import mlflow.store.tracking.dbmodels.models  # noqa: F401 - registers the tracking tables
    import sqlalchemy
    from mlflow.server.auth.db.utils import migrate
    from mlflow.store.db.base_sql_model import Base

    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'auth.db'}")
    migrate(engine, "head")
    auth_tables = set(sqlalchemy.inspect(engine).get_table_names())
    assert {"users", "roles", "role_permissions", "alembic_version_auth"} <= auth_tables
    tracking_tables = {*Base.metadata.tables, "alembic_version"}
    assert {"experiments", "registered_models", "registered_model_aliases"} <= tracking_tables
    assert auth_tables & tracking_tables == set()


def test_the_platform_hands_each_workload_its_identity_and_creates_its_models_first(production_stack: Render) -> None:
    from mlplat.components.platform import MlPlatformArgs, platform_models

    secrets = {
        (s.inputs["metadata"]["namespace"], s.inputs["metadata"]["name"]): s.inputs["type"]
        for s in production_stack.by_type("kubernetes:core/v1:Secret")
    }
    refs = list(secret_refs(production_stack))
    assert [r for r in refs if (r.namespace, r.secret) not in secrets] == []  # keys are masked in the shipped render
    users = {(r.owner.rsplit("-", 1)[-1], r.secret) for r in refs if r.where.endswith("MLFLOW_TRACKING_USERNAME")}
    assert users == {("stable", "mlflow-serving"), ("canary", "mlflow-serving"), ("digits", "mlflow-trainer")}
    basic_auth = "kubernetes.io/basic-auth"
    assert secrets[("serving", "mlflow-serving")] == secrets[("training", "mlflow-trainer")] == basic_auth
    server = production_stack.one("kubernetes:apps/v1:Deployment", "mlplat-production-tracking-server")
    bootstrap = server.inputs["spec"]["template"]["spec"]["initContainers"][1]
    assert "--model=digits" in bootstrap["command"]  # served (stable and canary) and registered by the job: once
    assert [a for a in bootstrap["command"] if a.startswith("--model")] == ["--model=digits"]
    # Models of a service or job that uses another MLflow are not the platform's to create.
    args = MlPlatformArgs(
        region="us-east-1",
        network=None,
        cluster=None,  # type: ignore[arg-type]
        services={
            "a": ModelServiceSpec(model_uri="models:/a@champion"),
            "b": ModelServiceSpec(model_uri="models:/b/3", tracking_uri="http://other:5000"),
            "c": ModelServiceSpec(model_uri="s3://bucket/c"),
        },
    )
    assert platform_models(args) == ["a"]
