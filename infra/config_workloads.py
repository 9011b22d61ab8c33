"""Stack config of the platform's workloads and their observability.

Sections: ``mlplat:tracking``, ``mlplat:services``, ``mlplat:trainingJobs``, ``mlplat:monitoring``, ``mlplat:alarms``.

Each section turns into its component's args with the wiring fields left to
:class:`~mlplat.components.platform.MlPlatform` (:data:`~mlplat.components.platform.PLATFORM`).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from mlplat.components.alarms import AlarmThresholds, PlatformAlarmsArgs
from mlplat.components.model_service import Canary, ModelServiceArgs
from mlplat.components.monitoring import MonitoringArgs
from mlplat.components.monitoring_rules import AlertThresholds
from mlplat.components.platform import PLATFORM, tracking_args
from mlplat.components.pods import Resources
from mlplat.components.tracking import DatabaseArgs, TrackingArgs
from mlplat.components.training_job import TrainingJobArgs
from mlplat.components.validation import (
    check_certificate_arn,
    check_cpu,
    check_memory,
    check_model_uri,
    check_schedule,
)


class _Section(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


def _model_uri(value: str) -> str:
    return check_model_uri(value)  # one definition, the component's: "'<uri>' is not a model URI; use ..."


class ResourcesConfig(_Section):
    """Requests per pod: ``cpu`` (e.g. ``500m``), ``memory`` (e.g. ``1Gi``), ``gpus``."""

    cpu: str = "500m"
    memory: str = "1Gi"
    gpus: int = Field(0, ge=0, le=8)

    # The component's checks (mlplat.components.validation), as Resources runs them.
    @field_validator("cpu")
    @classmethod
    def _cpu(cls, value: str) -> str:
        return check_cpu(value)

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        return check_memory(value)

    def to_args(self) -> Resources:
        return Resources(cpu=self.cpu, memory=self.memory, gpus=self.gpus)


RDS_INSTANCE_CLASSES: tuple[str, ...] = (
    "db.t3.micro", "db.t3.small", "db.t3.medium", "db.t3.large",
    "db.t4g.micro", "db.t4g.small", "db.t4g.medium", "db.t4g.large",
    "db.m5.large", "db.m6i.large", "db.m6g.large", "db.m7g.large",
    "db.r6g.large", "db.r6i.large",
)
"""The RDS classes ``tracking.database.instanceClass`` may name: those the price table (infra/prices.json) prices in
every region it prices (tests check each), so ``mlplat cost`` and ``mlplat diff`` never leave the database out.
Add a class here with its price from a dated source."""


class DatabaseConfig(_Section):
    """``mlplat:tracking.database``: the RDS PostgreSQL instance."""

    engine_version: str = "16"
    parameter_family: str = "postgres16"
    instance_class: str = "db.t4g.medium"
    allocated_storage_gb: int = Field(20, ge=20, le=65536)
    max_allocated_storage_gb: int = Field(200, ge=20, le=65536)
    multi_az: bool = True
    deletion_protection: bool = True
    backup_retention_days: int = Field(7, ge=0, le=35)
    final_snapshot: bool = True
    protect: bool = True

    @field_validator("instance_class")
    @classmethod
    def _instance_class(cls, value: str) -> str:
        if value not in RDS_INSTANCE_CLASSES:
            raise ValueError(f"{value!r} is not an RDS class mlplat's price table prices (infra/prices.json), so "
                             f"`mlplat cost` could not price the database; allowed: {', '.join(RDS_INSTANCE_CLASSES)}")
        return value

    @model_validator(mode="after")
    def _storage(self) -> DatabaseConfig:
        if self.max_allocated_storage_gb < self.allocated_storage_gb:
            raise ValueError(f"maxAllocatedStorageGb ({self.max_allocated_storage_gb}) is below "
                             f"allocatedStorageGb ({self.allocated_storage_gb})")
        if not self.parameter_family.endswith(self.engine_version.split(".")[0]):
            raise ValueError(f"parameterFamily {self.parameter_family!r} does not match engineVersion "
                             f"{self.engine_version!r} (e.g. postgres16 for 16)")
        return self


class TrackingConfig(_Section):
    """``mlplat:tracking``: MLflow on the cluster, backed by RDS."""

    enabled: bool = True
    image: str | None = None
    """An MLflow image with psycopg2 and boto3; default: the stack's ECR ``tracking`` image (tracking/Dockerfile)."""
    replicas: int = Field(2, ge=1, le=10)
    workers: int = Field(2, ge=1, le=16)
    ingress: bool = False
    ingress_host: str | None = None
    """The DNS name clients reach MLflow's internal ALB by; default: the ALB's own ``*.elb.amazonaws.com`` name."""
    resources: ResourcesConfig = ResourcesConfig(cpu="500m", memory="1Gi")
    database: DatabaseConfig = DatabaseConfig()

    def to_args(self) -> TrackingArgs | None:
        if not self.enabled:
            return None
        return tracking_args(
            image=self.image, replicas=self.replicas, workers=self.workers, ingress=self.ingress,
            ingress_host=self.ingress_host,
            resources=self.resources.to_args(), database=DatabaseArgs(**self.database.model_dump()),
        )


