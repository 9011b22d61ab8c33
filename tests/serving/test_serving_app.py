"""The server over real HTTP on 127.0.0.1: /predict, batching, and every error path with its message."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
import pytest
from support.serving import FEATURES, LiveServer, forward, make_mlp, slow_model, training_inputs

from mlplat.serving.logs import JsonFormatter
from mlplat.serving.model import LoadedModel


def predict(client: httpx.Client, rows: Any, **kwargs: Any) -> httpx.Response:
    return client.post("/predict", json={"inputs": rows}, **kwargs)


def test_predictions_equal_the_models_own_forward(mlp_server: LiveServer) -> None:
    rows = training_inputs(5, seed=3)
    with mlp_server.client() as client:
        response = predict(client, rows.tolist())
    assert response.status_code == 200
    body = response.json()
    np.testing.assert_allclose(np.array(body["predictions"], np.float32), forward(make_mlp(), rows), rtol=1e-6)
    assert body["model_version"] == mlp_server.app.model.version  # type: ignore[union-attr]
    assert response.headers["content-type"] == "application/json"


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(mlp_server: LiveServer) -> None:
    rows = training_inputs(256, seed=4)
    batches_before = mlp_server.metric("mlplat_batch_size_count")
    rows_before = mlp_server.metric("mlplat_batch_size_sum")

    def one(i: int) -> tuple[int, list[float]]:
        response = predict(client, [rows[i].tolist()])
        assert response.status_code == 200, response.text
        return i, response.json()["predictions"][0]

    with mlp_server.client(limits=httpx.Limits(max_connections=32)) as client, ThreadPoolExecutor(32) as pool:
        answers = dict(pool.map(one, range(len(rows))))
    got = np.array([answers[i] for i in range(len(rows))], np.float32)
    # Batched results equal the unbatched forward (to float32 rounding: BLAS kernels differ by batch size).
    np.testing.assert_allclose(got, forward(make_mlp(), rows), rtol=1e-5, atol=1e-6)
    batches = mlp_server.metric("mlplat_batch_size_count") - batches_before
    served_rows = mlp_server.metric("mlplat_batch_size_sum") - rows_before
    assert served_rows == len(rows)
    assert served_rows / batches > 1, "no request shared a forward pass under concurrency"
    # The histogram saw batches of more than one row.
    assert mlp_server.metric("mlplat_batch_size_bucket", le="1.0") < mlp_server.metric("mlplat_batch_size_count")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"inputs": [[1.0] * (FEATURES - 1)]}, "length >= 8 - at `$.inputs[0]`"),
        ({"inputs": [[1.0] * (FEATURES + 1)]}, "length <= 8 - at `$.inputs[0]`"),
        ({"inputs": [[1.0] * 3 + ["x"] + [1.0] * 4]}, "Expected `float`, got `str` - at `$.inputs[0][3]`"),
        ({"inputs": [[True] * FEATURES]}, "Expected `float`, got `bool`"),
        ({"inputs": [[1e39] * FEATURES]}, "<= 3.4028234663852886e+38 - at `$.inputs[0][0]`"),
        (
            {"inputs": [[1.0] * FEATURES, [1.0] * 5 + [-1e39, 1.0, 1.0]]},
            ">= -3.4028234663852886e+38 - at `$.inputs[1][5]`",
        ),
        ({"inputs": []}, "length >= 1 - at `$.inputs`"),
        ({"instances": [[1.0] * FEATURES]}, "missing required field `inputs`"),
        ([[1.0] * FEATURES], "Expected `object`, got `array`"),
    ],
)
def test_inputs_that_do_not_match_the_signature_get_422_naming_the_problem(
    mlp_server: LiveServer, body: Any, fragment: str
) -> None:
    with mlp_server.client() as client:
        response = client.post("/predict", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert fragment in error
    assert "each row is 8 float32 values" in error  # what is allowed


def test_malformed_json_gets_422(mlp_server: LiveServer) -> None:
    with mlp_server.client() as client:
        response = client.post("/predict", content=b'{"inputs": [[1, 2', headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "not valid JSON" in response.json()["error"]


def test_an_oversized_body_gets_413(serve: Any, mlflow_model_dir: Any) -> None:
    with serve(model_uri=str(mlflow_model_dir), max_body_bytes=2048) as live, live.client() as client:
        big = predict(client, training_inputs(200).tolist())
        small = predict(client, training_inputs(2).tolist())
    assert big.status_code == 413
    assert "limit of 2048 bytes" in big.json()["error"]
    assert small.status_code == 200


def test_a_chunked_body_past_the_limit_gets_413(serve: Any, mlflow_model_dir: Any) -> None:
    payload = json.dumps({"inputs": training_inputs(200).tolist()}).encode()

    def chunks() -> Any:  # no Content-Length: the server must count while reading
        for i in range(0, len(payload), 1000):
            yield payload[i : i + 1000]

    with serve(model_uri=str(mlflow_model_dir), max_body_bytes=4096) as live, live.client() as client:
        response = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_too_many_rows_in_one_request_get_422(serve: Any, mlflow_model_dir: Any) -> None:
    with serve(model_uri=str(mlflow_model_dir), max_request_rows=4) as live, live.client() as client:
        response = predict(client, training_inputs(5).tolist())
    assert response.status_code == 422
    assert "length <= 4 - at `$.inputs`" in response.json()["error"]


def test_the_api_key_is_required_on_inference_but_not_on_health(serve: Any, mlflow_model_dir: Any) -> None:
    row = training_inputs(1).tolist()
    with serve(model_uri=str(mlflow_model_dir), api_key="s3cret") as live, live.client() as client:
        missing = predict(client, row)
        wrong = predict(client, row, headers={"authorization": "Bearer nope"})
        right = predict(client, row, headers={"authorization": "Bearer s3cret"})
        v2_missing = client.get(f"/v2/models/{live.app.model.name}")
        health = client.get("/v2/health/ready")
        metrics = client.get("/metrics")
    for response in (missing, wrong, v2_missing):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer <key>" in response.json()["error"]
    assert right.status_code == 200
    assert health.status_code == 200
    assert metrics.status_code == 200


def test_a_full_queue_answers_503_with_retry_after(serve: Any) -> None:
    model = slow_model(2.0)  # long enough that all three are queued while the first computes, on a busy machine too
    settings = {"max_batch_size": 1, "queue_limit": 2, "request_timeout_s": 10}
    with serve(model, **settings) as live, ThreadPoolExecutor(6) as pool, live.client() as client:
        # one request on the worker, two waiting, then the queue is full
        futures = [pool.submit(predict, client, [[1.0, 2.0, 3.0, 4.0]]) for _ in range(3)]
        deadline = time.monotonic() + 10  # not a fixed sleep: on a busy machine the three take longer to queue
        while (live.app.batcher is None or live.app.batcher.depth < 2) and time.monotonic() < deadline:
            time.sleep(0.01)
        rejected = predict(client, [[1.0, 2.0, 3.0, 4.0]])
        accepted = [f.result() for f in futures]
    assert rejected.status_code == 503
    assert rejected.headers["retry-after"] == "1"
    assert "2 requests are already queued" in rejected.json()["error"]
    assert [r.status_code for r in accepted] == [200, 200, 200]
    assert model.module.batches == [1, 1, 1]  # type: ignore[union-attr]


def test_a_request_past_its_timeout_gets_504_and_is_not_computed(serve: Any) -> None:
    model = slow_model(0.5)
    with serve(model, max_batch_size=1, request_timeout_s=0.3) as live:
        with ThreadPoolExecutor(2) as pool, live.client() as client:
            first = pool.submit(predict, client, [[1.0, 1.0, 1.0, 1.0]])  # holds the worker for 0.5 s
            time.sleep(0.05)
            late = predict(client, [[2.0, 2.0, 2.0, 2.0]])  # waits behind it, times out at 0.3 s
            first_response = first.result()
        time.sleep(0.6)  # let the worker go idle: the timed-out request must not run afterwards
        skipped = live.metric("mlplat_requests_skipped_total", reason="timeout")
    assert late.status_code == 504
    assert "request timeout of 0.3 s" in late.json()["error"]
    assert first_response.status_code == 504  # the first one also outlived the 0.3 s deadline while computing
    assert model.module.batches == [1]  # type: ignore[union-attr]
    assert skipped == 1


def test_a_caller_that_disconnects_while_queued_costs_no_compute(serve: Any) -> None:
    model = slow_model(0.6)
    with serve(model, max_batch_size=1) as live:
        with ThreadPoolExecutor(1) as pool, live.client() as client:
            first = pool.submit(predict, client, [[1.0, 1.0, 1.0, 1.0]])
            time.sleep(0.1)
            body = json.dumps({"inputs": [[9.0, 9.0, 9.0, 9.0]]}).encode()
            host, port = live.url.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port))) as raw:
                raw.sendall(
                    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                time.sleep(0.15)  # queued behind the first request; then the caller hangs up
            assert first.result().status_code == 200
        deadline = time.monotonic() + 5
        while live.metric("mlplat_requests_skipped_total", reason="disconnect") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        skipped = live.metric("mlplat_requests_skipped_total", reason="disconnect")
    assert skipped == 1
    assert model.module.batches == [1]  # type: ignore[union-attr]


@contextmanager
def json_log_lines() -> Iterator[list[dict[str, Any]]]:
    """The server's log records as the JSON objects its formatter writes."""
    stream, lines = io.StringIO(), []
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("mlplat.serving")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        lines.extend(json.loads(line) for line in stream.getvalue().splitlines())


