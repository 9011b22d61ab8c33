"""Prometheus, Grafana and Alertmanager on the cluster (kube-prometheus-stack), with mlplat's rules and dashboard.

The Prometheus Operator selects every ServiceMonitor and PrometheusRule in the cluster (not only those
labelled for this release). Each :class:`~mlplat.components.model_service.ModelService` named in
``model_services`` gets a ServiceMonitor whose series carry ``model_service`` and ``track`` (stable/canary)
labels, which the rules (:mod:`mlplat.components.monitoring_rules`) and the dashboard
(``dashboards/model-service.json``) group by. A team running its own Prometheus Operator can use
:func:`service_monitor` with :data:`MODEL_SERVICE_RELABELINGS` directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from mlplat.components.cluster_system import Chart, release
from mlplat.components.monitoring_rules import AlertThresholds, dashboard_json, model_service_rule_groups

CHART = Chart("kube-prometheus-stack", "75.15.0", "https://prometheus-community.github.io/helm-charts")
MONITORING_API = "monitoring.coreos.com/v1"
GRAFANA_ADMIN_SECRET = "grafana-admin"
DASHBOARD_LABEL = "grafana_dashboard"
"""The label Grafana's dashboard sidecar watches for (the chart's default)."""


@dataclass(frozen=True)
class MonitoringArgs:
    """Arguments of :class:`Monitoring`.

    Attributes:
        namespace: Namespace of the monitoring stack.
        chart_version: Pinned kube-prometheus-stack chart version (bump deliberately).
        prometheus_replicas: Prometheus replicas; 2 in production, so a node loss or an upgrade leaves one
            scraping (each replica scrapes everything: HA by duplication).
        retention: How long Prometheus keeps samples (Prometheus duration, e.g. ``15d``).
        storage_gb: Size of each Prometheus replica's persistent volume.
        storage_class: StorageClass of that volume (gp3 by default).
        alertmanager_replicas: Alertmanager replicas (they form a cluster and deduplicate notifications).
        thresholds: Thresholds of the model-service alerts.
        model_services: ModelServices to scrape, name -> namespace: one ServiceMonitor each, covering its
            stable and canary versions.
    """

    namespace: str = "monitoring"
    chart_version: str = CHART.version
    prometheus_replicas: int = 1
    retention: str = "15d"
    storage_gb: int = 50
    storage_class: str = "gp3"
    alertmanager_replicas: int = 1
    thresholds: AlertThresholds = field(default_factory=AlertThresholds)
    model_services: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("prometheus_replicas", "alertmanager_replicas", "storage_gb"):
            if getattr(self, name) < 1:
                raise ValueError(f"MonitoringArgs.{name}={getattr(self, name)}: must be >= 1")
        if not self.retention[:-1].isdigit() or self.retention[-1] not in "smhdwy":
            raise ValueError(f"MonitoringArgs.retention={self.retention!r}: expected a duration such as 15d or 12h")


def chart_values(args: MonitoringArgs) -> dict[str, Any]:
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
        "alertmanager": {"alertmanagerSpec": {"replicas": args.alertmanager_replicas}},
        "grafana": {
            "admin": {"existingSecret": GRAFANA_ADMIN_SECRET, "userKey": "admin-user", "passwordKey": "admin-password"},
            "sidecar": {"dashboards": {"enabled": True, "label": DASHBOARD_LABEL, "searchNamespace": "ALL"}},
        },
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
    endpoint: dict[str, Any] = {"port": "http", "path": "/metrics", "interval": "15s"}
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

    Outputs: ``namespace``, ``grafana_admin_password`` (secret), ``release`` (the Helm release; resources
    that need the operator's CRDs, e.g. ServiceMonitors, should depend on it).
    """

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplat:observability:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ns = k8s.core.v1.Namespace(f"{name}-ns", metadata=k8s.meta.v1.ObjectMetaArgs(name=args.namespace),
                                   opts=child)
        self.namespace = ns.metadata.name
        password = random.RandomPassword(f"{name}-grafana-admin", length=32, special=False, opts=child)
        self.grafana_admin_password: pulumi.Output[str] = password.result  # secret: pulumi-random marks it so
        admin = k8s.core.v1.Secret(
            f"{name}-grafana-admin",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=GRAFANA_ADMIN_SECRET, namespace=self.namespace),
            type="Opaque",
            string_data={"admin-user": "admin", "admin-password": password.result},
            opts=child,
        )
        chart = Chart(CHART.name, args.chart_version, CHART.repo)
        self.release = release(f"{name}-stack", chart, chart_values(args),
                               pulumi.ResourceOptions(parent=self, depends_on=[admin]), namespace=self.namespace)
        after_crds = pulumi.ResourceOptions(parent=self, depends_on=[self.release])
        k8s.core.v1.ConfigMap(
            f"{name}-dashboard",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="mlplat-model-service-dashboard", namespace=self.namespace,
                                                labels={DASHBOARD_LABEL: "1"}),
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
        service_monitor("cluster-autoscaler", "kube-system", {"app.kubernetes.io/name": "aws-cluster-autoscaler"},
                        after_crds)
        for service, namespace in args.model_services.items():
            service_monitor(service, namespace, {"app.kubernetes.io/name": service,
                                                 "app.kubernetes.io/component": "model-server"},
                            after_crds, MODEL_SERVICE_RELABELINGS)
        self.register_outputs({"namespace": self.namespace, "grafana_admin_password": self.grafana_admin_password})
