"""A first deploy: the server starts before its model exists, waits unready (but live), and serves it once it appears.

Real servers on 127.0.0.1: the app under uvicorn in a thread, `python -m mlplat.serving` as a process, and a real
`mlflow server` started after the model server (as on a first `pulumi up`, where MLflow may not be up yet).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from support.serving import (
    FEATURES,
    forward,
    free_port,
    make_mlp,
    run_server,
    save_mlflow_model,
    training_inputs,
)

import mlplat
from mlplat.serving.app import create_app
from mlplat.serving.loading import RETRY_AFTER_MAX_S, LoadStatus, backoff_delay
from mlplat.serving.logs import JsonFormatter
from mlplat.serving.redaction import redact
from mlplat.serving.settings import ServingSettings

PASSWORD = "hunter2-Zq9"  # a test credential that must never appear in logs or answers
FAST_RETRY = {"load_retry_initial_s": 0.05, "load_retry_max_s": 0.3}


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60.0, proc: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}) while waiting for: {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for: {what}")
        time.sleep(0.05)


def staged_model(module: torch.nn.Module, tmp_path: Path) -> Path:
    """An MLflow model written next to (not at) the path the server waits on."""
    staging = tmp_path / "staging"
    staging.mkdir(exist_ok=True)
    return save_mlflow_model(module, staging / "digits")


def publish(directory: Path, target: Path) -> None:
    """Make a model appear at `target` at once (a rename), as a volume populated by another process would."""
    os.rename(directory, target)


# -- the retry schedule -------------------------------------------------------------------------------------


def test_backoff_doubles_from_the_initial_wait_up_to_the_cap() -> None:
    no_jitter = [backoff_delay(n, 1.0, 60.0, 0.2, rand=lambda: 0.0) for n in range(1, 10)]
    assert no_jitter == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    most_jitter = [backoff_delay(n, 1.0, 60.0, 0.2, rand=lambda: 1.0) for n in (1, 2, 7)]
    assert most_jitter == pytest.approx([0.8, 1.6, 48.0])
    assert backoff_delay(10_000, 0.5, 30.0, 0.0) == 30.0  # no overflow, however long it waits


def test_backoff_with_random_jitter_stays_within_its_bounds() -> None:
    import random

    rng = random.Random(7)
    for failures in range(1, 200):
        base = min(20.0, 0.25 * 2 ** min(failures - 1, 64))
        delay = backoff_delay(failures, 0.25, 20.0, 0.5, rand=rng.random)
        assert 0.5 * base <= delay <= base <= 20.0
    spread = {round(backoff_delay(9, 0.25, 20.0, 0.5, rand=rng.random), 6) for _ in range(50)}
    assert len(spread) > 40, "replicas would retry in lockstep"


def test_retry_after_is_the_time_to_the_next_attempt_in_whole_seconds_bounded() -> None:
    status = LoadStatus(uri="models:/digits@champion")
    assert status.retry_after() == 1  # no attempt planned (one is running)
    status.next_attempt_at = time.monotonic() + 7.2
    assert status.retry_after() == 8
    status.next_attempt_at = time.monotonic() + 3600
    assert status.retry_after() == RETRY_AFTER_MAX_S
    status.next_attempt_at = time.monotonic() - 1
    assert status.retry_after() == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://user:pw@host/models", "https://***@host/models"),
        ("from MLflow (http://alice:s3cr@t@10.0.0.5:5000): boom", "from MLflow (http://***@10.0.0.5:5000): boom"),
        ("postgresql://mlflow:pw@db:5432/mlflow", "postgresql://***@db:5432/mlflow"),
        ("https://ghp_token@github.example/x", "https://***@github.example/x"),
        (
            "s3://b/k?X-Amz-Credential=AKIA&X-Amz-Signature=abc&v=1",
            "s3://b/k?X-Amz-Credential=***&X-Amz-Signature=***&v=1",
        ),
        ("http://h/x?password=pw&token=t", "http://h/x?password=***&token=***"),
        ("models:/digits@champion", "models:/digits@champion"),
        ("mail ops@example.com about http://host:80/", "mail ops@example.com about http://host:80/"),
    ],
)
def test_credentials_are_removed_from_uris_and_messages(text: str, expected: str) -> None:
    assert redact(text) == expected


# -- a real server waiting for its model --------------------------------------------------------------------


def infer_body(rows: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}]
    }


def test_a_missing_model_is_waited_for_unready_then_served(tmp_path: Path) -> None:
    target = tmp_path / "digits"
    app = create_app(ServingSettings(model_uri=str(target), **FAST_RETRY))
    with run_server(app, wait_ready=False) as live, live.client() as client:
        live_answer = client.get("/v2/health/live")
        assert (live_answer.status_code, live_answer.json()) == (200, {"live": True})
        wait_until(lambda: live.metric("mlplat_model_load_attempts_total", outcome="unavailable") >= 3, "3 failures")

        ready = client.get("/v2/health/ready")
        assert ready.status_code == 503
        body = ready.json()
        assert body["ready"] is False
        assert body["waiting_for"] == str(target)
        assert "does not exist" in body["reason"] and str(target) in body["reason"]
        assert body["attempts"] >= 3 and body["refused"] is False
        assert "does not exist" in body["last_error"]
        model_ready = client.get("/v2/models/digits/ready")
        assert model_ready.status_code == 503 and model_ready.json()["name"] == "digits"
        assert "does not exist" in model_ready.json()["reason"]

        rows = training_inputs(3, seed=4)
        for response in (
            client.post("/predict", json={"inputs": rows.tolist()}),
            client.post("/v2/models/digits/infer", json=infer_body(rows)),
            client.get("/v2/models/digits"),
        ):
            assert response.status_code == 503, response.text
            assert 1 <= int(response.headers["retry-after"]) <= RETRY_AFTER_MAX_S
            assert "not loaded yet" in response.json()["error"]
        assert live.metric("mlplat_model_loaded") == 0
        assert live.metric("mlplat_ready") == 0
        assert live.metric("mlplat_model_load_attempts_total", outcome="success") == 0
        assert live.metric("mlplat_requests_total", route="/predict", status="503") == 1

        module = make_mlp(seed=3)
        publish(staged_model(module, tmp_path), target)
        wait_until(lambda: client.get("/v2/health/ready").status_code == 200, "readiness after the model appeared")

        assert client.get("/v2/health/ready").json() == {"ready": True}
        predicted = client.post("/predict", json={"inputs": rows.tolist()})
        assert predicted.status_code == 200
        np.testing.assert_allclose(predicted.json()["predictions"], forward(module, rows), rtol=1e-5, atol=1e-6)
        v2 = client.post("/v2/models/digits/infer", json=infer_body(rows))
        assert v2.status_code == 200
        assert client.get("/v2/models/digits/ready").json() == {"name": "digits", "ready": True}
        assert live.metric("mlplat_model_load_attempts_total", outcome="success") == 1
        assert live.metric("mlplat_model_loaded") == 1
        assert live.metric("mlplat_ready") == 1
        assert live.metric("mlplat_model_info", name="digits") == 1


def test_a_refused_model_keeps_the_server_unready_with_the_reason_until_it_is_replaced(tmp_path: Path) -> None:
    # Refusals are not fatal: the URI (an alias, a prefix, a mounted path) can be re-pointed to a servable model.
    target = tmp_path / "digits"
    save_mlflow_model(make_mlp(seed=5), target, serialization_format="pickle")
    app = create_app(ServingSettings(model_uri=str(target), **FAST_RETRY))
    with run_server(app, wait_ready=False) as live, live.client() as client:
        wait_until(lambda: live.metric("mlplat_model_load_attempts_total", outcome="refused") >= 2, "2 refusals")
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 503
        body = ready.json()
        assert body["refused"] is True
        assert "was refused" in body["reason"]
        assert "pickle-serialized" in body["last_error"] and "MLPLAT_SERVING_ALLOW_PICKLE" in body["last_error"]
        assert client.get("/v2/health/live").status_code == 200
        assert live.metric("mlplat_model_load_attempts_total", outcome="unavailable") == 0

        module = make_mlp(seed=6)
        fixed = staged_model(module, tmp_path)
        os.rename(target, tmp_path / "refused")
        publish(fixed, target)
        wait_until(lambda: client.get("/v2/health/ready").status_code == 200, "readiness after the fix", timeout=60)
        rows = training_inputs(2, seed=8)
        predicted = client.post("/predict", json={"inputs": rows.tolist()})
        np.testing.assert_allclose(predicted.json()["predictions"], forward(module, rows), rtol=1e-5, atol=1e-6)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def captured_serving_logs() -> Iterator[_Records]:
    """The server's log records (another test may have configured logging with propagation off)."""
    logger = logging.getLogger("mlplat.serving")
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_a_password_in_the_tracking_uri_is_never_logged_nor_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail each attempt fast: nothing listens there
    port = free_port()
    settings = ServingSettings(
        model_uri="models:/digits@champion",
        mlflow_tracking_uri=f"http://alice:{PASSWORD}@127.0.0.1:{port}",
        **FAST_RETRY,
    )
    with captured_serving_logs() as logs, run_server(create_app(settings), wait_ready=False) as live:
        wait_until(
            lambda: live.metric("mlplat_model_load_attempts_total", outcome="unavailable") >= 2, "2 failures", 120
        )
        ready = httpx.get(f"{live.url}/v2/health/ready", timeout=10)
        refused = httpx.post(f"{live.url}/predict", json={"inputs": [[0.0] * FEATURES]}, timeout=10)
        metrics = httpx.get(f"{live.url}/metrics", timeout=10).text

    assert ready.status_code == 503
    assert ready.json()["tracking_uri"] == f"http://***@127.0.0.1:{port}"
    assert ready.json()["waiting_for"] == "models:/digits@champion"
    for text in (ready.text, refused.text, metrics):
        assert PASSWORD not in text
    failures = [r for r in logs.records if r.getMessage().startswith("model not loaded")]
    assert len(failures) >= 2
    formatter = JsonFormatter()
    for record in logs.records:
        assert PASSWORD not in formatter.format(record)
    first = failures[0]
    message = first.getMessage()
    assert "waiting for models:/digits@champion" in message
    assert "next attempt in" in message
    assert f"from MLflow (http://***@127.0.0.1:{port})" in message  # the tracking server, without the password
    assert first.levelno == logging.WARNING
    fields = vars(first)
    assert fields["uri"] == "models:/digits@champion"
    assert fields["tracking_uri"] == f"http://***@127.0.0.1:{port}"
    assert fields["outcome"] == "unavailable" and fields["attempt"] == 1
    assert 0 < fields["next_attempt_in_s"] <= FAST_RETRY["load_retry_max_s"]


