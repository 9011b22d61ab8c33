"""Graceful shutdown of the real server process (`python -m mlplat.serving`) under load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from support import TESTS_DIR
from support.serving import free_port, save_slow_model

import mlplat

DRAIN_DELAY_S = 1.5
FORWARD_S = 0.25  # each forward pass sleeps this long, so requests are in flight when the listener closes


@pytest.fixture(scope="module")
def slow_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_slow_model(tmp_path_factory.mktemp("slow"), FORWARD_S)


def test_sigterm_under_load_finishes_every_accepted_request(slow_model_dir: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), *mlplat.__path__, os.environ.get("PYTHONPATH", "")]),
        "MLPLAT_SERVING_MODEL_URI": str(slow_model_dir),
        "MLPLAT_SERVING_PORT": str(port),
        "MLPLAT_SERVING_ALLOW_PICKLE": "true",
        "MLPLAT_SERVING_MAX_BATCH_SIZE": "4",
        "MLPLAT_SERVING_DRAIN_DELAY_S": str(DRAIN_DELAY_S),
        "MLPLAT_SERVING_REQUEST_TIMEOUT_S": "20",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "mlplat.serving"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, server.stdout.read().decode()  # type: ignore[union-attr]
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)

        stop_sending = threading.Event()
        lock = threading.Lock()
        outcomes: list[tuple[float, int | str]] = []  # (time answered, status or error)
        readiness: list[tuple[float, int]] = []

        def client(worker: int) -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                while not stop_sending.is_set():
                    try:
                        response = http.post("/predict", json={"inputs": [[float(worker), 1.0, 2.0, 3.0]]})
                        outcome: int | str = response.status_code
                        if response.status_code == 200:
                            assert response.json()["predictions"] == [[2.0 * worker, 2.0]]
                    except httpx.TransportError as exc:
                        outcome = type(exc).__name__
                    with lock:
                        outcomes.append((time.monotonic(), outcome))

        def poll_readiness() -> None:
            with httpx.Client(base_url=url, timeout=5) as http:
                while not stop_sending.is_set():
                    readiness.append((time.monotonic(), http.get("/v2/health/ready").status_code))
                    time.sleep(0.05)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        threads.append(threading.Thread(target=poll_readiness))
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        sigterm_at = time.monotonic()
        server.send_signal(signal.SIGTERM)
        # Keep sending through most of the drain window, as traffic keeps coming until the load balancer
        # has seen readiness fail; stop before the listener closes (a client has no way to tell "refused at
        # the door" from "lost inside").
        time.sleep(DRAIN_DELAY_S - 0.3)
        stop_sending.set()
        for thread in threads:
            thread.join(30)
        returncode = server.wait(30)
        log = server.stdout.read().decode()  # type: ignore[union-attr]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    statuses = [outcome for _, outcome in outcomes]
    assert statuses, "no request completed"
    assert set(statuses) == {200}, f"a request was lost or failed: {sorted(set(map(str, statuses)))}"
    listener_closed = sigterm_at + DRAIN_DELAY_S
    assert any(t < sigterm_at for t, _ in outcomes)
    assert any(sigterm_at < t < listener_closed for t, _ in outcomes), "nothing was served during the drain"
    assert any(t > listener_closed for t, _ in outcomes), "no request was still in flight when accepting stopped"
    assert [s for t, s in readiness if t < sigterm_at][-1] == 200
    assert 503 in [s for t, s in readiness if t > sigterm_at], "readiness did not turn false after SIGTERM"
    assert returncode == 0, log[-3000:]
    assert "draining" in log
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v2/health/live", timeout=2)
