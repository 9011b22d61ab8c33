"""The model server's alert rules and Grafana dashboard: they read only series that really exist.

A real model server (an MLflow MLP with reference stats, served on loopback) is started once; its `/metrics`
after a few inference requests is the ground truth for the metric names and label values the rules and the
dashboard use.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

# The serving tests' helpers: real torch models saved as MLflow models, uvicorn on loopback.
from support.serving import FEATURES, make_mlp, run_server, save_mlflow_model, training_inputs

from mlplat.components.monitoring_rules import (
    DASHBOARD_FILE,
    EXTERNAL_METRICS,
    INFERENCE_ROUTE_MATCHER,
    INFERENCE_ROUTES,
    AlertThresholds,
    dashboard_json,
    model_service_rule_groups,
    promql_metric_names,
)
from mlplat.serving.app import create_app
from mlplat.serving.settings import ServingSettings

ALERTS = {
    "ModelServerP99AboveSlo",
    "ModelServerErrorRateHigh",
    "ModelServerQueueSaturated",
    "ModelNotLoaded",
    "ModelFeatureDrift",
    "CanaryWorseThanStable",
    "ModelServerPodCrashLooping",
    "GpuNodeGroupAtMax",
}
PANELS = [
    "Request rate",
    "Error rate",
    "Latency p50 / p95 / p99",
    "Batch size",
    "Queue depth",
    "Inference time p50 / p99",
    "Feature drift",
    "Model version",
    "GPU utilisation",
]


@dataclasses.dataclass(frozen=True)
class Exposition:
    """What a running server exported: sample names and the label values of its request counter."""

    sample_names: frozenset[str]
    routes: frozenset[str]
    statuses: frozenset[str]


@pytest.fixture(scope="module")
def exposition(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exposition]:
    """Serve an MLflow model with reference stats, send inference requests on both routes, read /metrics."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("MLPLAT_SERVING_"):
                mp.delenv(name)
        path = save_mlflow_model(make_mlp(), tmp_path_factory.mktemp("monitoring") / "mlp", reference_stats=True)
        with run_server(create_app(ServingSettings(model_uri=str(path)))) as live:
            model = live.app.model
            assert model is not None
            rows = training_inputs(4)
            tensor = {"name": "input-0", "shape": [4, FEATURES], "datatype": "FP32", "data": rows.ravel().tolist()}
            with live.client() as client:
                assert client.post("/predict", json={"inputs": rows.tolist()}).status_code == 200
                v2 = f"/v2/models/{model.name}"
                for url in (f"{v2}/infer", f"{v2}/versions/{model.version}/infer"):
                    assert client.post(url, json={"inputs": [tensor]}).status_code == 200
                client.get("/v2/health/ready")
                text = client.get("/metrics").text
    names, routes, statuses = set(), set(), set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.add(sample.name)
            if sample.name == "mlplat_requests_total":
                routes.add(sample.labels["route"])
                statuses.add(sample.labels["status"])
    yield Exposition(frozenset(names), frozenset(routes), frozenset(statuses))


def all_rules(thresholds: AlertThresholds = AlertThresholds()) -> list[dict[str, Any]]:
    return [rule for group in model_service_rule_groups(thresholds) for rule in group["rules"]]


def rule(name: str, thresholds: AlertThresholds = AlertThresholds()) -> dict[str, Any]:
    return next(r for r in all_rules(thresholds) if r["alert"] == name)


def dashboard() -> dict[str, Any]:
    return json.loads(dashboard_json())


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def panel(title_prefix: str) -> dict[str, Any]:
    matches = [p for p in dashboard()["panels"] if p["title"].startswith(title_prefix)]
    assert len(matches) == 1, f"panel {title_prefix!r}: {[p['title'] for p in dashboard()['panels']]}"
    return matches[0]


def without_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


SELECTOR = re.compile(r'mlplat_request\w*\{(?:"(?:[^"\\]|\\.)*"|[^}"])*\}')
"""A request-metric selector with its label matchers (braces inside quoted values included)."""


def balanced(expr: str) -> bool:
    pairs, stack = {")": "(", "]": "[", "}": "{"}, []
    for c in without_strings(expr):
        if c in "([{":
            stack.append(c)
        elif c in pairs and (not stack or stack.pop() != pairs[c]):
            return False
    return not stack


def unquote_promql(literal: str) -> str:
    """The value of a double-quoted PromQL string (only \\\\ and \\" escapes, as the module writes them)."""
    assert literal.startswith('"') and literal.endswith('"')
    return re.sub(r"\\(.)", r"\1", literal[1:-1])


# -- the running server is the ground truth --------------------------------------------------------------------


