"""Tracking: MLflow on the cluster, its backend store in RDS PostgreSQL, its artifacts in S3."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pulumi_random as random

from mlplat.components.iam import rotated_key
from mlplat.components.pods import (
    Resources,
    container_security_context,
    http_probe,
    pod_security_context,
    scratch_volume,
    service_account,
)

MLFLOW_PORT = 5000
DB_NAME = "mlflow"
DB_USER = "mlflow"
BACKEND_URI_KEY = "MLFLOW_BACKEND_STORE_URI"


@dataclass(frozen=True)
class DatabaseArgs:
    """The RDS PostgreSQL instance behind MLflow.

    Attributes:
        engine_version: PostgreSQL version; a major (``"16"``) lets RDS pick and patch the minor.
        parameter_family: The parameter group family matching ``engine_version``.
        instance_class: RDS instance class.
        allocated_storage_gb: Initial gp3 storage.
        max_allocated_storage_gb: Storage autoscaling ceiling.
        multi_az: A standby in another AZ with automatic failover.
        deletion_protection: RDS refuses to delete the instance while set.
        backup_retention_days: Automated backup retention (0 disables backups; production wants >= 7).
        final_snapshot: Take a final snapshot when the instance is deleted.
        protect: Pulumi ``protect`` + ``retain_on_delete`` on the instance.
        log_exports: PostgreSQL logs shipped to CloudWatch.
    """

    engine_version: str = "16"
    parameter_family: str = "postgres16"
    instance_class: str = "db.t4g.medium"
    allocated_storage_gb: int = 20
    max_allocated_storage_gb: int = 200
    multi_az: bool = True
    deletion_protection: bool = True
    backup_retention_days: int = 7
    final_snapshot: bool = True
    protect: bool = True
    log_exports: Sequence[str] = ("postgresql", "upgrade")

    def __post_init__(self) -> None:
        if not 0 <= self.backup_retention_days <= 35:
            raise ValueError(f"DatabaseArgs.backup_retention_days={self.backup_retention_days}: RDS allows 0..35")
        if self.max_allocated_storage_gb < self.allocated_storage_gb:
            raise ValueError(
                f"DatabaseArgs: max_allocated_storage_gb ({self.max_allocated_storage_gb}) is below "
                f"allocated_storage_gb ({self.allocated_storage_gb})"
            )
        if not self.parameter_family.endswith(self.engine_version.split(".")[0]):
            raise ValueError(f"DatabaseArgs.parameter_family={self.parameter_family!r} does not match "
                             f"engine_version {self.engine_version!r} (e.g. postgres16 for 16)")


@dataclass(frozen=True)
class TrackingArgs:
    """Arguments of :class:`Tracking`.

    Attributes:
        vpc_id: The VPC of the database.
        database_subnet_ids: Subnets of the DB subnet group (the Network's database tier).
        client_security_group_ids: Only these security groups (the cluster's nodes) may reach port 5432.
        artifacts_uri: Where MLflow stores artifacts, e.g. ``s3://<bucket>/mlflow``.
        database: The RDS instance's settings.
        namespace: Namespace for the MLflow server (created by this component).
        image: An MLflow image with psycopg2 and boto3 (the backend URI names the psycopg2 driver).
        replicas: MLflow server replicas.
        workers: Server worker processes per replica.
        resources: Requests and limits per replica.
        service_account_role_arn: IRSA role with read/write access to ``artifacts_uri``.
        ingress: Also expose MLflow through an internal ALB (VPC only).
    """

    vpc_id: pulumi.Input[str]
    database_subnet_ids: pulumi.Input[Sequence[pulumi.Input[str]]]
    client_security_group_ids: Sequence[pulumi.Input[str]]
    artifacts_uri: pulumi.Input[str]
    database: DatabaseArgs = field(default_factory=DatabaseArgs)
    namespace: str = "mlflow"
    image: str = "ghcr.io/mlflow/mlflow:v3.17.2"
    replicas: int = 2
    workers: int = 2
    resources: Resources = field(default_factory=lambda: Resources(cpu="500m", memory="1Gi"))
    service_account_role_arn: pulumi.Input[str] | None = None
    ingress: bool = False

    def __post_init__(self) -> None:
        if not self.client_security_group_ids:
            raise ValueError("TrackingArgs.client_security_group_ids is empty: nothing could reach the database")
        if self.replicas < 1 or self.workers < 1:
            raise ValueError("TrackingArgs: replicas and workers must be at least 1")


class Tracking(pulumi.ComponentResource):
    """MLflow tracking for the platform.

    The database: RDS PostgreSQL in the database subnets, reachable on 5432 only from the given security
    groups, KMS-encrypted gp3 with storage autoscaling, SSL forced by its parameter group, logs to
    CloudWatch, and a generated master password that stays a Pulumi secret (it reaches MLflow through a
    Kubernetes Secret, never a plain env value). The server: ``mlflow db upgrade`` as an init container,
    then ``mlflow server`` proxying artifacts to S3 (``--serve-artifacts``) with IRSA credentials.

    Outputs: ``uri`` (in-cluster tracking URI), ``db_endpoint``, ``db_security_group_id``,
    ``backend_store_uri`` (secret).
    """

    def __init__(self, name: str, args: TrackingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplat:tracking:Tracking", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        db = args.database

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
        key = rotated_key(f"{name}-db", f"Encrypts the {name} MLflow database",
                          pulumi.ResourceOptions(parent=self, protect=db.protect))
        password = random.RandomPassword(
            f"{name}-db-password",
            length=32,
            special=True,
            override_special="!#$%^&*()-_=+[]{}<>:?",  # RDS rejects / @ " and space; URIs need no escaping
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
        self.db_endpoint: pulumi.Output[str] = self.database.address
        self.db_security_group_id: pulumi.Output[str] = sg.id
        self.backend_store_uri: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.concat(
                # Name the driver: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3.
                "postgresql+psycopg2://", DB_USER, ":", password.result, "@", self.database.address, ":5432/", DB_NAME,
                "?sslmode=require",
            )
        )
        self.uri: pulumi.Output[str] = self._server(name, args)
        self.register_outputs({"uri": self.uri, "db_endpoint": self.db_endpoint})

    def _server(self, name: str, args: TrackingArgs) -> pulumi.Output[str]:
        child = pulumi.ResourceOptions(parent=self)
        labels = {"app.kubernetes.io/name": "mlflow", "app.kubernetes.io/component": "tracking"}
        ns = k8s.core.v1.Namespace(
            f"{name}-ns", metadata=k8s.meta.v1.ObjectMetaArgs(name=args.namespace), opts=child
        )
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
        service_host = f"mlflow.{args.namespace}.svc.cluster.local"
        server_args = [
            "server",
            "--host", "0.0.0.0",
            "--port", str(MLFLOW_PORT),
            "--workers", str(args.workers),
            "--backend-store-uri", f"$({BACKEND_URI_KEY})",
            "--artifacts-destination", args.artifacts_uri,
            "--serve-artifacts",
            "--allowed-hosts", f"{service_host},{service_host}:{MLFLOW_PORT},mlflow,mlflow:{MLFLOW_PORT},"
                               f"mlflow.{args.namespace},mlflow.{args.namespace}:{MLFLOW_PORT}",
        ]
        deployment = k8s.apps.v1.Deployment(
            f"{name}-server",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="mlflow", namespace=namespace, labels=labels),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=args.replicas,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                    spec=k8s.core.v1.PodSpecArgs(
                        service_account_name=sa.metadata.name,
                        security_context=pod_security_context(),
                        init_containers=[
                            k8s.core.v1.ContainerArgs(
                                name="db-upgrade",
                                image=args.image,
                                command=["mlflow"],
                                args=["db", "upgrade", f"$({BACKEND_URI_KEY})"],
                                env=common_env,
                                resources=args.resources.to_args(),
                                security_context=container_security_context(),
                                volume_mounts=mounts,
                            )
                        ],
                        containers=[
                            k8s.core.v1.ContainerArgs(
                                name="mlflow",
                                image=args.image,
                                command=["mlflow"],
                                args=server_args,
                                env=common_env,
                                ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=MLFLOW_PORT)],
                                resources=args.resources.to_args(),
                                security_context=container_security_context(),
                                liveness_probe=http_probe("/health", "http", period=15, failures=4,
                                                          initial_delay=10),
                                readiness_probe=http_probe("/health", "http", period=5, failures=2),
                                volume_mounts=mounts,
                            )
                        ],
                        volumes=[scratch_volume()],
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
            opts=pulumi.ResourceOptions(parent=self, depends_on=[deployment]),
        )
        if args.ingress:
            k8s.networking.v1.Ingress(
                f"{name}-ingress",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name="mlflow",
                    namespace=namespace,
                    annotations={
                        "alb.ingress.kubernetes.io/scheme": "internal",
                        "alb.ingress.kubernetes.io/target-type": "ip",
                        "alb.ingress.kubernetes.io/healthcheck-path": "/health",
                    },
                ),
                spec=k8s.networking.v1.IngressSpecArgs(
                    ingress_class_name="alb",
                    default_backend=k8s.networking.v1.IngressBackendArgs(
                        service=k8s.networking.v1.IngressServiceBackendArgs(
                            name="mlflow", port=k8s.networking.v1.ServiceBackendPortArgs(number=MLFLOW_PORT)
                        )
                    ),
                ),
                opts=child,
            )
        return pulumi.Output.concat("http://", service.metadata.name, ".", namespace, ".svc.cluster.local:",
                                    str(MLFLOW_PORT))
