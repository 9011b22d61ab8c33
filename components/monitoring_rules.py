"""Alert rules and the Grafana dashboard of the model server, as plain data.

The model server (:mod:`mlplat.serving.metrics`, :mod:`mlplat.serving.drift`) exports ``mlplat_*`` series at
``GET /metrics``. Prometheus scrapes every version of a :class:`~mlplat.components.model_service.ModelService`
through a ServiceMonitor whose relabelings add two labels to each series:

- ``model_service``: the ModelService's name (e.g. ``digits``), from the Service's ``app.kubernetes.io/name``;
- ``track``: ``stable`` or ``canary``, from the Service's ``mlplat.io/track``.

Every per-service expression here aggregates ``by (model_service, track)``, so the canary and the stable
version are alerted on and drawn side by side. :func:`model_service_rule_groups` gives the ``spec.groups`` of a
``monitoring.coreos.com/v1`` PrometheusRule; :func:`dashboard_json` gives the dashboard
(``dashboards/model-service.json``, shipped as package data). Series the platform reads from other exporters
are listed in :data:`EXTERNAL_METRICS`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import ValidationInfo, field_validator

from mlplat.components.spec import Spec

INFERENCE_ROUTES: tuple[str, ...] = ("/predict", "/v2/models/{name}/infer")
"""The ``route`` label values the server gives its inference requests (the V2 route, versioned or not, is one)."""

SERVICE_LABELS = ("model_service", "track")
"""The labels the ServiceMonitor's relabelings add to every model-server series."""

SERVER_CONTAINER = "server"
"""The name of the model-server container in a ModelService's pods."""

GPU_NODE_GROUP_PATTERN = ".*gpu.*"
"""Regex on the cluster-autoscaler's ``node_group`` label (the ASG name) that picks the GPU node groups."""

EXTERNAL_METRICS: Mapping[str, str] = MappingProxyType(
    {
        "kube_pod_container_status_waiting_reason": "kube-state-metrics",
        "kube_pod_container_status_restarts_total": "kube-state-metrics",
        "cluster_autoscaler_node_group_target_count": "cluster-autoscaler (--emit-per-nodegroup-metrics)",
        "cluster_autoscaler_node_group_max_count": "cluster-autoscaler (--emit-per-nodegroup-metrics)",
        "DCGM_FI_DEV_GPU_UTIL": "NVIDIA DCGM exporter",
    }
)
"""Metric name -> the exporter that provides it, for the names the rules and dashboard read that the model
server does not export itself."""

DASHBOARD_FILE: Path = Path(__file__).parent / "dashboards" / "model-service.json"
"""The Grafana dashboard of the model server (uid ``mlplat-model-service``)."""

_REGEX_META = frozenset("\\.+*?()|[]{}^$")


