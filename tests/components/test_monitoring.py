"""Monitoring and alarms in the shipped stacks: kube-prometheus-stack, ServiceMonitors, rules, dashboard, CloudWatch."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlplat.components.alarms import AlarmThresholds
from mlplat.components.monitoring import (
    ALERTMANAGER_SERVICE_ACCOUNT,
    CHART,
    DASHBOARD_LABEL,
    GRAFANA_ADMIN_SECRET,
    SNS_SUBJECT,
    Monitoring,
    MonitoringArgs,
    alertmanager_config,
    alertmanager_policy,
)
from mlplat.components.monitoring_rules import AlertThresholds, dashboard_json, model_service_rule_groups
from mlplat.infra.engine import MASK, ProgramError, Render, ResourceRecord

RELEASE = "kubernetes:helm.sh/v3:Release"
CUSTOM = "kubernetes:monitoring.coreos.com/v1:{}"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


def custom(stack: Render, kind: str) -> list[ResourceRecord]:
    return stack.by_type(CUSTOM.format(kind))


def monitoring_release(stack: Render) -> ResourceRecord:
    (found,) = [r for r in stack.by_type(RELEASE) if r.inputs["chart"] == CHART.name]
    return found


def test_the_stack_is_a_pinned_chart_with_ha_prometheus_in_production(
    production_stack: Render, dev_stack: Render
) -> None:
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
    (secret,) = [
        r
        for r in production_stack.by_type("kubernetes:core/v1:Secret")
        if r.inputs["metadata"]["name"] == GRAFANA_ADMIN_SECRET
    ]
    assert secret.inputs["stringData"] == MASK, "the generated password never shows in the render"
    assert secret.inputs["metadata"]["namespace"] == "monitoring"
    assert secret.urn in monitoring_release(production_stack).options["depends_on"]


def test_each_model_service_has_a_service_monitor_on_its_services_port(production_stack: Render) -> None:
    services = [
        s
        for s in production_stack.by_type("kubernetes:core/v1:Service")
        if s.inputs["metadata"]["labels"].get("app.kubernetes.io/component") == "model-server"
    ]
    assert {s.inputs["metadata"]["labels"]["mlplat.io/track"] for s in services} == {"stable", "canary"}
    monitors = [
        m
        for m in custom(production_stack, "ServiceMonitor")
        if m.inputs["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/component") == "model-server"
    ]
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
    (dashboard,) = [
        c
        for c in production_stack.by_type("kubernetes:core/v1:ConfigMap")
        if c.inputs["metadata"].get("labels", {}).get(DASHBOARD_LABEL) == "1"
    ]
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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"prometheus_replicas": 0}, "MonitoringArgs.prometheus_replicas=0: must be >= 1"),
        ({"retention": "two weeks"}, "MonitoringArgs.retention='two weeks': expected a duration"),
        ({"sns_topic_arn": "mlplat-alarms"}, r"MonitoringArgs.sns_topic_arn='mlplat-alarms': not an SNS topic ARN"),
        ({"sns_topic_arn": "arn:aws:sqs:eu-west-1:123456789012:q"}, "not an SNS topic ARN"),
        ({"receiver": {"slack_configs": [{"channel": "#x"}]}}, "MonitoringArgs.receiver: needs a 'name'"),
        ({"receiver": {"name": "null", "slack_configs": [{}]}}, "needs a 'name' other than 'null' and 'sns'"),
        ({"receiver": {"name": "oncall"}}, r"MonitoringArgs.receiver 'oncall': no integration \(\*_configs\)"),
    ],
)
def test_bad_monitoring_args_name_the_field(args: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MonitoringArgs(**args)


def test_bad_alarm_thresholds_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"AlarmThresholds.evaluation_minutes=7: a multiple of 5"):
        AlarmThresholds(evaluation_minutes=7)


def test_the_dashboard_ships_as_package_data() -> None:
    from importlib.resources import files

    assert (files("mlplat.components.dashboards") / "model-service.json").read_text() == dashboard_json()


# --- Alertmanager: who gets paged -------------------------------------------------------------------------------

TOPIC = "arn:aws:sns:eu-west-1:123456789012:mlplat-alarms"
ROLE = "arn:aws:iam::123456789012:role/mlplat-alertmanager"
PAGERDUTY = {"name": "oncall", "pagerduty_configs": [{"routing_key": "0123456789abcdef0123456789abcdef"}]}
PAGED = {"namespace": "serving", "alertname": "ModelServerP99AboveSlo", "severity": "critical"}

# kube-prometheus-stack 75.15.0, charts/kube-prometheus-stack/values.yaml, alertmanager.config.inhibit_rules
UPSTREAM_INHIBIT_RULES = yaml.safe_load("""
- source_matchers: ['severity = critical']
  target_matchers: ['severity =~ warning|info']
  equal: ['namespace', 'alertname']
