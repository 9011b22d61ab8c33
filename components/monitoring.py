"""Prometheus, Grafana and Alertmanager on the cluster (kube-prometheus-stack), with mlplat's rules and dashboard.

The Prometheus Operator selects every ServiceMonitor and PrometheusRule in the cluster (not only those
labelled for this release). Each :class:`~mlplat.components.model_service.ModelService` named in
``model_services`` gets a ServiceMonitor whose series carry ``model_service`` and ``track`` (stable/canary)
labels, which the rules (:mod:`mlplat.components.monitoring_rules`) and the dashboard
(``dashboards/model-service.json``) group by. A team running its own Prometheus Operator can use
:func:`service_monitor` with :data:`MODEL_SERVICE_RELABELINGS` directly.

Alertmanager pages someone: the chart's default config sends every alert to a ``null`` receiver, so
:func:`alertmanager_config` replaces it with a route to the platform's SNS topic (``sns_configs``, signed
with the pod's IRSA credentials) and/or a receiver of the caller's (Slack, PagerDuty, ...). The
control-plane scrape targets EKS does not expose (controller manager, scheduler, etcd, kube-proxy's
loopback-only metrics) are switched off with their default rules, so nothing fires forever about them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
from pydantic import AliasChoices, Field, ValidationInfo, field_validator

from mlplat.components.cluster import STORAGE_CLASS
from mlplat.components.cluster_system import ROLE_ARN_ANNOTATION, Chart, release
from mlplat.components.iam import policy_document, statement
from mlplat.components.monitoring_rules import AlertThresholds, dashboard_json, model_service_rule_groups
from mlplat.components.options import child_options, component_args
from mlplat.components.spec import Spec, StrInput
from mlplat.contracts import http

__all__ = [
    "MODEL_SERVICE_RELABELINGS",
    "Monitoring",
    "MonitoringArgs",
    "MonitoringSpec",
    "alertmanager_config",
    "alertmanager_policy",
    "service_monitor",
]

CHART = Chart("kube-prometheus-stack", "75.15.0", "https://prometheus-community.github.io/helm-charts")
MONITORING_API = "monitoring.coreos.com/v1"
GRAFANA_ADMIN_SECRET = "grafana-admin"
DASHBOARD_LABEL = "grafana_dashboard"
"""The label Grafana's dashboard sidecar watches for (the chart's default)."""
ALERTMANAGER_SERVICE_ACCOUNT = "kube-prometheus-stack-alertmanager"
"""Alertmanager's service account: the chart's own name for it (``<fullname>-alertmanager``; the release is named
after the chart, so fullname is ``kube-prometheus-stack``), also set explicitly in the values so the IRSA role's
trust policy (``cluster.service_account_role(namespace, ALERTMANAGER_SERVICE_ACCOUNT, ...)``) cannot drift from it."""
NULL_RECEIVER = "null"
"""Upstream's receiver that drops alerts; only Watchdog and InfoInhibitor go there."""
SNS_RECEIVER = "sns"
SILENCED_ALERTS = ("InfoInhibitor", "Watchdog")
"""Alerts that are plumbing, not pages: Watchdog always fires (a dead man's switch for an external heartbeat, which
this platform does not run yet) and InfoInhibitor only exists to inhibit ``severity=info`` alerts."""
ALERT_GROUP_BY = ("namespace", "alertname")
ALERT_GROUP_WAIT = "30s"  # collect the alerts one failure raises together before the first page
ALERT_GROUP_INTERVAL = "5m"  # a group that grows or resolves is re-sent at most this often
ALERT_REPEAT_INTERVAL = "4h"  # a page still firing is repeated so an unanswered one is not forgotten overnight
# The SNS Publish API refuses a Subject of 100 characters or more and Alertmanager (0.28) does not truncate it
# (prometheus/alertmanager#2781): a short status prefix plus the group's labels cut to 80 characters.
SNS_SUBJECT = (
    '[{{ .Status | toUpper }}{{ if eq .Status "firing" }}:{{ .Alerts.Firing | len }}{{ end }}] '
    '{{ reReplaceAll "(?s)^(.{80}).+$" "$1" (.GroupLabels.SortedPairs.Values | join " ") }}'
)
# The default message joins the annotations common to the group, empty when they differ, which SNS refuses:
# one block per alert instead.
SNS_MESSAGE = (
    "{{ range .Alerts }}[{{ .Status | toUpper }}] {{ .Labels.alertname }}"
    "{{ with .Labels.namespace }} (namespace {{ . }}){{ end }}\n"
    "{{ range .Annotations.SortedPairs }}{{ .Name }}: {{ .Value }}\n{{ end }}"
    "labels:{{ range .Labels.SortedPairs }} {{ .Name }}={{ .Value }}{{ end }}\n\n{{ end }}"
)
# Upstream's inhibit rules (kube-prometheus-stack 75.15.0 values.yaml, alertmanager.config), kept verbatim: a
# critical alert mutes the same alert's warning/info, a warning its info, and InfoInhibitor (which fires while a
# namespace has only info alerts) mutes those info alerts and is itself muted by any other alert.
UPSTREAM_INHIBIT_RULES: tuple[dict[str, Any], ...] = (
    {
        "source_matchers": ["severity = critical"],
        "target_matchers": ["severity =~ warning|info"],
        "equal": ["namespace", "alertname"],
    },
    {
        "source_matchers": ["severity = warning"],
        "target_matchers": ["severity = info"],
        "equal": ["namespace", "alertname"],
    },
    {"source_matchers": ["alertname = InfoInhibitor"], "target_matchers": ["severity = info"], "equal": ["namespace"]},
    {"target_matchers": ["alertname = InfoInhibitor"]},
)
# Components kube-prometheus-stack scrapes that an EKS cluster does not let Prometheus reach, each with the chart's
# default-rule groups that alert on them (``defaultRules.rules.<key>``, which the chart also gates on the component).
EKS_HIDDEN_COMPONENTS: dict[str, tuple[str, ...]] = {
    # EKS runs the controller manager inside its managed control plane: no pod, no endpoint to scrape.
    "kubeControllerManager": ("kubeControllerManager",),
    # Likewise the scheduler: KubeSchedulerDown would fire forever.
    "kubeScheduler": ("kubeSchedulerAlerting", "kubeSchedulerRecording"),
    # etcd is AWS-managed and unreachable from the cluster (its health shows in the API server's metrics).
    "kubeEtcd": ("etcd",),
    # The EKS kube-proxy add-on binds its metrics to 127.0.0.1:10249 (kube-proxy-config), unreachable from Prometheus.
    "kubeProxy": ("kubeProxy",),
}