def test_a_model_error_is_500_without_a_stack_trace_which_goes_to_the_log(serve: Any) -> None:
    def broken(_: Any) -> Any:
        raise RuntimeError("weights are on fire at /secret/path.py line 12")

    model = LoadedModel(module=broken, name="broken", version="1", source="test")
    with json_log_lines() as logs, serve(model) as live, live.client() as client:
        response = predict(client, [[1.0, 2.0]], headers={"x-request-id": "req-42"})
    assert response.status_code == 500
    error = response.json()["error"]
    assert "inference failed (RuntimeError)" in error
    assert "req-42" in error
    assert "Traceback" not in response.text
    assert "/secret/path.py" not in response.text
    (entry,) = [e for e in logs if e["message"] == "inference failed"]
    assert entry["request_id"] == "req-42"
    assert entry["level"] == "error"
    assert "weights are on fire" in entry["exception"]


def test_the_access_log_writes_one_json_line_per_request(serve: Any, mlflow_model_dir: Any) -> None:
    server = serve(model_uri=str(mlflow_model_dir), access_log=True)
    with json_log_lines() as logs, server as live, live.client() as client:
        predict(client, training_inputs(1).tolist(), headers={"x-request-id": "acc-1"})
        predict(client, [[1.0]], headers={"x-request-id": "acc-2"})
    requests = {e["request_id"]: e for e in logs if e["message"] == "request"}
    assert requests["acc-1"]["status"] == 200
    assert requests["acc-2"]["status"] == 422
    assert requests["acc-1"]["path"] == "/predict"
    assert requests["acc-1"]["ms"] > 0