- source_matchers: ['severity = warning']
  target_matchers: ['severity = info']
  equal: ['namespace', 'alertname']
- source_matchers: ['alertname = InfoInhibitor']
  target_matchers: ['severity = info']
  equal: ['namespace']
- target_matchers: ['alertname = InfoInhibitor']
""")


RenderMonitoring = Callable[..., dict[str, Any]]


@pytest.fixture
def monitoring_values(on_cluster: Callable[[Callable[[pulumi.ResourceOptions], object]], Render]) -> RenderMonitoring:
    """Render a Monitoring with ``MonitoringArgs(**kwargs)`` and return its chart values, Outputs resolved."""

    def _values(**kwargs: Any) -> dict[str, Any]:
        stack = on_cluster(lambda opts: Monitoring("mon", MonitoringArgs(**kwargs), opts))
        values: dict[str, Any] = monitoring_release(stack).inputs["values"]
        return values

    return _values


# A small model of the documented schema (https://prometheus.io/docs/alerting/latest/configuration/, v0.28) for
# what this module writes: unknown keys are refused where the module writes them, so a typo fails here.
DURATION = r"^(\d+(ms|s|m|h|d|w|y))+$"
MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Sigv4(_Strict):
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    profile: str | None = None
    role_arn: str | None = None


class SnsConfig(_Strict):
    send_resolved: bool = True
    api_url: str | None = None
    sigv4: Sigv4 | None = None
    topic_arn: str | None = None
    subject: str | None = None
    phone_number: str | None = None
    target_arn: str | None = None
    message: str | None = None
    attributes: dict[str, str] | None = None


class Receiver(BaseModel):
    model_config = ConfigDict(extra="allow")  # the other integrations are the caller's own
    name: str
    sns_configs: list[SnsConfig] | None = None


class Route(_Strict):
    receiver: str | None = None
    group_by: list[str] | None = None
    continue_: bool = Field(False, alias="continue")
    matchers: list[str] = []
    group_wait: str | None = Field(None, pattern=DURATION)
    group_interval: str | None = Field(None, pattern=DURATION)
    repeat_interval: str | None = Field(None, pattern=DURATION)
    routes: list[Route] = []

    @field_validator("matchers")
    @classmethod
    def _matchers(cls, value: list[str]) -> list[str]:
        for matcher in value:
            assert MATCHER.match(matcher), f"not a matcher: {matcher!r}"
        return value


class InhibitRule(_Strict):
    source_matchers: list[str] = []
    target_matchers: list[str] = []
    equal: list[str] = []


class AlertmanagerConfig(_Strict):
    global_: dict[str, Any] = Field(alias="global")
    route: Route
    receivers: list[Receiver]
    inhibit_rules: list[InhibitRule] = []
    templates: list[str] = []


def validate(config: dict[str, Any]) -> AlertmanagerConfig:
    """What Alertmanager's config loader checks for this shape: schema, unique receivers, every route's exists."""
    parsed = AlertmanagerConfig.model_validate(config)
    names = [r.name for r in parsed.receivers]
    assert len(names) == len(set(names)), f"duplicate receivers: {names}"
    assert parsed.route.receiver and not parsed.route.matchers, "the root route needs a receiver and no matchers"

    def walk(route: Route) -> None:
        assert route.receiver is None or route.receiver in names, f"undefined receiver {route.receiver!r}"
        for child in route.routes:
            walk(child)

    walk(parsed.route)
    return parsed


def _matches(matchers: list[str], labels: dict[str, str]) -> bool:
    for matcher in matchers:
        found = MATCHER.match(matcher)
        assert found is not None
        name, op, value = found.groups()
        hit = re.fullmatch(value, labels.get(name, "")) if "~" in op else labels.get(name, "") == value
        if bool(hit) == op.startswith("!"):
            return False
    return True


def receivers_of(route: Route, labels: dict[str, str], inherited: str | None = None) -> list[str]:
    """Alertmanager's routing (dispatch/route.go Match): the first matching children, on while they continue."""
    receiver = route.receiver or inherited
    found: list[str] = []
    for child in route.routes:
        if _matches(child.matchers, labels):
            found += receivers_of(child, labels, receiver)
            if not child.continue_:
                break
    return found or [str(receiver)]