# -- the server process: first deploy against a real MLflow, and SIGTERM while waiting ----------------------


@contextmanager
def server_process(tmp_path: Path, **settings: str) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """`python -m mlplat.serving` with MLPLAT_SERVING_<NAME> settings; yields (process, base URL, log file)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLPLAT_SERVING_", "MLFLOW_"))}
    env["PYTHONPATH"] = os.pathsep.join([*mlplat.__path__, os.environ.get("PYTHONPATH", "")])
    env.update({f"MLPLAT_SERVING_{k.upper()}": v for k, v in {"port": str(port), **settings}.items()})
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlplat.serving"], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:

        def live() -> bool:
            try:
                return httpx.get(f"{url}/v2/health/live", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(live, "liveness", timeout=120, proc=proc)
        yield proc, url, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def metric(url: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def register_champion(tracking_uri: str, module: torch.nn.Module) -> str:
    """Log `module` as the trainer does, register it as `digits` and point `@champion` at it; returns the version."""
    import mlflow
    import mlflow.pytorch
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        example = training_inputs(4)
        with mlflow.start_run():
            info = mlflow.pytorch.log_model(
                module,
                name="model",
                signature=infer_signature(example, forward(module, example)),
                input_example=example,
                serialization_format="pt2",
                pip_requirements=["torch"],
                registered_model_name="digits",
            )
        version = str(info.registered_model_version)
        MlflowClient().set_registered_model_alias("digits", "champion", version)
        return version
    finally:
        mlflow.set_tracking_uri(previous)


def test_first_deploy_waits_for_mlflow_and_the_champion_then_serves_it(tmp_path: Path) -> None:
    from mlplat.demo.services import MlflowServer

    mlflow_port = free_port()
    tracking = f"http://alice:{PASSWORD}@127.0.0.1:{mlflow_port}"  # MLflow is not up yet
    mlflow_server = MlflowServer(
        tmp_path / "mlflow", f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "artifacts"), port=mlflow_port
    )
    with server_process(
        tmp_path,
        model_uri="models:/digits@champion",
        mlflow_tracking_uri=tracking,
        load_retry_initial_s="0.2",
        load_retry_max_s="1",
        drain_delay_s="0.5",
    ) as (proc, url, log):
        try:
            ready = httpx.get(f"{url}/v2/health/ready", timeout=5)
            assert ready.status_code == 503
            assert ready.json()["waiting_for"] == "models:/digits@champion"
            assert ready.json()["tracking_uri"] == f"http://***@127.0.0.1:{mlflow_port}"
            predict = httpx.post(f"{url}/predict", json={"inputs": [[0.0] * FEATURES]}, timeout=5)
            assert predict.status_code == 503 and int(predict.headers["retry-after"]) >= 1
            wait_until(
                lambda: metric(url, "mlplat_model_load_attempts_total", outcome="unavailable") >= 1,
                "a failed attempt while MLflow is down",
                proc=proc,
            )

            mlflow_server.start()
            module = make_mlp(seed=21)
            # MLflow is up but nothing is registered yet: still waiting, now for the model itself.
            seen = metric(url, "mlplat_model_load_attempts_total", outcome="unavailable")
            wait_until(
                lambda: metric(url, "mlplat_model_load_attempts_total", outcome="unavailable") > seen + 1,
                "a failed attempt against the running MLflow",
                proc=proc,
            )
            assert "digits" in httpx.get(f"{url}/v2/health/ready", timeout=5).json()["last_error"]
            version = register_champion(mlflow_server.uri, module)

            def ready_now() -> bool:
                return httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200

            wait_until(ready_now, "readiness once the champion is registered", timeout=120, proc=proc)
            rows = training_inputs(5, seed=12)
            answer = httpx.post(f"{url}/predict", json={"inputs": rows.tolist()}, timeout=30)
            assert answer.status_code == 200
            assert answer.json()["model_version"] == version
            np.testing.assert_allclose(answer.json()["predictions"], forward(module, rows), rtol=1e-5, atol=1e-6)
            assert metric(url, "mlplat_model_load_attempts_total", outcome="success") == 1
            assert metric(url, "mlplat_model_loaded") == 1

            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            mlflow_server.stop()
    output = log.read_text(errors="replace")
    assert PASSWORD not in output
    assert "waiting for models:/digits@champion" in output
    assert "next attempt in" in output
    assert "model loaded after" in output


@contextmanager
def unanswering_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP server that accepts connections and never answers: a load attempt against it hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()


@pytest.mark.parametrize("moment", ["between attempts", "during a hung attempt"])
def test_sigterm_while_waiting_for_the_model_exits_promptly(tmp_path: Path, moment: str) -> None:
    with unanswering_server() as (port, connections):
        if moment == "between attempts":
            settings = {"model_uri": str(tmp_path / "not-yet"), "load_retry_initial_s": "5", "load_retry_max_s": "30"}
        else:
            settings = {"model_uri": "models:/digits@champion", "mlflow_tracking_uri": f"http://127.0.0.1:{port}"}
        # The default drain delay (5 s) is skipped: a server that never became ready is in no rotation.
        with server_process(tmp_path, **settings) as (proc, url, log):
            if moment == "between attempts":
                wait_until(
                    lambda: metric(url, "mlplat_model_load_attempts_total", outcome="unavailable") >= 1,
                    "a failed attempt",
                    proc=proc,
                )
            else:
                wait_until(lambda: len(connections) >= 1, "the load attempt to reach MLflow", timeout=120, proc=proc)
                body = httpx.get(f"{url}/v2/health/ready", timeout=5).json()
                assert body["attempts"] == 1 and "loading the model" in body["reason"]
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            returncode = proc.wait(30)
            took = time.monotonic() - sent
    output = log.read_text(errors="replace")
    assert returncode == 0, output[-3000:]
    assert took < 4.0, f"exit took {took:.1f} s"
    assert "stopped" in output
    assert "Traceback" not in output