class MonitoringSpec(Spec):
    """What a user decides about :class:`Monitoring` (``MlPlatformArgs.monitoring``); :class:`MonitoringArgs` adds
    the wiring: the model services to scrape."""

    namespace: str = "monitoring"
    """Namespace of the monitoring stack."""
    chart_version: str = CHART.version
    """Pinned kube-prometheus-stack chart version (bump deliberately)."""
    prometheus_replicas: int = Field(default=1, le=5)
    """Prometheus replicas (1 to 5); 2 in production, so a node loss or an upgrade leaves one scraping (each
    replica scrapes everything: HA by duplication)."""
    retention: str = "15d"
    """How long Prometheus keeps samples (Prometheus duration, e.g. ``15d``)."""
    storage_gb: int = Field(default=50, le=16384)
    """Size of each Prometheus replica's persistent volume."""
    storage_class: str = STORAGE_CLASS
    """StorageClass of that volume; default the gp3 class mlplat's Cluster creates under that exact name (a PVC
    naming a class that does not exist stays Pending, and Prometheus never starts)."""
    alertmanager_replicas: int = Field(default=1, le=5)
    """Alertmanager replicas (1 to 5; they form a cluster and deduplicate notifications)."""
    thresholds: AlertThresholds = Field(
        default=AlertThresholds(), validation_alias=AliasChoices("alerts", "thresholds"), serialization_alias="alerts"
    )
    """Thresholds of the model-service alerts (the stack file's ``monitoring.alerts``)."""
    sns_topic_arn: StrInput | None = None
    """SNS topic every alert is published to (the platform's alarm topic by default in MlPlatform), with
    ``send_resolved``; the signing region is the topic's. Needs ``alertmanager_role_arn``."""
    alertmanager_role_arn: StrInput | None = None
    """IAM role of Alertmanager's service account (IRSA, annotated on :data:`ALERTMANAGER_SERVICE_ACCOUNT`): the
    default AWS credential chain in the pod picks it up and signs the SNS requests with it. Give it
    :func:`alertmanager_policy`. MlPlatform creates one when it has a topic and this is None."""
    receiver: dict[str, Any] | None = None
    """An Alertmanager receiver of your own (``{"name": ..., "slack_configs": [...]}``, any ``*_configs`` of
    https://prometheus.io/docs/alerting/latest/configuration/#receiver), which gets every alert too (alongside the
    SNS topic when both are set). It travels in the Helm values: give credentials as Pulumi secrets, or as
    ``*_file`` fields of Secrets mounted through ``alertmanagerSpec.secrets``."""
    alerts_receiver_optional: bool = False
    """Allow a Monitoring whose alerts go nowhere (upstream's ``null`` receiver). Without a topic or a receiver,
    :class:`Monitoring` raises instead: rules that fire and page no one look like monitoring but are not, and
    nothing in the cluster would show it; opt out only where that is the intent (a throwaway cluster, or a team
    that adds AlertmanagerConfigs of its own)."""

    @field_validator("prometheus_replicas", "alertmanager_replicas", "storage_gb")
    @classmethod
    def _at_least_one(cls, value: int, info: ValidationInfo) -> int:
        if value < 1:
            raise ValueError(f"MonitoringArgs.{info.field_name}={value}: must be >= 1")
        return value

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: str) -> str:
        if not value[:-1].isdigit() or value[-1:] not in tuple("smhdwy"):
            raise ValueError(f"MonitoringArgs.retention={value!r}: expected a duration such as 15d or 12h")
        return value

    @field_validator("sns_topic_arn")
    @classmethod
    def _topic(cls, value: Any) -> Any:
        if isinstance(value, str):
            _sns_topic_region(value)
        return value

    @field_validator("receiver")
    @classmethod
    def _receiver(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            label = value.get("name")
            if not isinstance(label, str) or not label or label in (NULL_RECEIVER, SNS_RECEIVER):
                raise ValueError(
                    f"MonitoringArgs.receiver: needs a 'name' other than {NULL_RECEIVER!r} and "
                    f"{SNS_RECEIVER!r}, got {label!r}"
                )
            if not any(key.endswith("_configs") and item for key, item in value.items()):
                raise ValueError(f"MonitoringArgs.receiver {label!r}: no integration (*_configs) to send alerts to")
        # Whether any receiver is set is checked by alertmanager_config(): the platform fills the topic in later.
        return value


class MonitoringArgs(MonitoringSpec):
    """Arguments of :class:`Monitoring`: its :class:`MonitoringSpec` and the model services it scrapes."""

    model_services: dict[str, StrInput] = {}
    """ModelServices to scrape, name -> namespace: one ServiceMonitor each, covering its stable and canary
    versions (MlPlatform: every service of the platform)."""


def _sns_topic_region(topic_arn: str) -> str:
    """The region of an SNS topic ARN (``arn:<partition>:sns:<region>:<account>:<name>``): where to publish."""
    parts = topic_arn.split(":")
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "sns" or not parts[3]:
        raise ValueError(
            f"MonitoringArgs.sns_topic_arn={topic_arn!r}: not an SNS topic ARN (arn:aws:sns:<region>:<account>:<topic>)"
        )
    return parts[3]


def alertmanager_policy(
    topic_arn: pulumi.Input[str],
    kms_key_arn: pulumi.Input[str] | None = None,
) -> pulumi.Output[str]:
    """Alertmanager's permissions: ``sns:Publish`` on exactly the alert topic.

    ``kms_key_arn``: the topic's customer-managed key, if it has one (publishing to an encrypted topic needs
    ``kms:GenerateDataKey*`` and ``kms:Decrypt`` on it); the platform's alarm topic has none.
    """
    statements = [statement(["sns:Publish"], [topic_arn], sid="PublishAlerts")]
    if kms_key_arn is not None:
        statements.append(statement(["kms:GenerateDataKey*", "kms:Decrypt"], [kms_key_arn], sid="EncryptAlerts"))
    return policy_document(statements)


def alertmanager_config(args: MonitoringArgs) -> dict[str, Any]:
    """Alertmanager's configuration (the chart's ``alertmanager.config``): every alert to the configured receivers.

    Upstream's defaults are kept where they do not hide alerts: ``resolve_timeout``, the inhibit rules, the
    template path, and Watchdog and InfoInhibitor on ``null``. Everything else goes, grouped by namespace and
    alert, to the SNS topic and/or ``args.receiver``; with both, each gets every alert (``continue``).

    Raises:
        ValueError: no topic and no receiver (unless ``alerts_receiver_optional``), a topic without the IRSA
            role that lets Alertmanager publish to it, or that role without a topic.
    """
    receivers: list[dict[str, Any]] = []
    if args.sns_topic_arn is not None:
        if args.alertmanager_role_arn is None:
            raise ValueError(
                "MonitoringArgs.sns_topic_arn needs alertmanager_role_arn: without an IRSA role "
                "Alertmanager has no credentials to publish with (see alertmanager_policy)"
            )
        region = pulumi.Output.from_input(args.sns_topic_arn).apply(_sns_topic_region)
        receivers.append(
            {
                "name": SNS_RECEIVER,
                "sns_configs": [
                    {
                        "topic_arn": args.sns_topic_arn,
                        # No keys, profile or role_arn: the SDK's default chain reads the IRSA web identity token.
                        "sigv4": {"region": region},
                        "subject": SNS_SUBJECT,
                        "message": SNS_MESSAGE,
                        "send_resolved": True,
                    }
                ],
            }
        )
    elif args.alertmanager_role_arn is not None:
        raise ValueError(
            "MonitoringArgs.alertmanager_role_arn is set but sns_topic_arn is not: "
            "Alertmanager would hold AWS credentials for nothing"
        )
    if args.receiver is not None:
        receivers.append(dict(args.receiver))
    if not receivers and not args.alerts_receiver_optional:
        raise ValueError(
            "Monitoring has no alert receiver: set MonitoringArgs.sns_topic_arn (with "
            "alertmanager_role_arn) or MonitoringArgs.receiver, or alerts_receiver_optional=True to "
            "accept alerts that page no one"
        )
    silenced = {"receiver": NULL_RECEIVER, "matchers": [f'alertname =~ "{"|".join(SILENCED_ALERTS)}"']}
    routes: list[dict[str, Any]] = [silenced]
    if len(receivers) > 1:
        # A matching child route replaces its parent's receiver, so each receiver is a child that continues.
        routes += [{"receiver": r["name"], "continue": True} for r in receivers]
    return {
        "global": {"resolve_timeout": "5m"},
        "inhibit_rules": [dict(rule) for rule in UPSTREAM_INHIBIT_RULES],
        "route": {
            "receiver": receivers[0]["name"] if receivers else NULL_RECEIVER,
            "group_by": list(ALERT_GROUP_BY),
            "group_wait": ALERT_GROUP_WAIT,
            "group_interval": ALERT_GROUP_INTERVAL,
            "repeat_interval": ALERT_REPEAT_INTERVAL,
            "routes": routes,
        },
        "receivers": [{"name": NULL_RECEIVER}, *receivers],
        "templates": ["/etc/alertmanager/config/*.tmpl"],
    }


def _chart_values(args: MonitoringArgs) -> dict[str, Any]:
    """Helm values of kube-prometheus-stack for mlplat."""
    return {
        "prometheus": {
            "prometheusSpec": {
                "replicas": args.prometheus_replicas,
                "retention": args.retention,
                # Select every ServiceMonitor/PrometheusRule/PodMonitor, not only the release's own.
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "podMonitorSelectorNilUsesHelmValues": False,
                "ruleSelectorNilUsesHelmValues": False,
                "storageSpec": {
                    "volumeClaimTemplate": {
                        "spec": {
                            "storageClassName": args.storage_class,
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": f"{args.storage_gb}Gi"}},
                        }
                    }
                },
            }
        },
        "alertmanager": {
            "config": alertmanager_config(args),
            "serviceAccount": {
                "create": True,
                "name": ALERTMANAGER_SERVICE_ACCOUNT,
                "annotations": (
                    {ROLE_ARN_ANNOTATION: args.alertmanager_role_arn} if args.alertmanager_role_arn is not None else {}
                ),
            },
            "alertmanagerSpec": {"replicas": args.alertmanager_replicas},
        },
        "grafana": {
            "admin": {"existingSecret": GRAFANA_ADMIN_SECRET, "userKey": "admin-user", "passwordKey": "admin-password"},
            "sidecar": {"dashboards": {"enabled": True, "label": DASHBOARD_LABEL, "searchNamespace": "ALL"}},
        },
        # Not on EKS (see EKS_HIDDEN_COMPONENTS): no ServiceMonitor, no Service, and no rules about them.
        **{component: {"enabled": False} for component in EKS_HIDDEN_COMPONENTS},
        "defaultRules": {"rules": {rule: False for rules in EKS_HIDDEN_COMPONENTS.values() for rule in rules}},
    }


MODEL_SERVICE_RELABELINGS = (
    {"sourceLabels": ["__meta_kubernetes_service_label_app_kubernetes_io_name"], "targetLabel": "model_service"},
    {"sourceLabels": ["__meta_kubernetes_service_label_mlplat_io_track"], "targetLabel": "track"},
)
"""Turn a ModelService's Service labels into the ``model_service`` and ``track`` labels of its series."""


def service_monitor(
    name: str,
    namespace: pulumi.Input[str],
    match_labels: dict[str, str],
    opts: pulumi.ResourceOptions,
    relabelings: Sequence[dict[str, Any]] = (),
) -> k8s.apiextensions.CustomResource:
    """A ServiceMonitor scraping ``/metrics`` on the ``http`` port of the Services matching ``match_labels``."""
    endpoint: dict[str, Any] = {"port": "http", "path": http.METRICS_PATH, "interval": "15s"}
    if relabelings:
        endpoint["relabelings"] = list(relabelings)
    return k8s.apiextensions.CustomResource(
        name,
        api_version=MONITORING_API,
        kind="ServiceMonitor",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=name, namespace=namespace, labels=match_labels),
        spec={"selector": {"matchLabels": match_labels}, "endpoints": [endpoint]},
        opts=opts,
    )


