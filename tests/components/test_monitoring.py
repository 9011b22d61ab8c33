"""Monitoring and alarms in the shipped stacks: kube-prometheus-stack, ServiceMonitors, rules, dashboard, CloudWatch."""

from __future__ import annotations

import json

import pytest

from mlplat.components.alarms import AlarmThresholds
from mlplat.components.monitoring import CHART, DASHBOARD_LABEL, GRAFANA_ADMIN_SECRET, MonitoringArgs
from mlplat.components.monitoring_rules import AlertThresholds, dashboard_json, model_service_rule_groups
from mlplat.infra.engine import MASK, Render, ResourceRecord

RELEASE = "kubernetes:helm.sh/v3:Release"
CUSTOM = "kubernetes:monitoring.coreos.com/v1:{}"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


def custom(stack: Render, kind: str) -> list[ResourceRecord]:
    return stack.by_type(CUSTOM.format(kind))


def monitoring_release(stack: Render) -> ResourceRecord:
    (found,) = [r for r in stack.by_type(RELEASE) if r.inputs["chart"] == CHART.name]
    return found


def test_the_stack_is_a_pinned_chart_with_ha_prometheus_in_production(production_stack: Render,
                                                                        dev_stack: Render) -> None:
    prod, dev = monitoring_release(production_stack), monitoring_release(dev_stack)
    assert prod.inputs["version"] == CHART.version and prod.inputs["namespace"] == "monitoring"
    spec = prod.inputs["values"]["prometheus"]["prometheusSpec"]
    assert spec["replicas"] == 2 and spec["retention"] == "30d"
    claim = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == "gp3" and claim["resources"]["requests"]["storage"] == "200Gi"
    assert spec["serviceMonitorSelectorNilUsesHelmValues"] is False and spec["ruleSelectorNilUsesHelmValues"] is False
    assert dev.inputs["values"]["prometheus"]["prometheusSpec"]["replicas"] == 1


def test_grafana_reads_a_generated_admin_password_that_stays_secret(production_stack: Render) -> None:
    grafana = monitoring_release(production_stack).inputs["values"]["grafana"]
    assert grafana["admin"]["existingSecret"] == GRAFANA_ADMIN_SECRET
    (secret,) = [r for r in production_stack.by_type("kubernetes:core/v1:Secret")
                 if r.inputs["metadata"]["name"] == GRAFANA_ADMIN_SECRET]
    assert secret.inputs["stringData"] == MASK, "the generated password never shows in the render"
    assert secret.inputs["metadata"]["namespace"] == "monitoring"
    assert secret.urn in monitoring_release(production_stack).options["depends_on"]


def test_each_model_service_has_a_service_monitor_on_its_services_port(production_stack: Render) -> None:
    services = [s for s in production_stack.by_type("kubernetes:core/v1:Service")
                if s.inputs["metadata"]["labels"].get("app.kubernetes.io/component") == "model-server"]
    assert {s.inputs["metadata"]["labels"]["mlplat.io/track"] for s in services} == {"stable", "canary"}
    monitors = [m for m in custom(production_stack, "ServiceMonitor")
                if m.inputs["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/component") == "model-server"]
    assert len(monitors) == 1
    (monitor,) = monitors
    selector = monitor.inputs["spec"]["selector"]["matchLabels"]
    for service in services:  # the one monitor selects both versions' Services, on their named port
        assert selector.items() <= service.inputs["metadata"]["labels"].items()
        assert monitor.inputs["metadata"]["namespace"] == service.inputs["metadata"]["namespace"]
    (endpoint,) = monitor.inputs["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in services[0].inputs["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert {r["targetLabel"] for r in endpoint["relabelings"]} == {"model_service", "track"}
    release = monitoring_release(production_stack)
    assert release.urn in monitor.options["depends_on"], "the CRDs come with the chart"


def test_rules_use_the_stack_thresholds_and_the_dashboard_is_provisioned(production_stack: Render) -> None:
    (rule,) = custom(production_stack, "PrometheusRule")
    expected = model_service_rule_groups(AlertThresholds(p99_latency_seconds=0.1, error_ratio=0.005, drift_psi=0.2))
    assert rule.inputs["spec"]["groups"] == json.loads(json.dumps(expected))
    assert monitoring_release(production_stack).urn in rule.options["depends_on"]
    (dashboard,) = [c for c in production_stack.by_type("kubernetes:core/v1:ConfigMap")
                    if c.inputs["metadata"].get("labels", {}).get(DASHBOARD_LABEL) == "1"]
    (text,) = dashboard.inputs["data"].values()
    assert text == dashboard_json() and json.loads(text)["uid"]


def test_cloudwatch_alarms_watch_rds_every_nat_and_the_control_plane(production_stack: Render) -> None:
    topic = production_stack.one("aws:sns/topic:Topic")
    (subscription,) = production_stack.by_type("aws:sns/topicSubscription:TopicSubscription")
    assert subscription.inputs["endpoint"] == "ml-platform-oncall@example.com"
    assert subscription.inputs["protocol"] == "email" and subscription.inputs["topic"].endswith(f"topic/{topic.id}")
    alarms = production_stack.by_type(ALARM)
    for alarm in alarms:
        assert alarm.inputs["alarmActions"] == alarm.inputs["okActions"] == [subscription.inputs["topic"]]
        assert alarm.inputs["alarmDescription"]
    by_metric: dict[tuple[str, str], list[ResourceRecord]] = {}
    for alarm in alarms:
        by_metric.setdefault((alarm.inputs["namespace"], alarm.inputs["metricName"]), []).append(alarm)
    database = production_stack.one("aws:rds/instance:Instance")
    for metric in ("CPUUtilization", "FreeStorageSpace", "DatabaseConnections"):
        (alarm,) = by_metric[("AWS/RDS", metric)]
        assert alarm.inputs["dimensions"] == {"DBInstanceIdentifier": database.id}  # the id is the identifier
    nats = {n.id for n in production_stack.by_type("aws:ec2/natGateway:NatGateway")}
    assert len(nats) == 3
    for metric in ("ErrorPortAllocation", "PacketsDropCount"):
        assert {a.inputs["dimensions"]["NatGatewayId"] for a in by_metric[("AWS/NATGateway", metric)]} == nats
    (eks,) = by_metric[("AWS/EKS", "apiserver_request_total_5XX")]
    assert eks.inputs["dimensions"]["ClusterName"] == production_stack.outputs["clusterName"]


def test_dev_has_one_nat_alarm_pair_and_its_own_subscriber(dev_stack: Render) -> None:
    (subscription,) = dev_stack.by_type("aws:sns/topicSubscription:TopicSubscription")
    assert subscription.inputs["endpoint"] == "ml-platform-dev@example.com"
    assert len([a for a in dev_stack.by_type(ALARM) if a.inputs["namespace"] == "AWS/NATGateway"]) == 2


@pytest.mark.parametrize(("args", "message"), [
    ({"prometheus_replicas": 0}, "MonitoringArgs.prometheus_replicas=0: must be >= 1"),
    ({"retention": "two weeks"}, "MonitoringArgs.retention='two weeks': expected a duration"),
])
def test_bad_monitoring_args_name_the_field(args: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MonitoringArgs(**args)  # type: ignore[arg-type]


def test_bad_alarm_thresholds_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"AlarmThresholds.evaluation_minutes=7: a multiple of 5"):
        AlarmThresholds(evaluation_minutes=7)


def test_the_dashboard_ships_as_package_data() -> None:
    from importlib.resources import files

    assert (files("mlplat.components.dashboards") / "model-service.json").read_text() == dashboard_json()