class AlertThresholds(Spec):
    """Thresholds of the model-service alerts."""

    p99_latency_seconds: float = 0.25
    """SLO on the p99 latency of the inference routes, in seconds (> 0)."""
    error_ratio: float = 0.01
    """Largest acceptable share of inference requests answered with a 5xx status (between 0 and 1, exclusive)."""
    queue_depth: float = 64
    """Requests queued per pod, on average over a service's pods, that mean the service is saturated (> 0)."""
    drift_psi: float = 0.2
    """Population stability index of one input feature above which its distribution has shifted (> 0)."""
    canary_margin: float = 1.5
    """The canary alerts when its p99 latency or its error ratio exceeds the stable one times this (>= 1)."""
    for_minutes: int = 5
    """How long a condition must hold before its alert fires, in minutes (0 to 1440)."""
    drift_min_window_rows: int = 500
    """Rows the drift window must hold before PSI is trusted; smaller windows give noisy PSI (>= 1)."""

    @field_validator("*", mode="before")
    @classmethod
    def _number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{info.field_name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{info.field_name} must be a finite number, got {value!r}")
        return value

    @field_validator("for_minutes", "drift_min_window_rows", mode="before")
    @classmethod
    def _whole(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, int):
            what = "number of minutes from 0 to 1440" if info.field_name == "for_minutes" else "number >= 1"
            raise ValueError(f"{info.field_name} must be a whole {what}, got {value!r}")
        return value

    @field_validator("*")
    @classmethod
    def _range(cls, value: Any, info: ValidationInfo) -> Any:
        problem = {
            "p99_latency_seconds": (value <= 0, f"p99_latency_seconds must be > 0 seconds, got {value}"),
            "error_ratio": (not 0 < value < 1, f"error_ratio must be between 0 and 1 (exclusive), got {value}"),
            "queue_depth": (value <= 0, f"queue_depth must be > 0 requests, got {value}"),
            "drift_psi": (value <= 0, f"drift_psi must be > 0, got {value}"),
            "canary_margin": (value < 1, f"canary_margin must be >= 1 (a factor over the stable version), got {value}"),
            "for_minutes": (
                not 0 <= value <= 1440,
                f"for_minutes must be a whole number of minutes from 0 to 1440, got {value}",
            ),
            "drift_min_window_rows": (value < 1, f"drift_min_window_rows must be a whole number >= 1, got {value}"),
        }[str(info.field_name)]
        if problem[0]:
            raise ValueError(problem[1])
        return value


def _num(value: float) -> str:
    """A PromQL number literal for `value` (exact, no trailing ``.0``)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _promql_string(text: str) -> str:
    """`text` as a double-quoted PromQL string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _regex_alternatives(values: tuple[str, ...]) -> str:
    """A RE2 regex (unanchored text; Prometheus anchors it) matching exactly one of `values`."""
    return "|".join("".join("\\" + c if c in _REGEX_META else c for c in v) for v in values)


INFERENCE_ROUTE_MATCHER = "route=~" + _promql_string(_regex_alternatives(INFERENCE_ROUTES))
"""The label matcher that selects the inference routes, e.g. inside ``mlplat_requests_total{...}``."""

_BY = "by (model_service, track)"


def _p99(selector: str, by: str) -> str:
    return (
        f"histogram_quantile(0.99, sum by ({by}, le) (rate(mlplat_request_duration_seconds_bucket{{{selector}}}[5m])))"
    )


def _error_ratio(selector: str, by: str) -> str:
    return (
        f'sum by ({by}) (rate(mlplat_requests_total{{{selector}, status=~"5.."}}[5m]))'
        f" / sum by ({by}) (rate(mlplat_requests_total{{{selector}}}[5m]))"
    )


def _annotations(summary: str, description: str, runbook: str) -> dict[str, str]:
    return {"summary": summary, "description": description, "runbook": runbook}


def _model_service_rules(t: AlertThresholds) -> list[dict[str, Any]]:
    routes = INFERENCE_ROUTE_MATCHER
    canary, stable = f'{routes}, track="canary"', f'{routes}, track="stable"'
    for_ = f"{t.for_minutes}m"
    canary_latency = (
        f"{_p99(canary, 'model_service, track')} > on(model_service) "
        f"{_num(t.canary_margin)} * {_p99(stable, 'model_service')}"
    )
    # An error ratio a margin above a stable ratio of (nearly) zero is noise: the canary must also pass a tenth
    # of the error-ratio threshold.
    canary_errors = (
        f"({_error_ratio(canary, 'model_service, track')}) > on(model_service) "
        f"clamp_min({_num(t.canary_margin)} * ({_error_ratio(stable, 'model_service')}), {_num(t.error_ratio / 10)})"
    )
    return [
        {
            "alert": "ModelServerP99AboveSlo",
            "expr": f"{_p99(routes, 'model_service, track')} > {_num(t.p99_latency_seconds)}",
            "for": for_,
            "labels": {"severity": "warning"},
            "annotations": _annotations(
                "{{ $labels.model_service }} ({{ $labels.track }}): p99 inference latency above the SLO",
                f"p99 latency of /predict and V2 infer is {{{{ $value | humanizeDuration }}}} "
                f"(SLO {_num(t.p99_latency_seconds)}s) for {for_}.",
                "Check the dashboard's queue depth, batch size and inference time for this track; if the queue "
                "is full scale out (replicas/GPU nodes), if inference time rose roll back the latest model version.",
            ),
        },
        {
            "alert": "ModelServerErrorRateHigh",
            "expr": f"({_error_ratio(routes, 'model_service, track')}) > {_num(t.error_ratio)}",
            "for": for_,
            "labels": {"severity": "critical"},
            "annotations": _annotations(
                "{{ $labels.model_service }} ({{ $labels.track }}): inference requests failing with 5xx",
                f"{{{{ $value | humanizePercentage }}}} of inference requests answered 5xx "
                f"(threshold {_num(t.error_ratio)}) for {for_}.",
                "Read the server pods' logs for 'unhandled error' and 503s (queue full/timeouts); if only the "
                "canary fails shift traffic back to stable, otherwise roll back to the last good model version.",
            ),
        },
        {
            "alert": "ModelServerQueueSaturated",
            "expr": f"avg {_BY} (mlplat_queue_depth) > {_num(t.queue_depth)}",
            "for": for_,
            "labels": {"severity": "warning"},
            "annotations": _annotations(
                "{{ $labels.model_service }} ({{ $labels.track }}): request queue saturated",
                f"On average {{{{ $value }}}} requests wait per pod (threshold {_num(t.queue_depth)}) for {for_}.",
                "Check the HPA and pending pods (kubectl get hpa,pods); raise max replicas or GPU node capacity, "
                "or the batch size if inference time per batch is low.",
            ),
        },
        {
            # The server starts unready and keeps retrying a model it cannot load (not registered yet, MLflow
            # down, refused): readiness keeps it out of traffic, so without this nobody learns it is waiting.
            "alert": "ModelNotLoaded",
            "expr": f"min {_BY} (mlplat_model_loaded) == 0",
            "for": for_,
            "labels": {"severity": "warning"},
            "annotations": _annotations(
                "{{ $labels.model_service }} ({{ $labels.track }}): a server is still waiting for its model",
                f"At least one pod has not loaded its model for {for_}; it answers readiness 503 and serves nothing.",
                "Read the pod's readiness body or log (curl /v2/health/ready): register or promote the model the "
                "URI names, fix MLflow access, or allowPickle for a pickled model.",
            ),
        },
        {
            "alert": "ModelFeatureDrift",
            "expr": (
                f"max by (model_service, track, feature) (mlplat_feature_drift_psi) > {_num(t.drift_psi)}"
                f" and on(model_service, track) min {_BY} (mlplat_drift_window_rows)"
                f" >= {t.drift_min_window_rows}"
            ),
            "for": for_,
            "labels": {"severity": "warning"},
            "annotations": _annotations(
                "{{ $labels.model_service }} ({{ $labels.track }}): input feature {{ $labels.feature }} drifted",
                f"PSI of feature {{{{ $labels.feature }}}} against the training reference is {{{{ $value }}}} "
                f"(threshold {_num(t.drift_psi)}) for {for_}.",
                "Compare the feature's recent inputs with the training data (dashboard drift panel, upstream "
                "pipeline changes); if the shift is real, retrain on recent data and promote the new version.",
            ),
        },
        {
            "alert": "CanaryWorseThanStable",
            "expr": f"({canary_latency}) or ({canary_errors})",
            "for": for_,
            "labels": {"severity": "warning"},
            "annotations": _annotations(
                "{{ $labels.model_service }}: canary is worse than stable",
                f"The canary's p99 latency or 5xx ratio is more than {_num(t.canary_margin)}x the stable "
                f"version's (value {{{{ $value }}}}) for {for_}.",
                "Compare canary and stable on the dashboard; stop the rollout and set the canary weight to 0 "
                "until the canary's model version is fixed.",
            ),
        },
    ]


def _platform_rules(t: AlertThresholds) -> list[dict[str, Any]]:
    for_ = f"{t.for_minutes}m"
    # Deployments are named <model_service>-<track>, so their pods are <model_service>-<track>-<rs>-<id>.
    pod_regex = _promql_string("(.+)-(stable|canary)-[a-z0-9]+-[a-z0-9]+")
    server = f'container="{SERVER_CONTAINER}", pod=~{pod_regex}'
    crashing = (
        f'max by (namespace, pod) (kube_pod_container_status_waiting_reason{{{server}, reason="CrashLoopBackOff"}}) > 0'
        f" or max by (namespace, pod) (increase(kube_pod_container_status_restarts_total{{{server}}}[15m])) > 3"
    )
    crash_expr = (
        f'label_replace(label_replace({crashing}, "model_service", "$1", "pod", {pod_regex}),'
        f' "track", "$2", "pod", {pod_regex})'
    )
    node_group = f"node_group=~{_promql_string(GPU_NODE_GROUP_PATTERN)}"
    return [
        {
            "alert": "ModelServerPodCrashLooping",
            "expr": crash_expr,
            "for": for_,
            "labels": {"severity": "critical"},
            "annotations": _annotations(
                "{{ $labels.namespace }}/{{ $labels.pod }}: model server container is crash-looping",
                "The 'server' container of {{ $labels.model_service }} ({{ $labels.track }}) is in "
                "CrashLoopBackOff or restarted more than 3 times in 15 minutes.",
                "Run kubectl logs --previous on the pod and kubectl describe pod: model load failure, OOMKilled "
                "or failing probes; fix the model URI/resources or roll back the version.",
            ),
        },
        {
            "alert": "GpuNodeGroupAtMax",
            "expr": (
                f"max by (node_group) (cluster_autoscaler_node_group_target_count{{{node_group}}})"
                f" >= on(node_group) max by (node_group) (cluster_autoscaler_node_group_max_count{{{node_group}}})"
            ),
            "for": for_,
            "labels": {"severity": "warning"},
            "annotations": _annotations(
                "GPU node group {{ $labels.node_group }} is at its maximum size",
                "The cluster-autoscaler wants as many nodes as the group's max size; new GPU pods will stay Pending.",
                "Check Pending pods and the autoscaler's logs; raise the node pool's max_size (and the EC2 GPU "
                "quota) or lower replicas of lower-priority GPU workloads.",
            ),
        },
    ]


def model_service_rule_groups(thresholds: AlertThresholds = AlertThresholds()) -> list[dict[str, Any]]:
    """The `spec.groups` of a monitoring.coreos.com/v1 PrometheusRule.

    Group ``mlplat-model-service`` holds the alerts on the model server's own series (latency SLO, 5xx ratio,
    queue saturation, feature drift, canary vs stable); group ``mlplat-platform`` those on kube-state-metrics
    and cluster-autoscaler series (crash-looping server containers, GPU node groups at their maximum).
    """
    return [
        {"name": "mlplat-model-service", "rules": _model_service_rules(thresholds)},
        {"name": "mlplat-platform", "rules": _platform_rules(thresholds)},
    ]


def dashboard_json() -> str:
    """The text of the model server's Grafana dashboard (:data:`DASHBOARD_FILE`)."""
    return DASHBOARD_FILE.read_text(encoding="utf-8")


_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "inf",
        "nan",
        "atan2",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', re.DOTALL)
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"((?:[^"\\]|\\.)*)"')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE)
_FUNCTION_CALL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\s*\(")
_IDENTIFIER = re.compile(r"(?<![\w.:$])[a-zA-Z_:][a-zA-Z0-9_:]*")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads.

    Strings (label values, regexes, ``label_replace`` arguments), label matchers inside ``{...}`` (except an
    exact ``__name__="..."``), ranges and durations in ``[...]``, label lists of ``by``/``without``/``on``/
    ``ignoring``/``group_left``/``group_right``, function and aggregation names, keywords and numbers are not
    metric names. Grafana variables (``$model_service``, ``$__rate_interval``) are ignored.
    """
    names = {m.group(1) for m in _NAME_MATCHER.finditer(expr)}
    text = _STRING.sub('""', expr)
    previous = None
    while previous != text:  # innermost first, so subqueries and nested brackets go too
        previous = text
        text = _BRACKETS.sub(" ", _BRACES.sub(" ", text))
    text = _LABEL_LIST.sub(" ", text)
    text = _FUNCTION_CALL.sub(" (", text)
    names.update(n for n in _IDENTIFIER.findall(text) if n.lower() not in _KEYWORDS)
    return names