class Monitoring(pulumi.ComponentResource):
    """kube-prometheus-stack (Prometheus, Alertmanager, Grafana) with mlplat's alert rules and dashboard.

    Grafana's admin password is generated and stays a Pulumi secret (a Kubernetes Secret the chart reads).
    Prometheus keeps ``retention`` of samples on a gp3 volume per replica.

    Alertmanager sends every alert but Watchdog and InfoInhibitor to the SNS topic and/or the receiver of
    ``args`` (:func:`alertmanager_config`); a Monitoring with neither raises unless ``alerts_receiver_optional``.

    ``release`` is the Helm release: resources that need the operator's CRDs (e.g. ServiceMonitors) should depend
    on it.
    """

    namespace: pulumi.Output[str]
    """The namespace of Prometheus, Alertmanager and Grafana (the Namespace's own output: using it waits for it)."""
    grafana_admin_password: pulumi.Output[str]
    """Grafana's generated admin password, a secret."""

    def __init__(
        self, name: str, args: MonitoringArgs | None = None, opts: pulumi.ResourceOptions | None = None, **kwargs: Any
    ) -> None:
        args = component_args("Monitoring", MonitoringArgs, args, kwargs)
        super().__init__("mlplat:observability:Monitoring", name, None, opts)
        values = _chart_values(args)  # before any child: a Monitoring without a receiver fails, creating nothing
        child = child_options(self, opts)
        ns = k8s.core.v1.Namespace(f"{name}-ns", metadata=k8s.meta.v1.ObjectMetaArgs(name=args.namespace), opts=child)
        self.namespace = ns.metadata.name
        password = random.RandomPassword(f"{name}-grafana-admin", length=32, special=False, opts=child)
        self.grafana_admin_password = password.result  # secret: pulumi-random marks it so
        admin = k8s.core.v1.Secret(
            f"{name}-grafana-admin",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=GRAFANA_ADMIN_SECRET, namespace=self.namespace),
            type="Opaque",
            string_data={"admin-user": "admin", "admin-password": password.result},
            opts=child,
        )
        chart = Chart(CHART.name, args.chart_version, CHART.repo)
        self.release = release(
            f"{name}-stack",
            chart,
            values,
            pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[admin])),
            namespace=self.namespace,
        )
        after_crds = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[self.release]))
        k8s.core.v1.ConfigMap(
            f"{name}-dashboard",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="mlplat-model-service-dashboard", namespace=self.namespace, labels={DASHBOARD_LABEL: "1"}
            ),
            data={"mlplat-model-service.json": dashboard_json()},
            opts=child,
        )
        k8s.apiextensions.CustomResource(
            f"{name}-rules",
            api_version=MONITORING_API,
            kind="PrometheusRule",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="mlplat-model-service", namespace=self.namespace),
            spec={"groups": model_service_rule_groups(args.thresholds)},
            opts=after_crds,
        )
        # The cluster autoscaler (kube-system) exports per-node-group sizes: the GPU-pool-at-max alert reads them.
        service_monitor(
            "cluster-autoscaler", "kube-system", {"app.kubernetes.io/name": "aws-cluster-autoscaler"}, after_crds
        )
        for service, namespace in args.model_services.items():
            service_monitor(
                service,
                namespace,
                {"app.kubernetes.io/name": service, "app.kubernetes.io/component": "model-server"},
                after_crds,
                MODEL_SERVICE_RELABELINGS,
            )
        self.register_outputs({"namespace": self.namespace, "grafana_admin_password": self.grafana_admin_password})
