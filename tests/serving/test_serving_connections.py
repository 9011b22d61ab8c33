"""The connection guard on a real server (127.0.0.1): read timeouts, header limit, connection cap, fd limit.

Each probe of issue 18 as a test, bounded in time: slow headers, a silent connection, a slow and a short body,
a huge header, idle keep-alive, and many slow connections (in-process with a small cap, and in a server
process under a lowered file-descriptor limit), with health answering throughout.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from support.serving import LiveServer, free_port, make_mlp, run_server, slow_model, wait_until_ready

import mlplat
from mlplat.serving.app import create_app
from mlplat.serving.connection import FD_RESERVE_MIN, connection_cap
from mlplat.serving.settings import ServingSettings

SHORT = {"header_timeout_s": 0.5, "body_timeout_s": 0.5, "keepalive_timeout_s": 0.5}


@contextmanager
def guarded(**settings: Any) -> Iterator[LiveServer]:
    """A server for the slow test model with `mlplat serve`'s uvicorn config (the guard on)."""
    settings.setdefault("model_uri", "test")
    with run_server(create_app(ServingSettings(**settings), slow_model(0.0)), guarded=True) as live:
        yield live


def connect(live: LiveServer) -> socket.socket:
    host, port = live.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def read_until_closed(sock: socket.socket, limit_s: float = 10.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    sock.settimeout(limit_s)
    data = b""
    with suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data, time.monotonic() - started


def test_slow_headers_get_408_and_the_connection_closed_at_the_header_timeout() -> None:
    with guarded(**SHORT) as live, connect(live) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        with suppress(OSError):  # a header byte every 0.1 s: slowloris
            for _ in range(20):
                time.sleep(0.1)
                sock.sendall(b"X")
        data, _ = read_until_closed(sock)
        assert data.startswith(b"HTTP/1.1 408 ")
        assert b"MLPLAT_SERVING_HEADER_TIMEOUT_S" in data
        assert time.monotonic() - started < 3
        assert live.metric("mlplat_connections_closed_total", reason="header_timeout") >= 1


def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout() -> None:
    with guarded(**SHORT) as live, connect(live) as sock:
        data, took = read_until_closed(sock)
        assert data.startswith(b"HTTP/1.1 408 ")
        assert 0.4 < took < 2.5


@pytest.mark.parametrize("drip", [False, True], ids=["short-body", "slow-body"])
def test_a_short_or_slow_body_gets_408_and_the_request_is_dropped(drip: bool) -> None:
    with guarded(**SHORT) as live, connect(live) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            b'{"inputs":'
        )
        with suppress(OSError):
            for _ in range(20 if drip else 0):
                time.sleep(0.1)
                sock.sendall(b" ")
        data, took = read_until_closed(sock)
        assert data.startswith(b"HTTP/1.1 408 ")
        assert b"MLPLAT_SERVING_BODY_TIMEOUT_S" in data
        assert took < 3
        # The handler saw a disconnect (recorded as 499), never computed anything.
        deadline = time.monotonic() + 5
        while live.metric("mlplat_requests_total", route="/predict", status="499") < 1:
            assert time.monotonic() < deadline, "the handler did not see the disconnect"
            time.sleep(0.05)
        assert live.app.model is not None and live.app.model.module.batches == []  # type: ignore[attr-defined]


def test_a_huge_header_gets_431_without_the_server_buffering_it() -> None:
    with guarded() as live, connect(live) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        with suppress(OSError):  # the server closes long before 100 MB
            while sent < 100 * 1024 * 1024:
                sock.sendall(b"a" * 65536)
                sent += 65536
        data, _ = read_until_closed(sock)
        assert data.startswith(b"HTTP/1.1 431 ")
        assert sent < 16 * 1024 * 1024  # the connection ended early
        assert live.metric("mlplat_connections_closed_total", reason="header_too_large") == 1
        # Ordinary headers are fine.
        with live.client() as client:
            assert client.get("/v2/health/live", headers={"X-Ok": "a" * 8000}).status_code == 200


def test_headers_just_under_the_limit_pass_and_just_over_get_431() -> None:
    with guarded(max_header_bytes=4096) as live, live.client() as client:
        assert client.get("/v2/health/live", headers={"X-Pad": "a" * 3500}).status_code == 200
        assert client.get("/v2/health/live", headers={"X-Pad": "a" * 5000}).status_code == 431


def test_idle_keepalive_connections_close_after_the_keepalive_timeout_and_requests_reuse_them() -> None:
    with guarded(**SHORT) as live:
        with live.client() as client:
            for _ in range(20):  # many requests on one kept-alive connection: the guard's timers reset per request
                assert client.post("/predict", json={"inputs": [[1, 2, 3, 4]]}).status_code == 200
        with connect(live) as sock:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            data, took = read_until_closed(sock)
            assert data.startswith(b"HTTP/1.1 200 ")
            assert took < 2.5  # closed after ~0.5 s idle


def test_at_the_connection_cap_slow_connections_give_way_and_health_answers() -> None:
    with guarded(max_connections=8, header_timeout_s=30) as live:
        slow = [connect(live) for _ in range(12)]
        try:
            for sock in slow:
                sock.sendall(b"GET /v2/health/live HTTP/1.1\r\n")  # and never the rest
            for _ in range(5):  # fresh connections (kubelet probes) still get through, quickly
                started = time.monotonic()
                assert httpx.get(f"{live.url}/v2/health/ready", timeout=5).status_code == 200
                assert time.monotonic() - started < 1
            assert live.metric("mlplat_connections_closed_total", reason="evicted") >= 4
            assert len(live.server.server_state.connections) <= 8
        finally:
            for sock in slow:
                sock.close()


def test_connection_cap_stays_clear_of_the_fd_limit() -> None:
    assert connection_cap(1000, fd_limit=1024) == 1024 - 128
    assert connection_cap(1000, fd_limit=256) == 256 - FD_RESERVE_MIN
    assert connection_cap(100, fd_limit=1_000_000) == 100


def test_many_slow_connections_under_a_lowered_file_limit_do_not_stop_health(tmp_path: Path) -> None:
    """1,100 slowloris connections under a 1,024 fd limit made every request fail; scaled down: 400 over 256."""
    model = tmp_path / "mlp.pt"
    torch.jit.script(make_mlp()).save(str(model))
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([*mlplat.__path__, os.environ.get("PYTHONPATH", "")]),
        "MLPLAT_SERVING_MODEL_URI": str(model),
        "MLPLAT_SERVING_PORT": str(port),
        "MLPLAT_SERVING_DRAIN_DELAY_S": "0",
    }

    def low_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    server = subprocess.Popen(
        [sys.executable, "-m", "mlplat.serving"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=low_fd_limit,
    )
    url = f"http://127.0.0.1:{port}"
    slow: list[socket.socket] = []
    try:
        wait_until_ready(url, server)
        for _ in range(400):
            with suppress(OSError):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
                slow.append(sock)
        for _ in range(10):
            started = time.monotonic()
            assert httpx.get(f"{url}/v2/health/live", timeout=5).status_code == 200
            assert httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200
            assert time.monotonic() - started < 2
        with httpx.Client(base_url=url, timeout=5) as client:
            answer = client.post("/predict", json={"inputs": [[0.5] * 8]})
            assert answer.status_code == 200, answer.text
    finally:
        for sock in slow:
            sock.close()
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
