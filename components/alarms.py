"""CloudWatch alarms for the managed services the cluster's Prometheus cannot see: RDS, NAT, the EKS control plane."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_aws as aws
from pydantic import Field, field_validator

from mlplat.components.options import component_args
from mlplat.components.spec import Spec, StrInput, StrInputs

__all__ = ["AlarmThresholds", "PlatformAlarms", "PlatformAlarmsArgs", "PlatformAlarmsSpec"]

GB = 1024**3


class AlarmThresholds(Spec):
    """When the CloudWatch alarms fire (each over ``evaluation_minutes``)."""

    database_cpu_percent: float = 80.0
    """RDS CPUUtilization above this (in (0, 100])."""
    database_free_storage_gb: float = Field(default=5.0, gt=0)
    """RDS FreeStorageSpace below this."""
    database_connections: float = Field(default=80.0, gt=0)
    """RDS DatabaseConnections above this (MLflow holds a small pool per replica)."""
    replica_lag_seconds: float = 60.0
    """ReplicaLag of a read replica above this."""
    nat_dropped_packets: float = 100.0
    """NAT gateway PacketsDropCount above this (sum per 5 minutes)."""
    apiserver_5xx: float = 50.0
    """EKS API server 5xx responses above this (sum per 5 minutes)."""
    evaluation_minutes: int = 15
    """How long a breach must last (a multiple of 5, at least 5)."""

    @field_validator("database_cpu_percent")
    @classmethod
    def _cpu(cls, value: float) -> float:
        if not 0 < value <= 100:
            raise ValueError(f"AlarmThresholds.database_cpu_percent={value}: must be in (0, 100]")
        return value

    @field_validator("evaluation_minutes")
    @classmethod
    def _minutes(cls, value: int) -> int:
        if value < 5 or value % 5:
            raise ValueError(f"AlarmThresholds.evaluation_minutes={value}: a multiple of 5, >= 5")
        return value


class PlatformAlarmsSpec(Spec):
    """What a user decides about :class:`PlatformAlarms` (``MlPlatformArgs.alarms``); :class:`PlatformAlarmsArgs`
    adds the wiring: the tracking database, the NAT gateways and the cluster to watch."""

    email_subscribers: tuple[str, ...] = ()
    """Addresses subscribed to the alarm topic (each confirms by email once)."""
    replica_identifiers: StrInputs = []
    """Read replicas to watch for lag. The platform's production database is Multi-AZ, whose standby is
    synchronous and has no lag metric: list replicas here when you add some."""
    thresholds: AlarmThresholds = AlarmThresholds()
    """When the alarms fire."""

    @field_validator("email_subscribers")
    @classmethod
    def _emails(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", v)]
        if bad:
            raise ValueError(f"{bad} are not email addresses")
        return value


class PlatformAlarmsArgs(PlatformAlarmsSpec):
    """Arguments of :class:`PlatformAlarms`: its :class:`PlatformAlarmsSpec` and what it watches."""

    database_identifier: StrInput | None = None
    """The RDS instance (``identifier``) of the tracking database; None: no RDS alarms."""
    nat_gateway_ids: StrInputs = []
    """NAT gateways to watch for port-allocation errors and dropped packets."""
    cluster_name: StrInput | None = None
    """The EKS cluster; its control-plane metrics (namespace ``AWS/EKS``) are watched."""


class PlatformAlarms(pulumi.ComponentResource):
    """An SNS topic and the CloudWatch alarms that publish to it (on alarm and on recovery).

    The topic uses no customer KMS key: CloudWatch cannot publish to a topic under the AWS-managed SNS key,
    and alarm notifications carry no data beyond the alarm's name and state.

    ``topic`` is the SNS topic and ``alarms`` the CloudWatch alarms.
    """

    topic_arn: pulumi.Output[str]
    """The SNS topic the alarms publish to (subscribe to it, or let Alertmanager publish there)."""
    alarm_names: pulumi.Output[list[str]]
    """The CloudWatch alarms' names."""

    def __init__(
        self,
        name: str,
        args: PlatformAlarmsArgs | None = None,
        opts: pulumi.ResourceOptions | None = None,
        **kwargs: Any,
    ) -> None:
        args = component_args("PlatformAlarms", PlatformAlarmsArgs, args, kwargs)
        super().__init__("mlplat:observability:PlatformAlarms", name, None, opts)
        self._name, self._child = name, pulumi.ResourceOptions(parent=self)
        self.topic = aws.sns.Topic(f"{name}-alarms", opts=self._child)
        for index, address in enumerate(args.email_subscribers):
            aws.sns.TopicSubscription(
                f"{name}-email-{index}", topic=self.topic.arn, protocol="email", endpoint=address, opts=self._child
            )
        self.alarms: list[aws.cloudwatch.MetricAlarm] = []
        t = args.thresholds
        if args.database_identifier is not None:
            rds = {"DBInstanceIdentifier": args.database_identifier}
            self._alarm(
                "db-cpu",
                "AWS/RDS",
                "CPUUtilization",
                rds,
                "GreaterThanThreshold",
                t.database_cpu_percent,
                t,
                "Tracking database CPU high: look for slow MLflow queries or scale the instance class",
            )
            self._alarm(
                "db-free-storage",
                "AWS/RDS",
                "FreeStorageSpace",
                rds,
                "LessThanThreshold",
                t.database_free_storage_gb * GB,
                t,
                "Tracking database storage low: raise max allocated storage or prune old runs",
                statistic="Minimum",
            )
            self._alarm(
                "db-connections",
                "AWS/RDS",
                "DatabaseConnections",
                rds,
                "GreaterThanThreshold",
                t.database_connections,
                t,
                "Tracking database connections high: check MLflow replicas",
            )
        for index, replica in enumerate(args.replica_identifiers):
            self._alarm(
                f"db-replica-lag-{index}",
                "AWS/RDS",
                "ReplicaLag",
                {"DBInstanceIdentifier": replica},
                "GreaterThanThreshold",
                t.replica_lag_seconds,
                t,
                "Read replica lagging behind the primary",
            )
        for index, nat in enumerate(args.nat_gateway_ids):
            gateway = {"NatGatewayId": nat}
            self._alarm(
                f"nat-{index}-port-allocation",
                "AWS/NATGateway",
                "ErrorPortAllocation",
                gateway,
                "GreaterThanThreshold",
                0,
                t,
                "NAT gateway out of source ports: spread egress or add NATs",
                statistic="Sum",
            )
            self._alarm(
                f"nat-{index}-dropped",
                "AWS/NATGateway",
                "PacketsDropCount",
                gateway,
                "GreaterThanThreshold",
                t.nat_dropped_packets,
                t,
                "NAT gateway dropping packets",
                statistic="Sum",
            )
        if args.cluster_name is not None:
            self._alarm(
                "eks-apiserver-5xx",
                "AWS/EKS",
                "apiserver_request_total_5XX",
                {"ClusterName": args.cluster_name},
                "GreaterThanThreshold",
                t.apiserver_5xx,
                t,
                "EKS API server answering 5xx: check the AWS Health dashboard and webhooks",
                statistic="Sum",
            )
        self.topic_arn = self.topic.arn
        self.alarm_names = pulumi.Output.all(*[alarm.name for alarm in self.alarms])
        self.register_outputs({"topic_arn": self.topic_arn, "alarm_names": self.alarm_names})

    def _alarm(
        self,
        suffix: str,
        namespace: str,
        metric: str,
        dimensions: Mapping[str, pulumi.Input[str]],
        comparison: str,
        threshold: float,
        t: AlarmThresholds,
        description: str,
        statistic: str = "Average",
    ) -> None:
        period = 300
        self.alarms.append(
            aws.cloudwatch.MetricAlarm(
                f"{self._name}-{suffix}",
                alarm_description=description,
                namespace=namespace,
                metric_name=metric,
                dimensions=dict(dimensions),
                statistic=statistic,
                period=period,
                evaluation_periods=t.evaluation_minutes * 60 // period,
                comparison_operator=comparison,
                threshold=threshold,
                # No data is not an outage for these metrics (e.g. no NAT traffic at night).
                treat_missing_data="notBreaching",
                alarm_actions=[self.topic.arn],
                ok_actions=[self.topic.arn],
                opts=self._child,
            )
        )
