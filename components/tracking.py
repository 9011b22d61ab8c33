"""Tracking: MLflow on the cluster, its backend store in RDS PostgreSQL, its artifacts in S3."""

from __future__ import annotations

import configparser
import hashlib
import io
import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pulumi_random as random
from pydantic import Field, ValidationInfo, field_validator, model_validator

from mlplat.components import mlflow_auth_bootstrap as auth_bootstrap
from mlplat.components.iam import rotated_key
from mlplat.components.options import checked_when_known, child_options, component_args
from mlplat.components.pods import (
    Resources,
    container_security_context,
    http_probe,
    pod_security_context,
    scratch_volume,
    service_account,
)
from mlplat.components.spec import Spec, StrInput, StrInputs
from mlplat.components.validation import SSL_POLICY, check_certificate_arn, checked_as

__all__ = ["DatabaseArgs", "Tracking", "TrackingArgs", "TrackingAuth", "TrackingSpec", "tracking_credentials_env"]

MLFLOW_PORT = 5000
DB_NAME = "mlflow"
DB_USER = "mlflow"
BACKEND_URI_KEY = "MLFLOW_BACKEND_STORE_URI"
PASSWORD_SPECIAL = "!#$%^&*()-_=+[]{}<>:?"
"""Special characters of the generated database password (RDS rejects ``/``, ``@``, ``"`` and space)."""
OFFICIAL_IMAGE = "ghcr.io/mlflow/mlflow"
"""MLflow's own image: core MLflow only unless the tag ends in ``-full``."""
ELB_HOSTS = "*.elb.amazonaws.com"
"""The DNS names AWS gives load balancers (``internal-k8s-mlflow-<hash>.<region>.elb.amazonaws.com``)."""
# ``mlflow db upgrade URL`` takes the URL only as an argument (mlflow/db.py: ``@click.argument("url")``, no
# envvar), so the init container builds that argv inside Python from the env var: the password never appears
# in the container's command line (the pod spec, ``ps``, /proc/<pid>/cmdline).
DB_UPGRADE_SCRIPT = (
    "import os; from mlflow.cli import cli; "
    f"cli.main(args=['db', 'upgrade', os.environ['{BACKEND_URI_KEY}']], prog_name='mlflow')"
)
# -- authentication (MLflow's basic-auth app) ------------------------------------------------------------------
AUTH_APP = "basic-auth"
"""``mlflow server --app-name``: MLflow's own users, passwords and per-resource permissions (mlflow.server.auth)."""
AUTH_SECRET = "mlflow-auth"
"""The Secret (MLflow's namespace) with the auth config file, the admin password and the Flask secret key."""
AUTH_CONFIG_KEY = "basic_auth.ini"
ADMIN_PASSWORD_KEY = "admin-password"
FLASK_SECRET_KEY = "flask-secret-key"
AUTH_CONFIG_DIR = "/etc/mlflow-auth"
AUTH_CONFIG_PATH = f"{AUTH_CONFIG_DIR}/{AUTH_CONFIG_KEY}"
BOOTSTRAP_CONFIG_MAP = "mlflow-auth-bootstrap"
BOOTSTRAP_KEY = "bootstrap.py"
BOOTSTRAP_DIR = "/etc/mlflow-auth-bootstrap"
USERS_DIR = auth_bootstrap.PASSWORDS_DIR
USERNAME_KEY = "username"
PASSWORD_KEY = "password"
"""The keys of a ``kubernetes.io/basic-auth`` Secret, which every MLflow identity's Secret is."""
USER_SECRET_PREFIX = "mlflow-user-"
"""``mlflow-user-<identity>`` in MLflow's namespace: each identity's credentials, read by the bootstrap."""
CLIENT_SECRET_PREFIX = "mlflow-"
"""``mlflow-<identity>`` in a client's namespace: what its pods send (:meth:`Tracking.client_credentials`)."""
TRAINER = "trainer"
PIPELINE = "pipeline"
SERVING = "serving"
BOOTSTRAP_SOURCE = Path(auth_bootstrap.__file__).read_text()
"""The bootstrap script the init container runs (stdlib + MLflow only: the tracking image has no mlplat)."""
_USERNAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
_HOST_NAME = re.compile(r"^(\*\.)?([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def backend_store_uri(password: str, host: str) -> str:
    """MLflow's SQLAlchemy URI for the RDS database, the password percent-encoded.

    SQLAlchemy's ``make_url`` unquotes the password (so a raw ``%41`` would become ``A``); quoting every
    character (``safe=""``) makes any generated password round-trip exactly.
    """
    # Name the driver: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3.
    return f"postgresql+psycopg2://{DB_USER}:{quote(password, safe='')}@{host}:5432/{DB_NAME}?sslmode=require"


def check_image(image: str) -> str:
    """``image`` unless it is known to lack what the component needs (psycopg2 and boto3); else ValueError."""
    repository = image.split("@", 1)[0]  # drop a digest
    tag = ""
    if ":" in repository.rsplit("/", 1)[-1]:  # a ':' after the last '/' is the tag's, not a registry port's
        repository, tag = repository.rsplit(":", 1)
    # Upstream docker/Dockerfile installs `mlflow==$VERSION` alone; only docker/Dockerfile.full (the "-full"
    # tags) adds the `db` and `extras` extras, which bring psycopg2-binary and boto3.
    if repository.lower() == OFFICIAL_IMAGE and not tag.endswith("-full"):
        raise ValueError(
            f"TrackingArgs.image={image!r}: the official MLflow image is core MLflow only, without psycopg2 "
            "(the backend store is postgresql+psycopg2://) or boto3 (artifacts go to S3), so `mlflow db upgrade` "
            "and `mlflow server` fail. Use the image built from tracking/Dockerfile (mlflow, psycopg2-binary, "
            "boto3; the platform's ECR 'tracking' repository), or the official '-full' variant "
            f"({OFFICIAL_IMAGE}:v<version>-full)"
        )
    return image


def auth_config_ini(database_uri: str, admin_username: str, cache_seconds: int) -> str:
    """MLflow's auth config file (``MLFLOW_AUTH_CONFIG_PATH``; keys as mlflow/server/auth/basic_auth.ini).

    The users live in the tracking database itself: the auth tables (users, roles, role_permissions,
    user_role_assignments) have names of their own and their migrations their own version table
    (``alembic_version_auth``). MLflow reads the file with :class:`configparser.ConfigParser`, whose interpolation
    treats ``%`` as special, so the percent-encoded password is written with ``%%``.
    """
    parser = configparser.ConfigParser()
    parser["mlflow"] = {
        "default_permission": auth_bootstrap.DEFAULT_PERMISSION,
        "database_uri": database_uri.replace("%", "%%"),
        "admin_username": admin_username,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "grant_default_workspace_access": "false",
        "auth_cache_ttl_seconds": str(cache_seconds),
    }
    text = io.StringIO()
    parser.write(text)
    return text.getvalue()


def registered_model_of(model_uri: str) -> str | None:
    """The registered model a ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` URI names, else None."""
    if not model_uri.startswith("models:/"):
        return None
    rest = model_uri.removeprefix("models:/")
    return rest.split("@", 1)[0] if "@" in rest else rest.split("/", 1)[0]


def tracking_credentials_env(secret_name: pulumi.Input[str]) -> list[k8s.core.v1.EnvVarArgs]:
    """``MLFLOW_TRACKING_USERNAME``/``_PASSWORD`` from a ``kubernetes.io/basic-auth`` Secret: MLflow's client sends
    them as HTTP basic auth on every request, artifact downloads and uploads through the server included."""
    return [
        k8s.core.v1.EnvVarArgs(
            name=name,
            value_from=k8s.core.v1.EnvVarSourceArgs(
                secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=secret_name, key=key)
            ),
        )
        for name, key in (("MLFLOW_TRACKING_USERNAME", USERNAME_KEY), ("MLFLOW_TRACKING_PASSWORD", PASSWORD_KEY))
    ]


