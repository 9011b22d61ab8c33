"""Stack config of the platform's workloads and their observability.

Sections: ``mlplat:tracking``, ``mlplat:services``, ``mlplat:trainingJobs``, ``mlplat:monitoring``, ``mlplat:alarms``.

Each section is its component's spec (what a user decides; :class:`~mlplat.components.platform.MlPlatform` wires
the rest), or a thin subclass adding what only the stack decides (``enabled``, the price table's RDS classes, the
trainer's config schema).
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import AliasChoices, Field, field_validator, model_validator

from mlplat.components.alarms import PlatformAlarmsSpec
from mlplat.components.monitoring import MonitoringSpec
from mlplat.components.monitoring_rules import AlertThresholds
from mlplat.components.spec import raise_problems
from mlplat.components.tracking import TrackingSpec
from mlplat.components.training_job import TrainingJobSpec

RDS_INSTANCE_CLASSES: tuple[str, ...] = (
    "db.t3.micro",
    "db.t3.small",
    "db.t3.medium",
    "db.t3.large",
    "db.t4g.micro",
    "db.t4g.small",
    "db.t4g.medium",
    "db.t4g.large",
    "db.m5.large",
    "db.m6i.large",
    "db.m6g.large",
    "db.m7g.large",
    "db.r6g.large",
    "db.r6i.large",
)
"""The RDS classes ``tracking.database.instanceClass`` may name: those the price table (review/prices.json) prices in
every region it prices (tests check each), so ``mlplat cost`` and ``mlplat diff`` never leave the database out.
Add a class here with its price from a dated source."""


class TrackingConfig(TrackingSpec):
    """``mlplat:tracking``: MLflow on the cluster, backed by RDS (the component's :class:`TrackingSpec`), and whether
    the stack deploys it. ``image`` defaults to the stack's ECR ``tracking`` image (tracking/Dockerfile)."""

    enabled: bool = True
    """Deploy MLflow (false: no tracking server; services and jobs then reach MLflow only through a
    ``trackingUri`` of their own)."""

    @model_validator(mode="after")
    def _priced(self) -> Self:
        # Stack policy, not the component's rule: `mlplat cost` and `mlplat diff` price every class allowed here.
        value = self.database.instance_class
        if value not in RDS_INSTANCE_CLASSES:
            raise_problems(
                type(self).__name__,
                [
                    (
                        ("database", "instanceClass"),
                        (
                            f"{value!r} is not an RDS class mlplat's price table prices (review/prices.json), so "
                            "`mlplat cost` "
                            f"could not price the database; allowed: {', '.join(RDS_INSTANCE_CLASSES)}"
                        ),
                    )
                ],
            )
        return self


class TrainingJobConfig(TrainingJobSpec):
    """One entry of ``mlplat:trainingJobs``: a ``mlplat train`` run on the cluster (the component's
    :class:`TrainingJobSpec`), its ``config`` checked against the trainer's own schema here."""

    @field_validator("config")
    @classmethod
    def _trainer_config(cls, value: dict[str, Any]) -> dict[str, Any]:
        # The trainer's own schema (mlplat train --config), so a typo fails at preview, not in the pod.
        from mlplat.contracts.training_config import parse_config  # pydantic only: no torch

        parse_config(value, source="the trainer's config (snake_case keys, as in training.yaml)")
        return value


class AlertThresholdsConfig(AlertThresholds):
    """``mlplat:monitoring.alerts``: the component's :class:`AlertThresholds`; the stack file may write the latency
    SLO in milliseconds (``p99LatencyMs``, as its stack files always have) instead of ``p99LatencySeconds``."""

    @model_validator(mode="before")
    @classmethod
    def _milliseconds(cls, data: Any) -> Any:
        if isinstance(data, dict) and "p99LatencyMs" in data:
            data = dict(data)
            ms = data.pop("p99LatencyMs")
            if isinstance(ms, bool) or not isinstance(ms, int | float) or not ms > 0:
                raise ValueError(f"p99LatencyMs: {ms!r} is not a number of milliseconds above 0")
            data["p99LatencySeconds"] = ms / 1000
        return data


class MonitoringConfig(MonitoringSpec):
    """``mlplat:monitoring``: kube-prometheus-stack with mlplat's rules and dashboard (the component's
    :class:`MonitoringSpec`), and whether the stack deploys it."""

    enabled: bool = True
    """Deploy the monitoring stack."""
    thresholds: AlertThresholdsConfig = Field(
        default=AlertThresholdsConfig(),
        validation_alias=AliasChoices("alerts", "thresholds"),
        serialization_alias="alerts",
    )
    """When the model-service alerts fire."""


class AlarmsConfig(PlatformAlarmsSpec):
    """``mlplat:alarms``: CloudWatch alarms for RDS, NAT and the EKS control plane, to an SNS topic (the
    component's :class:`PlatformAlarmsSpec`), and whether the stack deploys them. The database thresholds may also
    be written flat (``databaseCpuPercent``, ``databaseFreeStorageGb``, ``databaseConnections``), as earlier stack
    files did."""

    enabled: bool = True
    """Deploy the alarms and their SNS topic."""

    @model_validator(mode="before")
    @classmethod
    def _flat_thresholds(cls, data: Any) -> Any:
        flat = ("databaseCpuPercent", "databaseFreeStorageGb", "databaseConnections")
        if isinstance(data, dict) and any(key in data for key in flat):
            data = dict(data)
            thresholds = dict(data.get("thresholds") or {})
            thresholds.update({key: data.pop(key) for key in flat if key in data})
            data["thresholds"] = thresholds
        return data