def test_alerts_page_the_sns_topic_in_its_region_with_resolved_notices(monitoring_values: RenderMonitoring) -> None:
    config = monitoring_values(sns_topic_arn=TOPIC, alertmanager_role_arn=ROLE)["alertmanager"]["config"]
    parsed = validate(config)
    assert receivers_of(parsed.route, PAGED) == ["sns"]
    assert receivers_of(parsed.route, {"alertname": "KubePodCrashLooping", "severity": "warning"}) == ["sns"]
    (sns,) = [r for r in config["receivers"] if r["name"] == "sns"]
    (target,) = sns["sns_configs"]
    assert target["topic_arn"] == TOPIC and target["send_resolved"] is True
    # Credentials come from the pod's default chain (IRSA): no keys, profile or role to assume in the config.
    assert target["sigv4"] == {"region": "eu-west-1"}
    route = config["route"]
    assert route["receiver"] == "sns" and set(route["group_by"]) == {"namespace", "alertname"}
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == ("30s", "5m", "4h")


def test_watchdog_and_info_inhibitor_stay_silent_and_upstream_inhibit_rules_are_kept(
    monitoring_values: RenderMonitoring,
) -> None:
    config = monitoring_values(sns_topic_arn=TOPIC, alertmanager_role_arn=ROLE)["alertmanager"]["config"]
    parsed = validate(config)
    for silent in ("Watchdog", "InfoInhibitor"):
        assert receivers_of(parsed.route, {"alertname": silent, "severity": "none"}) == ["null"]
    assert receivers_of(parsed.route, {"alertname": "WatchdogNot", "severity": "warning"}) == ["sns"]
    assert {"name": "null"} in config["receivers"]
    assert config["inhibit_rules"] == UPSTREAM_INHIBIT_RULES
    assert config["global"] == {"resolve_timeout": "5m"}
    assert config["templates"] == ["/etc/alertmanager/config/*.tmpl"]


def test_the_sns_subject_stays_under_the_publish_limit() -> None:
    # SNS refuses a Subject of 100 characters or more; Alertmanager does not truncate it. Python's re and Go's
    # RE2 agree on this pattern; "$1" is Go's spelling of "\1".
    (pattern, replacement) = re.findall(r'reReplaceAll "([^"]+)" "([^"]+)"', SNS_SUBJECT)[0]
    assert replacement == "$1"
    groups = "KubePersistentVolumeInodesFillingUp " + "team-" * 12 + "serving"
    cut = re.sub(pattern, r"\1", groups)
    assert len(cut) == 80 and groups.startswith(cut)
    assert re.sub(pattern, r"\1", "ModelServerP99AboveSlo serving") == "ModelServerP99AboveSlo serving"
    prefix = "[FIRING:9999] "  # what precedes the labels, at its longest for fewer than 10000 alerts
    assert len(prefix) + len(cut) < 100