BASIC_AUTH_BEHIND = "mlplat.io/basic-auth"
"""Ingress annotation: MLflow's basic-auth answers behind this ALB (``mlplat check``'s ``tracking-ingress-tls``)."""


class TrackingAuth(Spec):
    """Authentication for MLflow: who may register models and move their aliases.

    MLflow runs its basic-auth app. Every request but ``/health`` needs a user and password (anonymous: 401);
    without a grant a user may only read (``default_permission`` READ; writing someone else's experiment or model:
    403). An init container creates the users below from generated passwords kept in Kubernetes Secrets, on every
    start of a pod (first deploy and restarts alike), see :mod:`mlplat.components.mlflow_auth_bootstrap`.
    """

    writers: tuple[str, ...] = (TRAINER, PIPELINE)
    """Identities that log runs, register model versions and move aliases: EDIT on every experiment and every
    registered model. The trainer's pods and the ML pipeline."""
    readers: tuple[str, ...] = (SERVING,)
    """Identities that may only read (and resolve ``models:/<name>@<alias>``): the model servers."""
    registered_models: tuple[str, ...] = ()
    """Registered models the bootstrap creates when missing, so that no reader creates one of them first and owns
    it (MLflow gives a model's creator MANAGE on it); a reader's grants on them are revoked. MlPlatform adds the
    models its services serve and its training jobs register."""
    admin_username: str = "admin"
    """MLflow's admin (for people: user and permission management); its password is in Secret ``mlflow-auth``, key
    ``admin-password``."""
    credential_cache_seconds: int = 60
    """Each server worker caches a verified user and password this long (MLflow's ``auth_cache_ttl_seconds``):
    checking a password hash costs a few hundred milliseconds of CPU per request. A changed or deleted password may
    keep working on other workers that long. 0: no cache."""

    @field_validator("writers", "readers", "registered_models", mode="before")
    @classmethod
    def _names(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            raise ValueError(f"TrackingAuth.{info.field_name}={value!r}: a list of names, not one string")
        return value

    @field_validator("registered_models")
    @classmethod
    def _models(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for model in value:
            if not model.strip() or model != model.strip() or "\n" in model:
                raise ValueError(f"TrackingAuth.registered_models: {model!r} is not a registered model name")
        return value

    @field_validator("credential_cache_seconds")
    @classmethod
    def _cache(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"TrackingAuth.credential_cache_seconds={value}: must be >= 0")
        return value

    @model_validator(mode="after")
    def _users(self) -> Self:
        if not self.writers:
            raise ValueError("TrackingAuth.writers is empty: nothing could register a model or move an alias")
        names = [self.admin_username, *self.writers, *self.readers]
        for user in names:
            if not _USERNAME.match(user):
                raise ValueError(
                    f"TrackingAuth: user name {user!r} is not allowed; use 1-40 characters of a-z, 0-9 "
                    "and '-', starting and ending with a letter or digit (it names a Secret and a file)"
                )
        twice = sorted({user for user in names if names.count(user) > 1})
        if twice:
            raise ValueError(f"TrackingAuth: {twice} named more than once among admin_username, writers and readers")
        return self

    @property
    def users(self) -> list[str]:
        """Every platform identity (writers, then readers)."""
        return [*self.writers, *self.readers]

    def bootstrap_args(self) -> list[str]:
        """The bootstrap script's arguments (``--name=value``: a name starting with '-' stays a value)."""
        return [
            *(f"--writer={u}" for u in self.writers),
            *(f"--reader={u}" for u in self.readers),
            *(f"--model={m}" for m in dict.fromkeys(self.registered_models)),
            f"--passwords-dir={USERS_DIR}",
        ]


class DatabaseArgs(Spec):
    """The RDS PostgreSQL instance behind MLflow."""

    engine_version: str = "16"
    """PostgreSQL version; a major (``"16"``) lets RDS pick and patch the minor."""
    parameter_family: str = "postgres16"
    """The parameter group family matching ``engine_version``."""
    instance_class: str = "db.t4g.medium"
    """RDS instance class."""
    allocated_storage_gb: int = Field(default=20, ge=20, le=65536)
    """Initial gp3 storage (20 to 65536: RDS's gp3 range)."""
    max_allocated_storage_gb: int = Field(default=200, ge=20, le=65536)
    """Storage autoscaling ceiling."""
    multi_az: bool = True
    """A standby in another AZ with automatic failover."""
    deletion_protection: bool = True
    """RDS refuses to delete the instance while set."""
    backup_retention_days: int = 7
    """Automated backup retention (0 disables backups; production wants >= 7)."""
    final_snapshot: bool = True
    """Take a final snapshot when the instance is deleted."""
    protect: bool = True
    """Pulumi ``protect`` + ``retain_on_delete`` on the instance."""
    log_exports: tuple[str, ...] = ("postgresql", "upgrade")
    """PostgreSQL logs shipped to CloudWatch."""

    @field_validator("backup_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if not 0 <= value <= 35:
            raise ValueError(f"DatabaseArgs.backup_retention_days={value}: RDS allows 0..35")
        return value

    def _consistent(self) -> Self:
        if self.max_allocated_storage_gb < self.allocated_storage_gb:
            raise ValueError(
                f"maxAllocatedStorageGb ({self.max_allocated_storage_gb}) is below "
                f"allocatedStorageGb ({self.allocated_storage_gb})"
            )
        if not self.parameter_family.endswith(self.engine_version.split(".")[0]):
            raise ValueError(
                f"parameterFamily {self.parameter_family!r} does not match engineVersion "
                f"{self.engine_version!r} (e.g. postgres16 for 16)"
            )
        return self


class TrackingSpec(Spec):
    """What a user decides about :class:`Tracking` (``MlPlatformArgs.tracking``); :class:`TrackingArgs` adds the
    wiring: the VPC, the database subnets and clients, the artifact location and the IRSA role."""

    database: DatabaseArgs = DatabaseArgs()
    """The RDS instance's settings."""
    namespace: str = "mlflow"
    """Namespace for the MLflow server (created by this component)."""
    image: StrInput | None = None
    """An MLflow image with psycopg2 and boto3 (the backend URI names the psycopg2 driver), such as the one built
    from ``tracking/Dockerfile``; required by :class:`Tracking` (None: MlPlatform uses the stack's ECR
    ``tracking`` image). Core ``ghcr.io/mlflow/mlflow`` tags are refused: they have neither."""
    replicas: int = Field(default=2, le=10)
    """MLflow server replicas (1 to 10)."""
    workers: int = Field(default=2, le=16)
    """Server worker processes per replica (1 to 16)."""
    resources: Resources = Resources(cpu="500m", memory="1Gi")
    """Requests and limits per replica."""
    ingress: bool = False
    """Also expose MLflow through an internal ALB (VPC only)."""
    ingress_host: str | None = None
    """The DNS name clients use for the ALB (e.g. ``mlflow.internal.example.com``; a leading ``*.`` is allowed):
    the Ingress routes only that host and MLflow accepts it. Without one, the Ingress routes every request and
    MLflow accepts the ALB's own names (``*.elb.amazonaws.com``)."""
    ingress_certificate_arn: StrInput | None = None
    """An ACM certificate for the ALB (and ``ingress_host``): it then listens on HTTPS 443 only (TLS 1.2/1.3), so the
    users' basic-auth passwords never cross the VPC in clear text. Without one the ALB serves plain HTTP inside the
    VPC, and ``mlplat check`` flags it (``tracking-ingress-tls``)."""
    network_policy: bool = True
    """A NetworkPolicy admitting only ``allowed_namespaces`` and ``load_balancer_cidrs`` to MLflow's port
    (enforced where the network plugin enforces policies; VPC CNI: ``enableNetworkPolicy``)."""
    allowed_namespaces: tuple[str, ...] = ()
    """Namespaces whose pods may reach MLflow (the model servers, the trainer, pipelines). Empty: no pod may
    (MlPlatform adds its serving and training namespaces)."""
    load_balancer_cidrs: StrInputs = []
    """Where the ALB's addresses lie, with ``ingress`` (target type ``ip``: the ALB connects to pod IPs from its
    ENIs; an ``ipBlock`` is the only way to name it). Empty in MlPlatform: the VPC's CIDR."""
    auth: TrackingAuth | None = TrackingAuth()
    """MLflow authentication (on by default): only the writers (trainer, pipeline) may register models and move
    aliases, readers (model servers) may read, anonymous requests get 401. None: MLflow takes requests from anyone
    who can reach it (then only the NetworkPolicy guards the registry)."""

    @field_validator("image")
    @classmethod
    def _image(cls, value: Any) -> Any:
        return check_image(value) if isinstance(value, str) else value  # an Output: checked once known

    @field_validator("replicas", "workers")
    @classmethod
    def _at_least_one(cls, value: int, info: ValidationInfo) -> int:
        if value < 1:
            raise ValueError(f"TrackingArgs.{info.field_name}={value}: must be at least 1")
        return value

    def _consistent(self) -> Self:
        if self.ingress_certificate_arn is not None:
            if not self.ingress:
                raise ValueError("TrackingArgs.ingress_certificate_arn needs ingress=True")
            checked_as("TrackingArgs.ingress_certificate_arn", check_certificate_arn)(self.ingress_certificate_arn)
        if self.ingress_host is not None:
            if not self.ingress:
                raise ValueError(f"TrackingArgs.ingress_host={self.ingress_host!r} needs ingress=True")
            if not _HOST_NAME.match(self.ingress_host) or _is_ip(self.ingress_host):
                raise ValueError(
                    f"TrackingArgs.ingress_host={self.ingress_host!r} is not a DNS name: lowercase labels of "
                    "a-z, 0-9 and '-', no port, no IP address, '*.' allowed only as the first label "
                    "(e.g. mlflow.internal.example.com)"
                )
        return self


def _ingress_annotations(args: TrackingSpec) -> dict[str, pulumi.Input[str]]:
    """The MLflow Ingress's ALB: internal, to the pods' IPs; HTTPS only with a certificate (aws-load-balancer-
    controller v2.13 annotations, as ModelService's), marked for ``mlplat check`` when basic-auth runs behind it."""
    alb = "alb.ingress.kubernetes.io/"
    annotations: dict[str, pulumi.Input[str]] = {
        f"{alb}scheme": "internal",
        f"{alb}target-type": "ip",
        # The ALB's health checks send the target's IP as Host; MLflow exempts /health from host validation
        # (mlflow/server/security_utils.py: HEALTH_ENDPOINTS).
        f"{alb}healthcheck-path": "/health",
    }
    if args.ingress_certificate_arn is not None:
        check = checked_as("TrackingArgs.ingress_certificate_arn", check_certificate_arn)
        annotations.update(
            {
                f"{alb}certificate-arn": checked_when_known(args.ingress_certificate_arn, check),
                f"{alb}listen-ports": json.dumps([{"HTTPS": 443}]),
                f"{alb}ssl-policy": SSL_POLICY,
            }
        )
    if args.auth is not None:
        annotations[BASIC_AUTH_BEHIND] = "true"
    return annotations


class TrackingArgs(TrackingSpec):
    """Arguments of :class:`Tracking`: its :class:`TrackingSpec` and what it is wired to."""

    vpc_id: StrInput
    """The VPC of the database."""
    database_subnet_ids: StrInputs
    """Subnets of the DB subnet group (the Network's database tier)."""
    client_security_group_ids: StrInputs
    """Only these security groups (the cluster's nodes) may reach port 5432."""
    artifacts_uri: StrInput
    """Where MLflow stores artifacts, e.g. ``s3://<bucket>/mlflow``."""
    service_account_role_arn: StrInput | None = None
    """IRSA role with read/write access to ``artifacts_uri``."""

    @field_validator("client_security_group_ids")
    @classmethod
    def _clients(cls, value: Any) -> Any:
        if not value:
            raise ValueError("TrackingArgs.client_security_group_ids is empty: nothing could reach the database")
        return value

    def allowed_hosts(self) -> list[str]:
        """The Host headers MLflow accepts: the Service's in-cluster names, and the Ingress's host(s) if any."""
        service = "mlflow"
        names = [
            service,
            f"{service}.{self.namespace}",
            f"{service}.{self.namespace}.svc",
            f"{service}.{self.namespace}.svc.cluster.local",
        ]
        hosts = [h for name in names for h in (name, f"{name}:{MLFLOW_PORT}")]
        if self.ingress:
            # MLflow matches each entry exactly, or with fnmatch when it holds a '*' (mlflow/server/
            # security_utils.py: is_allowed_host_header); the ALB passes the client's Host through unchanged.
            external = self.ingress_host or ELB_HOSTS
            hosts += [external, f"{external}:*"]
        return hosts


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class _AuthPod:
    """What MLflow's pod needs for authentication: env vars, mounts and volumes."""

    env: list[k8s.core.v1.EnvVarArgs]
    admin_password_env: k8s.core.v1.EnvVarArgs
    flask_key_env: k8s.core.v1.EnvVarArgs
    server_mounts: list[k8s.core.v1.VolumeMountArgs]
    bootstrap_mounts: list[k8s.core.v1.VolumeMountArgs]
    volumes: list[k8s.core.v1.VolumeArgs]


class Tracking(pulumi.ComponentResource):
    """MLflow tracking for the platform.

    The database: RDS PostgreSQL in the database subnets, reachable on 5432 only from the given security
    groups, KMS-encrypted gp3 with storage autoscaling, SSL forced by its parameter group, logs to
    CloudWatch, and a generated master password that stays a Pulumi secret (it reaches MLflow through a
    Kubernetes Secret, never a plain env value or a command-line argument). The server: ``mlflow db upgrade``
    as an init container, then ``mlflow server`` proxying artifacts to S3 (``--serve-artifacts``) with IRSA
    credentials, accepting only its in-cluster names and (with ``ingress``) the ALB's host as Host headers.

    Authentication (``auth``, on by default): ``mlflow server --app-name basic-auth`` with its users in the same
    database; an init container (``auth-bootstrap``) creates the admin and the platform's identities from generated
    passwords (Secrets ``mlflow-auth`` and ``mlflow-user-<identity>``) and grants the writers EDIT, on every start.
    :meth:`client_credentials` copies an identity's credentials into a client's namespace for its pods.

    ``database`` is the RDS instance.
    """

    uri: pulumi.Output[str]
    """The in-cluster tracking URI (``http://mlflow.<namespace>.svc.cluster.local:5000``)."""
    db_endpoint: pulumi.Output[str]
    """The database's host name."""
    db_security_group_id: pulumi.Output[str]
    """The database's security group."""
    backend_store_uri: pulumi.Output[str]
    """MLflow's database URI with the generated password, a secret."""
    users: pulumi.Output[list[str]]
    """The MLflow identities (``TrackingAuth`` writers, then readers); empty without auth."""
    passwords: dict[str, pulumi.Output[str]]
    """Identity -> its generated password, a secret; empty without auth."""
    admin_password: pulumi.Output[str] | None
    """The MLflow admin's generated password, a secret; None without auth."""
    auth_config: pulumi.Output[str] | None
    """MLflow's auth config file, a secret (it holds the database URI); None without auth."""

    def __init__(
        self, name: str, args: TrackingArgs | None = None, opts: pulumi.ResourceOptions | None = None, **kwargs: Any
    ) -> None:
        args = component_args("Tracking", TrackingArgs, args, kwargs)
        super().__init__("mlplat:tracking:Tracking", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        db = args.database
        if args.image is None:  # MlPlatform fills it in; anyone else must give one
            raise ValueError(
                "TrackingArgs.image is not set: MLflow needs an image with mlflow, psycopg2 and boto3. Build "
                "tracking/Dockerfile and pass its URI (MlPlatform passes its ECR 'tracking' repository's image)"
            )

        sg = aws.ec2.SecurityGroup(
            f"{name}-db",
            vpc_id=args.vpc_id,
            description="PostgreSQL for MLflow: only from the cluster",
            tags={"Name": f"{name}-db"},
            opts=child,
        )
        for i, client in enumerate(args.client_security_group_ids):
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-db-from-{i}",
                security_group_id=sg.id,
                referenced_security_group_id=client,
                ip_protocol="tcp",
                from_port=5432,
                to_port=5432,
                description="PostgreSQL from the cluster",
                opts=child,
            )
        subnet_group = aws.rds.SubnetGroup(
            f"{name}-db", subnet_ids=args.database_subnet_ids, tags={"Name": f"{name}-db"}, opts=child
        )
        params = aws.rds.ParameterGroup(
            f"{name}-db",
            family=db.parameter_family,
            description="MLflow PostgreSQL: SSL only",
            parameters=[aws.rds.ParameterGroupParameterArgs(name="rds.force_ssl", value="1")],
            tags={"Name": f"{name}-db"},
            opts=child,
        )
        key = rotated_key(
            f"{name}-db",
            f"Encrypts the {name} MLflow database",
            pulumi.ResourceOptions(parent=self, protect=db.protect),
        )
        password = random.RandomPassword(
            f"{name}-db-password",
            length=32,
            special=True,
            override_special=PASSWORD_SPECIAL,
            opts=child,
        )
        self.database = aws.rds.Instance(
            f"{name}-db",
            engine="postgres",
            engine_version=db.engine_version,
            instance_class=db.instance_class,
            db_name=DB_NAME,
            username=DB_USER,
            password=password.result,
            allocated_storage=db.allocated_storage_gb,
            max_allocated_storage=db.max_allocated_storage_gb,
            storage_type="gp3",
            storage_encrypted=True,
            kms_key_id=key.arn,
            multi_az=db.multi_az,
            publicly_accessible=False,
            db_subnet_group_name=subnet_group.name,
            vpc_security_group_ids=[sg.id],
            parameter_group_name=params.name,
            backup_retention_period=db.backup_retention_days,
            deletion_protection=db.deletion_protection,
            skip_final_snapshot=not db.final_snapshot,
            final_snapshot_identifier=f"{name}-db-final" if db.final_snapshot else None,
            copy_tags_to_snapshot=True,
            enabled_cloudwatch_logs_exports=list(db.log_exports),
            auto_minor_version_upgrade=True,
            performance_insights_enabled=True,
            performance_insights_kms_key_id=key.arn,
            apply_immediately=False,
            tags={"Name": f"{name}-db"},
            opts=pulumi.ResourceOptions(parent=self, protect=db.protect, retain_on_delete=db.protect),
        )
        self.db_endpoint = self.database.address
        self.db_security_group_id = sg.id
        # The password is percent-encoded: SQLAlchemy's make_url unquotes the userinfo (sqlalchemy/engine/url.py).
        self.backend_store_uri = pulumi.Output.secret(
            pulumi.Output.all(password.result, self.database.address).apply(lambda pa: backend_store_uri(pa[0], pa[1]))
        )
        image = pulumi.Output.from_input(args.image).apply(check_image)  # an Output is checked once known
        self._auth = args.auth
        self.users = pulumi.Output.from_input(args.auth.users if args.auth is not None else [])
        self.passwords = {}
        self.admin_password = None
        self.auth_config = None
        if args.auth is not None:
            self._generate_credentials(name, args.auth, child)
        # The database is created at once; only the Kubernetes half waits for what the component waits for
        # (nodes, the Load Balancer Controller's webhook).
        self._k8s_options = child_options(self, opts)
        self.uri = self._server(name, args, image, self._k8s_options)
        self.register_outputs(
            {
                "uri": self.uri,
                "db_endpoint": self.db_endpoint,
                "db_security_group_id": self.db_security_group_id,
                "backend_store_uri": self.backend_store_uri,
                "users": self.users,
                "passwords": self.passwords,
                "admin_password": self.admin_password,
                "auth_config": self.auth_config,
            }
        )

    def _generate_credentials(self, name: str, auth: TrackingAuth, child: pulumi.ResourceOptions) -> None:
        """Generated passwords (alphanumeric: they travel in HTTP basic auth) and MLflow's auth config file."""

        def generated(suffix: str) -> pulumi.Output[str]:
            return pulumi.Output.secret(
                random.RandomPassword(f"{name}-{suffix}", length=32, special=False, opts=child).result
            )

        self.admin_password = generated("mlflow-admin-password")
        # Signs the auth app's sessions and CSRF tokens; one value for every worker and replica.
        self._flask_secret_key = generated("mlflow-flask-secret-key")
        self.passwords = {user: generated(f"mlflow-{user}-password") for user in auth.users}
        self.auth_config = pulumi.Output.secret(
            self.backend_store_uri.apply(
                lambda uri: auth_config_ini(uri, auth.admin_username, auth.credential_cache_seconds)
            )
        )

    def client_credentials(
        self,
        identity: str,
        namespace: pulumi.Input[str],
        resource_name: str | None = None,
        *,
        opts: pulumi.ResourceOptions | None = None,
    ) -> pulumi.Output[str]:
        """A ``kubernetes.io/basic-auth`` Secret ``mlflow-<identity>`` in ``namespace`` with that MLflow identity's
        username and password, for the pods there to send (:func:`tracking_credentials_env`); returns its name.

        Secrets are read only from a pod's own namespace, so each client namespace gets its own copy. Pass
        ``resource_name`` when one identity is needed in several namespaces.

        The Secret belongs to the caller, created with ``opts`` (give ``parent=`` your component; without a parent
        or provider there, the Tracking's Kubernetes provider and ordering), and carries an alias to the Tracking
        as parent, where earlier versions put it.
        """
        if self._auth is None:
            raise ValueError(
                f"Tracking.client_credentials({identity!r}): MLflow authentication is off "
                "(TrackingArgs.auth=None), so there are no credentials to hand out"
            )
        if identity not in self.passwords:
            raise ValueError(
                f"Tracking.client_credentials: no MLflow identity {identity!r}; identities: "
                f"{', '.join(self.passwords)} (TrackingAuth.writers and readers)"
            )
        secret = k8s.core.v1.Secret(
            resource_name or f"{self._name}-{identity}-credentials",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=f"{CLIENT_SECRET_PREFIX}{identity}",
                namespace=namespace,
                labels={"app.kubernetes.io/name": "mlflow", "app.kubernetes.io/component": "tracking-credentials"},
            ),
            type="kubernetes.io/basic-auth",
            string_data={USERNAME_KEY: identity, PASSWORD_KEY: self.passwords[identity]},
            opts=self._caller_owned(opts),
        )
        return secret.metadata.name

    def _caller_owned(self, opts: pulumi.ResourceOptions | None) -> pulumi.ResourceOptions:
        inherits = opts is not None and (opts.parent is not None or opts.provider is not None or opts.providers)
        own = pulumi.ResourceOptions(
            provider=None if inherits else self.get_provider("kubernetes::"),
            depends_on=None if inherits else self._k8s_options.depends_on,
            aliases=[pulumi.Alias(parent=self)],
        )
        return pulumi.ResourceOptions.merge(own, opts)

    def _auth_objects(
        self,
        name: str,
        auth: TrackingAuth,
        namespace: pulumi.Output[str],
        labels: dict[str, str],
        child: pulumi.ResourceOptions,
    ) -> _AuthPod:
        """The auth Secrets and bootstrap ConfigMap in MLflow's namespace, and how the pod reads them."""
        assert self.auth_config is not None and self.admin_password is not None
        config = k8s.core.v1.Secret(
            f"{name}-auth",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=AUTH_SECRET, namespace=namespace, labels=labels),
            type="Opaque",
            string_data={
                AUTH_CONFIG_KEY: self.auth_config,
                ADMIN_PASSWORD_KEY: self.admin_password,
                FLASK_SECRET_KEY: self._flask_secret_key,
            },
            opts=child,
        )
        users = {
            user: k8s.core.v1.Secret(
                f"{name}-user-{user}",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=f"{USER_SECRET_PREFIX}{user}", namespace=namespace, labels=labels
                ),
                type="kubernetes.io/basic-auth",
                string_data={USERNAME_KEY: user, PASSWORD_KEY: password},
                opts=child,
            )
            for user, password in self.passwords.items()
        }
        script = k8s.core.v1.ConfigMap(
            f"{name}-auth-bootstrap",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=BOOTSTRAP_CONFIG_MAP, namespace=namespace, labels=labels),
            data={BOOTSTRAP_KEY: BOOTSTRAP_SOURCE},
            opts=child,
        )

        def from_config(env: str, key: str) -> k8s.core.v1.EnvVarArgs:
            return k8s.core.v1.EnvVarArgs(
                name=env,
                value_from=k8s.core.v1.EnvVarSourceArgs(
                    secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=config.metadata.name, key=key)
                ),
            )

        config_mount = k8s.core.v1.VolumeMountArgs(name="auth-config", mount_path=AUTH_CONFIG_DIR, read_only=True)
        return _AuthPod(
            env=[k8s.core.v1.EnvVarArgs(name="MLFLOW_AUTH_CONFIG_PATH", value=AUTH_CONFIG_PATH)],
            admin_password_env=from_config("MLFLOW_AUTH_ADMIN_PASSWORD", ADMIN_PASSWORD_KEY),
            flask_key_env=from_config("MLFLOW_FLASK_SERVER_SECRET_KEY", FLASK_SECRET_KEY),
            server_mounts=[config_mount],
            bootstrap_mounts=[
                config_mount,
                k8s.core.v1.VolumeMountArgs(name="mlflow-users", mount_path=USERS_DIR, read_only=True),
                k8s.core.v1.VolumeMountArgs(name="auth-bootstrap", mount_path=BOOTSTRAP_DIR, read_only=True),
            ],
            volumes=[
                # Only the config file: the admin password and the Flask key reach the processes as env vars.
                k8s.core.v1.VolumeArgs(
                    name="auth-config",
                    secret=k8s.core.v1.SecretVolumeSourceArgs(
                        secret_name=config.metadata.name,
                        default_mode=0o440,
                        items=[k8s.core.v1.KeyToPathArgs(key=AUTH_CONFIG_KEY, path=AUTH_CONFIG_KEY)],
                    ),
                ),
                # One file per user, named after it: what the bootstrap reads (mlflow_auth_bootstrap.read_passwords).
                k8s.core.v1.VolumeArgs(
                    name="mlflow-users",
                    projected=k8s.core.v1.ProjectedVolumeSourceArgs(
                        default_mode=0o440,
                        sources=[
                            k8s.core.v1.VolumeProjectionArgs(
                                secret=k8s.core.v1.SecretProjectionArgs(
                                    name=secret.metadata.name,
                                    items=[k8s.core.v1.KeyToPathArgs(key=PASSWORD_KEY, path=user)],
                                )
                            )
                            for user, secret in users.items()
                        ],
                    ),
                ),
                k8s.core.v1.VolumeArgs(
                    name="auth-bootstrap",
                    config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name=script.metadata.name, default_mode=0o444),
                ),
            ],
        )

    def _server(
        self, name: str, args: TrackingArgs, image: pulumi.Output[str], child: pulumi.ResourceOptions
    ) -> pulumi.Output[str]:
        labels = {"app.kubernetes.io/name": "mlflow", "app.kubernetes.io/component": "tracking"}
        ns = k8s.core.v1.Namespace(f"{name}-ns", metadata=k8s.meta.v1.ObjectMetaArgs(name=args.namespace), opts=child)
        namespace = ns.metadata.name
        sa = service_account(f"{name}-sa", "mlflow", namespace, args.service_account_role_arn, child)
        secret = k8s.core.v1.Secret(
            f"{name}-backend",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="mlflow-backend", namespace=namespace, labels=labels),
            type="Opaque",
            string_data={BACKEND_URI_KEY: self.backend_store_uri},
            opts=child,
        )
        backend_env = k8s.core.v1.EnvVarArgs(
            name=BACKEND_URI_KEY,
            value_from=k8s.core.v1.EnvVarSourceArgs(
                secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=secret.metadata.name, key=BACKEND_URI_KEY)
            ),
        )
        common_env = [
            backend_env,
            k8s.core.v1.EnvVarArgs(name="HOME", value="/tmp"),  # read-only root: caches go to /tmp
            k8s.core.v1.EnvVarArgs(name="MLFLOW_SERVER_ENABLE_JOB_EXECUTION", value="false"),
        ]
        mounts = [k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp")]
        # No --backend-store-uri: `mlflow server` reads MLFLOW_BACKEND_STORE_URI itself (mlflow/cli/__init__.py:
        # the option's envvar), so the secret stays out of the container's argv.
        server_args = [
            "server",
            "--host",
            "0.0.0.0",
            "--port",
            str(MLFLOW_PORT),
            "--workers",
            str(args.workers),
            "--artifacts-destination",
            args.artifacts_uri,
            "--serve-artifacts",
            "--allowed-hosts",
            ",".join(args.allowed_hosts()),
        ]
        init_containers = [
            k8s.core.v1.ContainerArgs(
                name="db-upgrade",
                image=image,
                command=["python", "-c", DB_UPGRADE_SCRIPT],
                env=common_env,
                resources=args.resources.to_args(),
                security_context=container_security_context(),
                volume_mounts=mounts,
            )
        ]
        server_env, server_mounts = list(common_env), list(mounts)
        volumes = [scratch_volume()]
        annotations: dict[str, str] | None = None
        if args.auth is not None:
            auth = self._auth_objects(name, args.auth, namespace, labels, child)
            server_args += ["--app-name", AUTH_APP]
            init_containers.append(
                k8s.core.v1.ContainerArgs(
                    name="auth-bootstrap",
                    image=image,
                    command=["python", f"{BOOTSTRAP_DIR}/{BOOTSTRAP_KEY}", *args.auth.bootstrap_args()],
                    env=[*common_env, *auth.env, auth.admin_password_env],
                    resources=args.resources.to_args(),
                    security_context=container_security_context(),
                    volume_mounts=[*mounts, *auth.bootstrap_mounts],
                )
            )
            # The server never needs the admin password: the bootstrap has created the admin already.
            server_env += [
                *auth.env,
                auth.flask_key_env,
                # Deny a route that has no authorization rule instead of letting it through.
                k8s.core.v1.EnvVarArgs(name="MLFLOW_BASIC_AUTH_FAIL_CLOSED", value="true"),
            ]
            server_mounts += auth.server_mounts
            volumes += auth.volumes
            # A changed bootstrap script rolls the pods, so it runs (ConfigMap changes alone restart nothing).
            annotations = {"mlplat.io/auth-bootstrap-sha256": hashlib.sha256(BOOTSTRAP_SOURCE.encode()).hexdigest()}
        deployment = k8s.apps.v1.Deployment(
            f"{name}-server",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="mlflow", namespace=namespace, labels=labels),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=args.replicas,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels, annotations=annotations),
                    spec=k8s.core.v1.PodSpecArgs(
                        service_account_name=sa.metadata.name,
                        # MLflow never calls the Kubernetes API: no token. IRSA (S3) mounts its own projected token.
                        automount_service_account_token=False,
                        security_context=pod_security_context(),
                        init_containers=init_containers,
                        containers=[
                            k8s.core.v1.ContainerArgs(
                                name="mlflow",
                                image=image,
                                command=["mlflow"],
                                args=server_args,
                                env=server_env,
                                ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=MLFLOW_PORT)],
                                resources=args.resources.to_args(),
                                security_context=container_security_context(),
                                # /health answers without credentials (mlflow.server.auth: is_unprotected_route).
                                liveness_probe=http_probe("/health", "http", period=15, failures=4, initial_delay=10),
                                readiness_probe=http_probe("/health", "http", period=5, failures=2),
                                volume_mounts=server_mounts,
                            )
                        ],
                        volumes=volumes,
                        topology_spread_constraints=[
                            k8s.core.v1.TopologySpreadConstraintArgs(
                                max_skew=1,
                                topology_key="topology.kubernetes.io/zone",
                                when_unsatisfiable="ScheduleAnyway",
                                label_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
                            )
                        ],
                    ),
                ),
            ),
            opts=child,
        )
        service = k8s.core.v1.Service(
            f"{name}-server",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="mlflow", namespace=namespace, labels=labels),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=labels,
                ports=[k8s.core.v1.ServicePortArgs(name="http", port=MLFLOW_PORT, target_port="http")],
            ),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[deployment])),
        )
        if args.network_policy:
            sources = [
                k8s.networking.v1.NetworkPolicyPeerArgs(ip_block=k8s.networking.v1.IPBlockArgs(cidr=cidr))
                for cidr in (args.load_balancer_cidrs if args.ingress else ())
            ]
            if args.allowed_namespaces:
                sources.append(
                    k8s.networking.v1.NetworkPolicyPeerArgs(
                        namespace_selector=k8s.meta.v1.LabelSelectorArgs(
                            match_expressions=[
                                k8s.meta.v1.LabelSelectorRequirementArgs(
                                    key="kubernetes.io/metadata.name",
                                    operator="In",
                                    values=sorted(set(args.allowed_namespaces)),
                                )
                            ]
                        )
                    )
                )
            k8s.networking.v1.NetworkPolicy(
                f"{name}-network-policy",
                metadata=k8s.meta.v1.ObjectMetaArgs(name="mlflow", namespace=namespace, labels=labels),
                spec=k8s.networking.v1.NetworkPolicySpecArgs(
                    pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
                    policy_types=["Ingress"],
                    ingress=[
                        k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                            from_=sources,
                            ports=[k8s.networking.v1.NetworkPolicyPortArgs(protocol="TCP", port=MLFLOW_PORT)],
                        )
                    ]
                    if sources
                    else [],
                ),
                opts=child,
            )
        if args.ingress:
            backend = k8s.networking.v1.IngressBackendArgs(
                service=k8s.networking.v1.IngressServiceBackendArgs(
                    name="mlflow", port=k8s.networking.v1.ServiceBackendPortArgs(number=MLFLOW_PORT)
                )
            )
            k8s.networking.v1.Ingress(
                f"{name}-ingress",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name="mlflow",
                    namespace=namespace,
                    annotations=_ingress_annotations(args),
                ),
                spec=k8s.networking.v1.IngressSpecArgs(
                    ingress_class_name="alb",
                    default_backend=None if args.ingress_host else backend,
                    rules=[
                        k8s.networking.v1.IngressRuleArgs(
                            host=args.ingress_host,
                            http=k8s.networking.v1.HTTPIngressRuleValueArgs(
                                paths=[
                                    k8s.networking.v1.HTTPIngressPathArgs(path="/", path_type="Prefix", backend=backend)
                                ]
                            ),
                        )
                    ]
                    if args.ingress_host
                    else None,
                ),
                opts=child,
            )
        return pulumi.Output.concat(
            "http://", service.metadata.name, ".", namespace, ".svc.cluster.local:", str(MLFLOW_PORT)
        )