class CanaryConfig(_Section):
    """A canary version of a service and its share of traffic (percent)."""

    model_uri: str
    weight: int = Field(10, ge=0, le=100)
    replicas: int = Field(1, ge=1, le=20)

    @field_validator("model_uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        return _model_uri(value)


class ServiceConfig(_Section):
    """One entry of ``mlplat:services``: a model served by ``mlplat serve``."""

    model_uri: str
    min_replicas: int = Field(2, ge=1)
    max_replicas: int = Field(10, ge=1)
    target_cpu_utilization: int = Field(70, ge=1, le=100)
    max_batch_size: int = Field(32, ge=1, le=4096)
    resources: ResourcesConfig = ResourcesConfig()
    canary: CanaryConfig | None = None
    internal: bool = True
    """false: an internet-facing ALB, which needs ``certificateArn`` (or ``allowPublicWithoutTls``); the servers
    always require the generated API key (Secret ``mlplat-<environment>-<service>-api-key``, namespace serving)."""
    certificate_arn: str | None = None
    """An ACM certificate for the ALB: HTTPS 443 only (ModelServiceArgs.certificate_arn)."""
    allow_public_without_tls: bool = False
    """Let an internet-facing service serve plain HTTP; ``mlplat check`` flags it (mandatory in production)."""
    allow_pickle: bool = False
    """Serve a pickle-serialized model (a training job with ``registry.serialization_format: pickle``)."""
    await_ready: bool = True
    """``pulumi up`` waits for the pods to turn ready; false for a first deploy, before the model is registered."""

    @field_validator("model_uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        return _model_uri(value)

    @field_validator("certificate_arn")
    @classmethod
    def _certificate(cls, value: str | None) -> str | None:
        return check_certificate_arn(value)

    @model_validator(mode="after")
    def _replicas(self) -> ServiceConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas ({self.min_replicas}) is greater than maxReplicas ({self.max_replicas})")
        if not self.internal and self.certificate_arn is None and not self.allow_public_without_tls:
            raise ValueError("internal: false makes an internet-facing ALB, which would serve API keys and "
                             "predictions over plain HTTP; set certificateArn to an ACM certificate "
                             "(arn:aws:acm:<region>:<account id>:certificate/<id>), or allowPublicWithoutTls: true "
                             "(flagged by mlplat check)")
        return self

    def to_args(self) -> ModelServiceArgs:
        canary = None if self.canary is None else Canary(model_uri=self.canary.model_uri, weight=self.canary.weight,
                                                         replicas=self.canary.replicas)
        return ModelServiceArgs(
            namespace=PLATFORM, image=PLATFORM, model_uri=self.model_uri, min_replicas=self.min_replicas,
            max_replicas=self.max_replicas, target_cpu_utilization=self.target_cpu_utilization,
            max_batch_size=self.max_batch_size, resources=self.resources.to_args(), canary=canary,
            internal=self.internal, certificate_arn=self.certificate_arn,
            allow_public_without_tls=self.allow_public_without_tls, allow_pickle=self.allow_pickle,
            await_ready=self.await_ready,
        )


class TrainingJobConfig(_Section):
    """One entry of ``mlplat:trainingJobs``: a ``mlplat train`` run on the cluster.

    ``config`` is the trainer's own config (``mlplat.contracts.training_config``), validated here.
    """

    config: dict[str, Any] = Field(default_factory=dict)
    nodes: int = Field(1, ge=1, le=64)
    processes_per_node: int = Field(1, ge=1, le=8)
    resources: ResourcesConfig = ResourcesConfig(cpu="2", memory="8Gi", gpus=1)
    backoff_limit: int = Field(3, ge=0, le=20)
    schedule: str | None = None

    @field_validator("config")
    @classmethod
    def _trainer_config(cls, value: dict[str, Any]) -> dict[str, Any]:
        # The trainer's own schema (mlplat train --config), so a typo fails at preview, not in the pod.
        from mlplat.contracts.training_config import parse_config  # pydantic only: no torch

        parse_config(value, source="the trainer's config (snake_case keys, as in training.yaml)")
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        return None if value is None else check_schedule(value)  # "'<value>' is not a cron schedule: ..."

    def to_args(self) -> TrainingJobArgs:
        return TrainingJobArgs(
            namespace=PLATFORM, image=PLATFORM, config=self.config, nodes=self.nodes,
            processes_per_node=self.processes_per_node, resources=self.resources.to_args(),
            backoff_limit=self.backoff_limit, schedule=self.schedule,
        )


class AlertThresholdsConfig(_Section):
    """``mlplat:monitoring.alerts``: when the model-service alerts fire."""

    p99_latency_ms: float = Field(250.0, gt=0)
    error_ratio: float = Field(0.01, gt=0, lt=1)
    queue_depth: float = Field(64.0, gt=0)
    drift_psi: float = Field(0.2, gt=0)
    canary_margin: float = Field(1.5, ge=1)
    for_minutes: int = Field(5, ge=1, le=120)

    def to_args(self) -> AlertThresholds:
        return AlertThresholds(p99_latency_seconds=self.p99_latency_ms / 1000, error_ratio=self.error_ratio,
                               queue_depth=self.queue_depth, drift_psi=self.drift_psi,
                               canary_margin=self.canary_margin, for_minutes=self.for_minutes)


class MonitoringConfig(_Section):
    """``mlplat:monitoring``: kube-prometheus-stack with mlplat's rules and dashboard."""

    enabled: bool = True
    prometheus_replicas: int = Field(1, ge=1, le=5)
    alertmanager_replicas: int = Field(1, ge=1, le=5)
    retention: str = Field("15d", pattern=r"^\d+[smhdwy]$")
    storage_gb: int = Field(50, ge=1, le=16384)
    alerts: AlertThresholdsConfig = AlertThresholdsConfig()
    receiver: dict[str, Any] | None = None
    """An Alertmanager receiver of your own (Slack, PagerDuty, ...), beside the alarm topic; credentials as
    ``*_file`` fields or secrets."""
    sns_topic_arn: str | None = None
    """An existing SNS topic to page instead of ``mlplat:alarms``' topic."""
    alerts_receiver_optional: bool = False
    """Accept alerts that page no one (no alarm topic, topic or receiver)."""

    def to_args(self) -> MonitoringArgs | None:
        if not self.enabled:
            return None
        return MonitoringArgs(prometheus_replicas=self.prometheus_replicas,
                              alertmanager_replicas=self.alertmanager_replicas, retention=self.retention,
                              storage_gb=self.storage_gb, thresholds=self.alerts.to_args(), receiver=self.receiver,
                              sns_topic_arn=self.sns_topic_arn,
                              alerts_receiver_optional=self.alerts_receiver_optional)


class AlarmsConfig(_Section):
    """``mlplat:alarms``: CloudWatch alarms for RDS, NAT and the EKS control plane, to an SNS topic."""

    enabled: bool = True
    email_subscribers: list[str] = []
    database_cpu_percent: float = Field(80.0, gt=0, le=100)
    database_free_storage_gb: float = Field(5.0, gt=0)
    database_connections: float = Field(80.0, gt=0)

    @field_validator("email_subscribers")
    @classmethod
    def _emails(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", v)]
        if bad:
            raise ValueError(f"{bad} are not email addresses")
        return value

    def to_args(self) -> PlatformAlarmsArgs | None:
        if not self.enabled:
            return None
        return PlatformAlarmsArgs(
            email_subscribers=tuple(self.email_subscribers),
            thresholds=AlarmThresholds(database_cpu_percent=self.database_cpu_percent,
                                       database_free_storage_gb=self.database_free_storage_gb,
                                       database_connections=self.database_connections),
        )