def test_alertmanager_service_account_carries_the_irsa_role(monitoring_values: RenderMonitoring) -> None:
    account = monitoring_values(sns_topic_arn=TOPIC, alertmanager_role_arn=ROLE)["alertmanager"]["serviceAccount"]
    assert account == {
        "create": True,
        "name": ALERTMANAGER_SERVICE_ACCOUNT,
        "annotations": {"eks.amazonaws.com/role-arn": ROLE},
    }
    # The chart's own name for it: <fullname>-alertmanager, fullname being the release name (the chart's name).
    assert f"{CHART.name}-alertmanager" == ALERTMANAGER_SERVICE_ACCOUNT


def test_alertmanager_may_publish_to_exactly_the_topic(render_program: Callable[..., Render]) -> None:
    stack = render_program(lambda: aws.iam.Policy("alertmanager", policy=alertmanager_policy(TOPIC)))
    (statement,) = json.loads(stack.one("aws:iam/policy:Policy").inputs["policy"])["Statement"]
    assert statement["Effect"] == "Allow" and statement["Action"] == ["sns:Publish"]
    assert statement["Resource"] == [TOPIC]


def test_control_plane_eks_does_not_expose_is_neither_scraped_nor_alerted_on(
    monitoring_values: RenderMonitoring,
) -> None:
    values = monitoring_values(sns_topic_arn=TOPIC, alertmanager_role_arn=ROLE)
    for component in ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy"):
        assert values[component] == {"enabled": False}, component
    # defaultRules.rules keys of kube-prometheus-stack 75.15.0 (values.yaml) for those components' rule groups.
    rules = values["defaultRules"]["rules"]
    assert rules == {
        "kubeControllerManager": False,
        "kubeSchedulerAlerting": False,
        "kubeSchedulerRecording": False,
        "etcd": False,
        "kubeProxy": False,
    }
    assert "kubeApiServer" not in values and "kubelet" not in values, "what EKS does expose is still scraped"


def test_a_monitoring_without_a_receiver_is_an_error(
    on_cluster: Callable[[Callable[[pulumi.ResourceOptions], object]], Render],
) -> None:
    with pytest.raises(ValueError, match="Monitoring has no alert receiver"):
        alertmanager_config(MonitoringArgs())
    with pytest.raises(ProgramError, match=r"Monitoring has no alert receiver: set MonitoringArgs\.sns_topic_arn"):
        on_cluster(lambda opts: Monitoring("mon", MonitoringArgs(), opts))