def test_the_request_id_is_echoed_or_generated(mlp_server: LiveServer) -> None:
    row = training_inputs(1).tolist()
    with mlp_server.client() as client:
        given = predict(client, row, headers={"x-request-id": "abc-123"})
        generated = [predict(client, row).headers["x-request-id"] for _ in range(2)]
        hostile = predict(client, row, headers={"x-request-id": "a\tb" * 100})
        health = client.get("/v2/health/live", headers={"x-request-id": "probe-1"})
    assert given.headers["x-request-id"] == "abc-123"
    assert len(set(generated)) == 2
    assert hostile.headers["x-request-id"] != "a\tb" * 100
    assert health.headers["x-request-id"] == "probe-1"


def test_cors_is_off_by_default_and_on_when_configured(serve: Any, mlflow_model_dir: Any) -> None:
    preflight = {"origin": "https://app.example", "access-control-request-method": "POST"}
    with serve(model_uri=str(mlflow_model_dir)) as live, live.client() as client:
        closed = client.options("/predict", headers=preflight)
    with serve(model_uri=str(mlflow_model_dir), cors_origins=["https://app.example"]) as live, live.client() as client:
        opened = client.options("/predict", headers=preflight)
        answered = predict(client, training_inputs(1).tolist(), headers={"origin": "https://app.example"})
    assert "access-control-allow-origin" not in closed.headers
    assert opened.headers["access-control-allow-origin"] == "https://app.example"
    assert answered.headers["access-control-allow-origin"] == "https://app.example"


