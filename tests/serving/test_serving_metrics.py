"""Prometheus metrics: exposed at /metrics, and they move with traffic."""

from __future__ import annotations

import httpx
from support.serving import LiveServer, training_inputs


def test_metrics_are_exposed_in_prometheus_text_format(mlp_server: LiveServer) -> None:
    response = httpx.get(f"{mlp_server.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    for family in (
        "mlplat_requests_total",
        "mlplat_request_duration_seconds",
        "mlplat_batch_size",
        "mlplat_inference_duration_seconds",
        "mlplat_queue_depth",
        "mlplat_model_load_seconds",
        "mlplat_model_info",
        "mlplat_ready",
        "python_gc_collections_total",  # the cyclic collector's runs, by generation
    ):
        assert f"# TYPE {family} " in response.text, family
    assert 'python_gc_collections_total{generation="0"}' in response.text


def test_request_batch_and_inference_metrics_move_with_traffic(mlp_server: LiveServer) -> None:
    def snapshot() -> dict[str, float]:
        return {
            "ok": mlp_server.metric("mlplat_requests_total", route="/predict", status="200"),
            "bad": mlp_server.metric("mlplat_requests_total", route="/predict", status="422"),
            "latency": mlp_server.metric("mlplat_request_duration_seconds_count", route="/predict"),
            "batches": mlp_server.metric("mlplat_batch_size_count"),
            "rows": mlp_server.metric("mlplat_batch_size_sum"),
            "forward": mlp_server.metric("mlplat_inference_duration_seconds_count"),
        }

    before = snapshot()
    with mlp_server.client() as client:
        for _ in range(3):
            assert client.post("/predict", json={"inputs": training_inputs(2).tolist()}).status_code == 200
        assert client.post("/predict", json={"inputs": [[1.0]]}).status_code == 422
    after = snapshot()
    assert after["ok"] - before["ok"] == 3
    assert after["bad"] - before["bad"] == 1
    assert after["latency"] - before["latency"] == 4
    assert after["batches"] - before["batches"] == 3
    assert after["rows"] - before["rows"] == 6
    assert after["forward"] - before["forward"] == 3


def test_model_identity_load_time_and_readiness_are_exported(mlp_server: LiveServer) -> None:
    model = mlp_server.app.model
    assert model is not None
    assert mlp_server.metric("mlplat_model_info", name=model.name, version=model.version, platform="pytorch") == 1
    assert mlp_server.metric("mlplat_model_load_seconds") > 0
    assert mlp_server.metric("mlplat_ready") == 1
    assert mlp_server.metric("mlplat_queue_depth") == 0


def test_control_routes_are_labelled_by_their_template(mlp_server: LiveServer) -> None:
    model = mlp_server.app.model
    assert model is not None
    before = mlp_server.metric("mlplat_requests_total", route="/v2/models/{name}", status="200")
    unknown_before = mlp_server.metric("mlplat_requests_total", route="other", status="404")
    with mlp_server.client() as client:
        client.get(f"/v2/models/{model.name}")
        client.get("/no/such/route/a")
        client.get("/no/such/route/b")
    assert mlp_server.metric("mlplat_requests_total", route="/v2/models/{name}", status="200") - before == 1
    # unknown paths share one label, so scanners cannot blow up the metric's cardinality
    assert mlp_server.metric("mlplat_requests_total", route="other", status="404") - unknown_before == 2