def test_the_server_exports_drift_and_all_histogram_series(exposition: Exposition) -> None:
    for name in (
        "mlplat_feature_drift_psi",
        "mlplat_drift_window_rows",
        "mlplat_model_info",
        "mlplat_request_duration_seconds_bucket",
        "mlplat_batch_size_sum",
        "mlplat_batch_size_count",
    ):
        assert name in exposition.sample_names, name


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_metric_read_is_exported_by_the_server_or_an_external_exporter(
    exposition: Exposition, source: str
) -> None:
    exprs = [r["expr"] for r in all_rules()] if source == "rules" else dashboard_exprs()
    read = set().union(*(promql_metric_names(e) for e in exprs))
    assert read, exprs
    unknown = read - exposition.sample_names - set(EXTERNAL_METRICS)
    assert not unknown, f"{source} read {sorted(unknown)}, neither on /metrics nor in EXTERNAL_METRICS"
    assert not set(EXTERNAL_METRICS) & exposition.sample_names, "EXTERNAL_METRICS lists a series the server exports"


def test_inference_route_matcher_selects_exactly_the_inference_routes_the_server_labels(
    exposition: Exposition,
) -> None:
    assert set(INFERENCE_ROUTES) <= exposition.routes, exposition.routes
    # Prometheus anchors the regex; the module escapes it once for RE2 and once for the PromQL string.
    regex = re.compile(unquote_promql(INFERENCE_ROUTE_MATCHER.removeprefix("route=~")))
    assert {r for r in exposition.routes if regex.fullmatch(r)} == set(INFERENCE_ROUTES)
    assert "other" not in INFERENCE_ROUTES


def test_status_label_is_the_numeric_code_so_5xx_matches(exposition: Exposition) -> None:
    assert exposition.statuses and all(re.fullmatch(r"[1-5]\d\d", s) for s in exposition.statuses)
    assert all('status=~"5.."' in rule(a)["expr"] for a in ("ModelServerErrorRateHigh", "CanaryWorseThanStable"))


# -- promql_metric_names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        (
            "histogram_quantile(0.99, sum by (model_service, track, le) "
            '(rate(http_duration_seconds_bucket{route=~"/predict|mlplat_fake_total", job="x"}[5m]))) > 0.25',
            {"http_duration_seconds_bucket"},
        ),
        (
            "sum without (instance) (rate(a_total[1h:5m] offset 5m)) / ignoring(track) group_left(version) "
            "b_info{track='canary'} > bool 1e-05",
            {"a_total", "b_info"},
        ),
        ('label_replace(foo, "dst", "$1", "src", "(bar_total)") and on(model_service) baz == Inf', {"foo", "baz"}),
        ('{__name__="by_name_total", le="0.5"} * avg(x:recorded:rate5m)', {"by_name_total", "x:recorded:rate5m"}),
        ('rate(m{a="$model_service"}[$__rate_interval]) + count_values("value", n)', {"m", "n"}),
    ],
)
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


# -- rules -----------------------------------------------------------------------------------------------------


def test_rule_groups_have_every_alert_once_and_serialise() -> None:
    groups = model_service_rule_groups()
    assert [g["name"] for g in groups] == ["mlplat-model-service", "mlplat-platform"]
    names = [r["alert"] for r in all_rules()]
    assert sorted(names) == sorted(ALERTS)
    json.dumps(groups)  # plain data, ready for a PrometheusRule's spec


def test_every_rule_has_severity_for_and_one_line_runbook() -> None:
    for r in all_rules():
        assert set(r) == {"alert", "expr", "for", "labels", "annotations"}, r["alert"]
        assert r["labels"]["severity"] in {"warning", "critical"}
        assert re.fullmatch(r"\d+m", r["for"])
        for key in ("summary", "description", "runbook"):
            assert r["annotations"][key].strip(), (r["alert"], key)
        assert "\n" not in r["annotations"]["runbook"]
        assert balanced(r["expr"]), r["expr"]


def test_per_service_rules_compare_stable_and_canary_side_by_side() -> None:
    for r in model_service_rule_groups()[0]["rules"]:
        clauses = re.findall(r"\bby \(([^)]*)\)", r["expr"])
        assert clauses, r["alert"]
        for clause in clauses:
            labels = {label.strip() for label in clause.split(",")}
            assert "model_service" in labels, (r["alert"], clause)
            if r["alert"] != "CanaryWorseThanStable":
                assert "track" in labels, (r["alert"], clause)
    canary = rule("CanaryWorseThanStable")["expr"]
    assert 'track="canary"' in canary and 'track="stable"' in canary and "on(model_service)" in canary


def test_latency_and_error_rules_watch_only_the_inference_routes() -> None:
    for name in ("ModelServerP99AboveSlo", "ModelServerErrorRateHigh", "CanaryWorseThanStable"):
        expr = rule(name)["expr"]
        selectors = re.findall(SELECTOR, expr)
        assert selectors and all(INFERENCE_ROUTE_MATCHER in s for s in selectors), name