def test_wrong_methods_and_unknown_routes_answer_json(mlp_server: LiveServer) -> None:
    with mlp_server.client() as client:
        get_predict = client.get("/predict")
        unknown = client.get("/nope")
    assert get_predict.status_code == 405
    assert get_predict.headers["allow"] == "POST"
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "no route /nope"}


def test_openapi_documents_every_route_with_the_signatures_row_shape(mlp_server: LiveServer) -> None:
    with mlp_server.client() as client:
        schema = client.get("/openapi.json").json()
        docs = client.get("/docs")
    assert docs.status_code == 200
    for path in ("/predict", "/v2/models/{name}/infer", "/v2/health/live", "/v2/health/ready", "/metrics"):
        assert path in schema["paths"], path
    rows = schema["components"]["schemas"]["PredictRequest"]["properties"]["inputs"]["items"]
    assert rows["minItems"] == rows["maxItems"] == FEATURES
    assert "422" in schema["paths"]["/predict"]["post"]["responses"]


def test_a_lone_request_is_answered_without_a_batch_window(mlp_server: LiveServer) -> None:
    """Not a timing test: a lone caller's request forms a batch of one (it does not wait for company)."""
    before = mlp_server.metric("mlplat_batch_size_bucket", le="1.0")
    with mlp_server.client() as client:
        for _ in range(3):
            assert predict(client, training_inputs(1).tolist()).status_code == 200
    assert mlp_server.metric("mlplat_batch_size_bucket", le="1.0") - before == 3


def test_requests_beyond_the_queue_never_block_the_event_loop(serve: Any) -> None:
    """While the worker is busy, health checks still answer at once (inference runs off the event loop)."""
    model = slow_model(0.5)
    with serve(model, max_batch_size=1) as live, live.client() as client:
        worker = threading.Thread(target=predict, args=(client, [[1.0, 1.0, 1.0, 1.0]]))
        worker.start()
        time.sleep(0.1)
        started = time.monotonic()
        health = client.get("/v2/health/live")
        elapsed = time.monotonic() - started
        worker.join()
    assert health.status_code == 200
    assert elapsed < 0.3


def test_every_route_comes_from_the_one_table(mlp_server: LiveServer) -> None:
    # The table is the only declaration: FastAPI serves exactly its control routes, the OpenAPI document lists
    # every route with its method, and what needs no API key is what the table marks public (the contracts' paths).
    from fastapi.routing import APIRoute

    from mlplat.contracts import http
    from mlplat.serving.routes import PUBLIC_PATHS, ROUTES

    with mlp_server.client() as client:
        schema = client.get("/openapi.json").json()
    served = {(next(iter(r.methods)), r.path) for r in mlp_server.app.api.routes if isinstance(r, APIRoute)}
    assert served == {(r.method, r.path) for r in ROUTES if not r.inference}
    for route in ROUTES:
        assert route.method.lower() in schema["paths"][route.path], route
    assert schema["paths"]["/v2/models/{name}/versions/{model_version}/infer"]["post"]["parameters"][1]["name"] == (
        "model_version"
    )
    assert PUBLIC_PATHS == http.PUBLIC_PATHS