def test_opting_out_of_a_receiver_keeps_upstreams_null_route(monitoring_values: RenderMonitoring) -> None:
    values = monitoring_values(alerts_receiver_optional=True)
    parsed = validate(values["alertmanager"]["config"])
    assert receivers_of(parsed.route, PAGED) == ["null"]
    assert values["alertmanager"]["serviceAccount"]["annotations"] == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"sns_topic_arn": TOPIC}, "sns_topic_arn needs alertmanager_role_arn"),
        (
            {"alertmanager_role_arn": ROLE, "receiver": PAGERDUTY},
            "alertmanager_role_arn is set but sns_topic_arn is not",
        ),
    ],
)
def test_the_topic_and_the_irsa_role_go_together(args: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        alertmanager_config(MonitoringArgs(**args))


def test_a_receiver_of_your_own_gets_every_alert(monitoring_values: RenderMonitoring) -> None:
    values = monitoring_values(receiver=PAGERDUTY)
    config = values["alertmanager"]["config"]
    parsed = validate(config)
    assert receivers_of(parsed.route, PAGED) == ["oncall"]
    assert receivers_of(parsed.route, {"alertname": "Watchdog"}) == ["null"]
    assert PAGERDUTY in config["receivers"] and not [r for r in config["receivers"] if r["name"] == "sns"]
    both = validate(
        monitoring_values(sns_topic_arn=TOPIC, alertmanager_role_arn=ROLE, receiver=PAGERDUTY)["alertmanager"]["config"]
    )
    assert receivers_of(both.route, PAGED) == ["sns", "oncall"]
    assert receivers_of(both.route, {"alertname": "Watchdog"}) == ["null"]


AMTOOL = os.environ.get("AMTOOL") or shutil.which("amtool")


# .ci/run installs amtool (Debian's prometheus-alertmanager), so in CI a missing amtool fails instead of skipping.
@pytest.mark.skipif(
    AMTOOL is None and not os.environ.get("CI"), reason="amtool not installed (set AMTOOL=/path/to/amtool to run)"
)
def test_alertmanager_itself_accepts_the_config_and_routes_as_intended(
    monitoring_values: RenderMonitoring, tmp_path: Path
) -> None:
    config = monitoring_values(sns_topic_arn=TOPIC, alertmanager_role_arn=ROLE, receiver=PAGERDUTY)["alertmanager"][
        "config"
    ]
    path = tmp_path / "alertmanager.yaml"
    path.write_text(yaml.safe_dump(config))
    assert AMTOOL is not None
    checked = subprocess.run([AMTOOL, "check-config", str(path)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    def route(*labels: str) -> str:
        out = subprocess.run(
            [AMTOOL, "config", "routes", "test", f"--config.file={path}", *labels],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()

    assert route("alertname=Watchdog") == route("alertname=InfoInhibitor") == "null"
    assert route(*(f"{k}={v}" for k, v in PAGED.items())) == "sns,oncall"
    (sns,) = [r["sns_configs"][0] for r in config["receivers"] if r["name"] == "sns"]
    (tmp_path / "none.tmpl").write_text("")
    for template in (sns["subject"], sns["message"]):  # rendered on amtool's example data
        rendered = subprocess.run(
            [AMTOOL, "template", "render", f"--template.glob={tmp_path / 'none.tmpl'}", f"--template.text={template}"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert rendered.returncode == 0 and rendered.stdout.strip(), rendered.stderr


@pytest.mark.parametrize("stack_name", ["production", "dev"])
def test_shipped_stacks_page_the_alarm_topic_through_alertmanagers_own_role(
    stack_name: str, request: pytest.FixtureRequest
) -> None:
    stack: Render = request.getfixturevalue(f"{stack_name}_stack")
    (subscription, *_) = stack.by_type("aws:sns/topicSubscription:TopicSubscription")
    topic_arn = subscription.inputs["topic"]  # the alarm topic's ARN, as its subscribers see it
    assert topic_arn.endswith(stack.one("aws:sns/topic:Topic").id or "?")
    alertmanager = monitoring_release(stack).inputs["values"]["alertmanager"]
    (sns,) = [r["sns_configs"] for r in alertmanager["config"]["receivers"] if r["name"] == "sns"]
    assert sns[0]["topic_arn"] == topic_arn and sns[0]["sigv4"]["region"] == topic_arn.split(":")[3]
    role_arn = alertmanager["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"]
    (role,) = [r for r in stack.by_type("aws:iam/role:Role") if role_arn.endswith(f":role/{r.id}")]
    (trust,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    subjects = [v for k, v in trust["Condition"]["StringEquals"].items() if k.endswith(":sub")]
    assert subjects == [f"system:serviceaccount:monitoring:{ALERTMANAGER_SERVICE_ACCOUNT}"]
    (grant,) = [p for p in stack.by_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == role.id]
    (statement,) = json.loads(grant.inputs["policy"])["Statement"]
    assert statement["Action"] == ["sns:Publish"] and statement["Resource"] == [topic_arn]