@pytest.mark.parametrize(
    ("field", "value", "alert", "text"),
    [
        ("p99_latency_seconds", 0.4, "ModelServerP99AboveSlo", "> 0.4"),
        ("error_ratio", 0.05, "ModelServerErrorRateHigh", "> 0.05"),
        ("queue_depth", 100, "ModelServerQueueSaturated", "> 100"),
        ("drift_psi", 0.3, "ModelFeatureDrift", "> 0.3"),
        ("drift_min_window_rows", 1000, "ModelFeatureDrift", ">= 1000"),
        ("canary_margin", 2.0, "CanaryWorseThanStable", "2 * histogram_quantile"),
    ],
)
def test_thresholds_flow_into_the_expressions(field: str, value: float, alert: str, text: str) -> None:
    default, changed = rule(alert), rule(alert, AlertThresholds().replace(**{field: value}))
    assert changed["expr"] != default["expr"]
    assert text in changed["expr"] and text not in default["expr"]


def test_for_minutes_sets_every_rules_for() -> None:
    assert {r["for"] for r in all_rules(AlertThresholds(for_minutes=12))} == {"12m"}
    assert {r["for"] for r in all_rules()} == {"5m"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("p99_latency_seconds", 0),
        ("p99_latency_seconds", float("nan")),
        ("error_ratio", 1.5),
        ("error_ratio", 0),
        ("queue_depth", -1),
        ("drift_psi", float("inf")),
        ("canary_margin", 0.9),
        ("for_minutes", -5),
        ("for_minutes", 2.5),
        ("drift_min_window_rows", 0),
    ],
)
def test_invalid_thresholds_raise_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        AlertThresholds(**{field: value})


# -- dashboard -------------------------------------------------------------------------------------------------


def test_dashboard_is_a_grafana_dashboard_with_its_variables() -> None:
    d = dashboard()
    assert (d["uid"], d["title"], d["schemaVersion"]) == ("mlplat-model-service", "mlplat / model service", 39)
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    assert variables["model_service"]["type"] == "query"
    assert variables["model_service"]["query"]["query"] == "label_values(mlplat_requests_total, model_service)"
    assert DASHBOARD_FILE.read_text(encoding="utf-8") == dashboard_json()


def test_dashboard_panels_have_unique_ids_targets_and_no_overlap() -> None:
    panels = dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        assert p["targets"] and all(t["expr"].strip() and t["legendFormat"] for t in p["targets"]), p["title"]
        assert all(balanced(t["expr"]) for t in p["targets"]), p["title"]
        assert p["datasource"]["uid"] == "${datasource}"
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
    for title in PANELS:
        assert panel(title)["type"] in {"timeseries", "table", "stat"}


def test_dashboard_filters_every_mlplat_series_by_the_model_service_variable() -> None:
    for expr in dashboard_exprs():
        for selector in re.findall(r"mlplat_\w+(\{[^}]*\})?", without_strings(expr)):
            assert selector, expr  # never an unfiltered mlplat series
        for selector in re.findall(r"mlplat_\w+\{[^}]*\}", expr):
            assert 'model_service="$model_service"' in selector, expr


def test_dashboard_panels_split_by_track() -> None:
    assert panel("Feature drift")["targets"][0]["legendFormat"] == "{{track}} {{feature}}"
    for title in PANELS:
        assert all("{{track}}" in t["legendFormat"] for t in panel(title)["targets"]), title
    latency = [t["expr"] for t in panel("Latency")["targets"]]
    assert [e.split(",")[0] for e in latency] == [f"histogram_quantile({q}" for q in ("0.5", "0.95", "0.99")]
    batch = [t["expr"] for t in panel("Batch size")["targets"]]
    assert "mlplat_batch_size_sum" in batch[0] and "mlplat_batch_size_count" in batch[0]
    assert batch[1].startswith("histogram_quantile(0.95")


def test_gpu_panel_reads_dcgm_and_says_where_it_has_data() -> None:
    gpu = panel("GPU utilisation")
    assert "DCGM_FI_DEV_GPU_UTIL" in promql_metric_names(gpu["targets"][0]["expr"])
    assert "DCGM exporter runs" in gpu["description"]


def test_dashboard_ships_as_package_data() -> None:
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    setuptools = pyproject["tool"]["setuptools"]
    # A wheel carries the dashboard: its folder is a package of its own, whose package data is the JSON.
    assert "mlplat.components.dashboards" in setuptools["packages"]
    assert "*.json" in setuptools["package-data"]["mlplat.components.dashboards"]
    assert DASHBOARD_FILE.parent.name == "dashboards" and DASHBOARD_FILE.suffix == ".json"
