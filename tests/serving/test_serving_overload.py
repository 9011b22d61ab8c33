"""Overload and hostile payloads on a real server process (127.0.0.1): early rejection and goodput.

- A 4 MiB V2 body next to small requests: refused by size before it is read or parsed, so the small requests'
  latency hardly moves.
- A retry storm at many times the capacity: requests that could not finish in time are refused at once (503 +
  Retry-After), so goodput stays near capacity and answered requests beat the request timeout.
- Wrong shapes on a model without a signature, strict V2 datatypes.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from support import TESTS_DIR
from support.serving import FEATURES, free_port, make_mlp, run_server, save_slow_model, wait_until_ready

import mlplat
from mlplat.serving.app import create_app
from mlplat.serving.schema import InputError, V2Input, body_limit, v2_input_to_array
from mlplat.serving.settings import ServingSettings
from mlplat.serving.wire import HeldConnections


@contextmanager
def server_process(model: Path, **settings: str) -> Iterator[str]:
    """`python -m mlplat.serving` on a free port, ready; yields its URL."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), *mlplat.__path__, os.environ.get("PYTHONPATH", "")]),
        "MLPLAT_SERVING_MODEL_URI": str(model),
        "MLPLAT_SERVING_PORT": str(port),
        "MLPLAT_SERVING_DRAIN_DELAY_S": "0",
        "MLPLAT_SERVING_TORCH_THREADS": "1",
        **{f"MLPLAT_SERVING_{k.upper()}": v for k, v in settings.items()},
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "mlplat.serving"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, server)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


@pytest.fixture(scope="module")
def scripted_mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TorchScript MLP (8 features): no signature, no input example."""
    path = tmp_path_factory.mktemp("scripted") / "mlp.pt"
    torch.jit.script(make_mlp()).save(str(path))
    return path


def v2_body(rows: np.ndarray, name: str = "input-0") -> dict[str, object]:
    return {"inputs": [{"name": name, "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}]}


# -- errors: a model without a signature, strict V2 -----------------------------------------------------------


def test_a_wrong_shape_on_a_signatureless_model_is_422_not_500(scripted_mlp: Path) -> None:
    with run_server(create_app(ServingSettings(model_uri=str(scripted_mlp)))) as live, live.client() as client:
        ok = client.post("/predict", json={"inputs": [[0.5] * FEATURES]})
        wrong = client.post("/predict", json={"inputs": [[0.5] * 5]})
        v2_wrong = client.post("/v2/models/mlp/infer", json=v2_body(np.ones((1, 5), np.float32)))
        v2_ok = client.post("/v2/models/mlp/infer", json=v2_body(np.ones((2, FEATURES), np.float32)))
    assert ok.status_code == 200
    assert wrong.status_code == 422 and "8 float32 values" in wrong.json()["error"]
    assert v2_wrong.status_code == 422 and "each row must have shape [8]" in v2_wrong.json()["error"]
    assert v2_ok.status_code == 200 and v2_ok.json()["outputs"][0]["shape"] == [2, 3]


@pytest.mark.parametrize(
    ("datatype", "data", "fragment"),
    [
        ("FP32", [1.0, True], "data must hold numbers for FP32"),
        ("FP32", [1.0, "2"], "data must hold numbers for FP32"),
        ("FP32", [1.0, None], "data must hold numbers for FP32"),
        ("INT32", [1, 2.5], "data must hold integers for INT32"),
        ("INT32", [1, False], "data must hold integers for INT32"),
        ("INT8", [1, 300], "out of range for INT8"),
        ("UINT8", [1, -1], "out of range for UINT8"),
        ("BOOL", [True, 1], "data must hold true or false for BOOL"),
        ("FP32", [1.0, 1e39], "values overflow FP32"),
        ("FP32", [[1.0], [2.0, 3.0]], "ragged"),
    ],
)
def test_v2_datatypes_are_strict(datatype: str, data: list[object], fragment: str) -> None:
    import msgspec

    given = V2Input(name="x", shape=[1, 2], datatype=datatype, data=msgspec.Raw(msgspec.json.encode(data)))
    with pytest.raises(InputError, match=fragment):
        v2_input_to_array(given, None, 1024)


def test_v2_accepts_flat_and_nested_data_and_ints_for_floats() -> None:
    import msgspec

    for data in ([1, 2.5, 3, 4], [[1, 2.5], [3, 4]]):
        given = V2Input(name="x", shape=[2, 2], datatype="FP32", data=msgspec.Raw(msgspec.json.encode(data)))
        array = v2_input_to_array(given, None, 1024)
        assert array.dtype == np.float32 and array.tolist() == [[1.0, 2.5], [3.0, 4.0]]


@pytest.mark.parametrize(
    ("dtype", "rows", "fragment"),
    [
        (np.float32, [[1.0, 2.0], [3.0, -1e39]], "Expected `float` >= -3.4028234663852886e+38 - at `$.inputs[1][1]`"),
        (np.float32, [[1.0, 3.5e38], [1e39, 1.0]], "Expected `float` <= 3.4028234663852886e+38 - at `$.inputs[0][1]`"),
        (np.float16, [[1.0, 65520.0], [1.0, 1.0]], "Expected `float` <= 65504.0 - at `$.inputs[0][1]`"),
        (np.int8, [[1, 128], [1, 1]], "Expected `int` <= 127 - at `$.inputs[0][1]`"),
        (np.float32, [[1.0, True], [1.0, 1.0]], "Expected `float`, got `bool` - at `$.inputs[0][1]`"),
    ],
)
def test_predict_values_outside_the_dtype_range_are_refused_at_the_first_one(
    dtype: type, rows: list[list[object]], fragment: str
) -> None:
    from mlplat.serving.schema import PredictDecoder, TensorSpec

    decoder = PredictDecoder(TensorSpec("x", np.dtype(dtype), (-1, 2)), 1024)
    with pytest.raises(InputError) as raised:
        decoder.decode(json.dumps({"inputs": rows}).encode())
    assert fragment in str(raised.value)
    assert "where each row is 2 " in str(raised.value)  # and what is allowed


def test_predict_floats_at_the_edge_of_the_range_keep_their_values() -> None:
    from mlplat.serving.schema import PredictDecoder, TensorSpec

    rows = [[3.4028234663852886e38, -3.4028234663852886e38, 0.1, 1e-40], [1e300, 2, 3, 4]]
    narrow = PredictDecoder(TensorSpec("x", np.dtype(np.float32), (-1, 4)), 1024)
    got = narrow.decode(json.dumps({"inputs": rows[:1]}).encode())
    assert got.dtype == np.float32 and got.tolist() == np.asarray(rows[:1], dtype=np.float32).tolist()
    wide = PredictDecoder(TensorSpec("x", np.dtype(np.float64), (-1, 4)), 1024)  # a double's range is JSON's
    assert wide.decode(json.dumps({"inputs": rows}).encode()).tolist() == [[float(v) for v in r] for r in rows]


# -- reject early: the body limit from the model's rows ---------------------------------------------------------


def test_the_body_limit_follows_the_model_rows() -> None:
    from mlplat.serving.schema import TensorSpec

    spec = TensorSpec("x", np.dtype(np.float32), (-1, 8))
    assert body_limit(spec, 1024, 4 << 20) == 64 * 1024 + 1024 * 8 * 48
    assert body_limit(TensorSpec("x", np.dtype(np.float32), (-1, -1)), 1024, 4 << 20) == 4 << 20
    assert body_limit(None, 1024, 4 << 20) == 4 << 20
    assert body_limit(TensorSpec("x", np.dtype(np.float32), (-1, 3, 224, 224)), 1024, 4 << 20) == 4 << 20


def test_a_body_larger_than_the_model_rows_need_is_refused_before_it_is_read(scripted_mlp: Path) -> None:
    with run_server(create_app(ServingSettings(model_uri=str(scripted_mlp)))) as live:
        host, port = live.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            started = time.monotonic()
            sock.sendall(
                b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % (4 << 20)
            )  # ... and no body at all: the answer must not wait for it
            answer = sock.recv(65536)
            took = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 413 "), answer
        assert b"MLPLAT_SERVING_MAX_REQUEST_ROWS" in answer
        assert took < 1
        # Chunked (no Content-Length): cut off while reading, at the same limit.
        big = {"inputs": [[0.5] * FEATURES] * 20000}

        def chunks() -> Iterator[bytes]:
            import orjson

            body = orjson.dumps(big)
            for i in range(0, len(body), 65536):
                yield body[i : i + 65536]

        with live.client() as client:
            response = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
        assert response.status_code == 413


def _latencies(url: str, n: int) -> list[float]:
    body = {"inputs": [[0.5] * FEATURES]}
    out = []
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(n):
            started = time.perf_counter()
            assert client.post("/predict", json=body).status_code == 200
            out.append(time.perf_counter() - started)
    return out


def test_large_v2_bodies_cost_small_requests_no_more_than_a_few_ms(scripted_mlp: Path) -> None:
    big = b'{"inputs":[{"name":"input-0","datatype":"FP32","shape":[4,1],"data":[' + b"0.123456," * 466000 + b"1]}]}"
    assert len(big) > 4_000_000
    with server_process(scripted_mlp) as url:
        _latencies(url, 50)  # warm up
        base = statistics.median(_latencies(url, 200))
        stop = threading.Event()
        refused = [0, 0]
        host, port = url.removeprefix("http://").split(":")

        def hammer(i: int) -> None:  # a closed loop of 4 MiB V2 requests, as the probe's two clients
            while not stop.is_set():
                with suppress(OSError), socket.create_connection((host, int(port)), timeout=10) as sock:
                    sock.sendall(
                        b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(big)
                    )
                    with suppress(OSError):
                        sock.sendall(big)
                    if sock.recv(64).startswith(b"HTTP/1.1 413"):
                        refused[i] += 1

        threads = [threading.Thread(target=hammer, args=(i,), daemon=True) for i in range(2)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.3)
            loaded = statistics.median(_latencies(url, 200))
        finally:
            stop.set()
            for thread in threads:
                thread.join(15)
    assert sum(refused) > 10
    # Before: p50 1.8 ms -> 343 ms (each body parsed whole). What remains is the two clients' connection churn
    # and the 4 MiB copies on this machine's CPUs (client and server share them), not parsing: measured +4 ms on
    # a quiet machine, +7 ms on a busy one. The bound sits far below the regression and above that noise.
    assert loaded <= base + 0.025, f"p50 {base * 1000:.2f} ms alone, {loaded * 1000:.2f} ms next to 4 MiB bodies"


# -- goodput under a retry storm ---------------------------------------------------------------------------------

FORWARD_S, BATCH, TIMEOUT_S = 0.1, 4, 1.0
CAPACITY = BATCH / FORWARD_S  # requests per second


@pytest.fixture(scope="module")
def slow_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every forward of this model takes FORWARD_S, whatever the batch size."""
    return save_slow_model(tmp_path_factory.mktemp("slow"), FORWARD_S)


def test_a_retry_storm_at_many_times_capacity_keeps_goodput_and_answers_within_the_timeout(
    slow_model_dir: Path,
) -> None:
    clients, retry_s, warmup_s, measure_s = 60, 0.02, 1.5, 4.0  # 60 waiting clients = 15x what one second holds
    with server_process(
        slow_model_dir,
        allow_pickle="true",
        max_batch_size=str(BATCH),
        request_timeout_s=str(TIMEOUT_S),
        queue_limit="512",
    ) as url:
        started = time.monotonic()
        window = (started + warmup_s, started + warmup_s + measure_s)
        answered: list[tuple[float, float]] = []  # (finished at, latency) of 200s
        statuses: dict[int, int] = {}
        lock = threading.Lock()

        def client() -> None:
            with httpx.Client(base_url=url, timeout=10) as http:
                while time.monotonic() < window[1]:
                    sent = time.monotonic()
                    status = http.post("/predict", json={"inputs": [[1.0, 2.0, 3.0, 4.0]]}).status_code
                    done = time.monotonic()
                    with lock:
                        statuses[status] = statuses.get(status, 0) + 1
                        if status == 200:
                            answered.append((done, done - sent))
                    if status == 503:
                        time.sleep(retry_s)  # a storm: retries at once, whatever Retry-After says

        threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(warmup_s + measure_s + 15)
    in_window = [latency for done, latency in answered if window[0] <= done < window[1]]
    goodput = len(in_window) / measure_s
    p99 = float(np.percentile(in_window, 99))
    assert statuses.get(503, 0) > 0, statuses
    assert goodput >= 0.8 * CAPACITY, f"goodput {goodput:.1f}/s of {CAPACITY:.0f}/s; {statuses}"
    assert p99 <= TIMEOUT_S, f"p99 {p99:.3f} s; {statuses}"


@pytest.mark.parametrize("hold", ["1", "0"])
def test_a_connection_refused_for_overload_is_not_read_again_until_the_queue_has_room(
    slow_model_dir: Path, hold: str
) -> None:
    # One request in the forward (0.1 s), one queued (the limit): a third is refused at once. Its client retries
    # at once on the same connection, as a storm does. With a hold, that retry waits unread in the kernel until
    # the queued request is answered (a place frees, ~0.2 s), well before the 1 s hold would end, and is served;
    # without one it is read and refused at once.
    body = json.dumps({"inputs": [[1.0, 2.0, 3.0, 4.0]]})
    with server_process(
        slow_model_dir,
        allow_pickle="true",
        max_batch_size="1",
        queue_limit="1",
        request_timeout_s="8",
        shed_hold_s=hold,
    ) as url:
        port = int(url.rsplit(":", 1)[1])
        headers = {"content-type": "application/json"}
        busy = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(2)]
        for other in busy:  # sent, not yet read: the first goes to the forward, the second waits in the queue
            other.request("POST", "/predict", body, headers)
            time.sleep(0.03)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("POST", "/predict", body, headers)
        refused = connection.getresponse()
        refused.read()
        sent = time.monotonic()
        connection.request("POST", "/predict", body, headers)
        retry = connection.getresponse()
        retry.read()
        waited = time.monotonic() - sent
        connection.close()
        assert [other.getresponse().status for other in busy] == [200, 200]
    assert refused.status == 503 and refused.getheader("retry-after") == "1"
    if hold == "0":
        assert retry.status == 503 and waited < 0.2, (retry.status, waited)
    else:
        assert retry.status == 200 and 0.1 < waited < 0.8, (retry.status, waited)


class _Transport:
    def __init__(self) -> None:
        self.reading, self.closing = True, False

    def is_closing(self) -> bool:
        return self.closing


class _Flow:
    def __init__(self, transport: _Transport) -> None:
        self.transport = transport

    def pause_reading(self) -> None:
        self.transport.reading = False

    def resume_reading(self) -> None:
        self.transport.reading = True


class _Protocol:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop, self.transport = loop, _Transport()
        self.flow = _Flow(self.transport)
        self.waited = self.held_at = 0.0


def test_held_connections_are_released_oldest_first_when_a_place_frees_or_when_their_hold_ends() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        held = HeldConnections()
        first, second, third = (_Protocol(loop) for _ in range(3))
        for protocol, seconds in ((first, 10.0), (second, 10.0), (third, 0.05)):
            held.hold(protocol, seconds)
        held.hold(first, 10.0)  # already held: no second entry
        assert len(held) == 3 and not any(p.transport.reading for p in (first, second, third))
        held.release_oldest()
        assert first.transport.reading and not second.transport.reading and len(held) == 2
        await asyncio.sleep(0.1)  # the third's hold ends by itself
        assert third.transport.reading and third.waited >= 0.05 and len(held) == 1
        second.transport.closing = True
        held.forget(second)
        held.release_oldest()  # nothing left to release
        assert len(held) == 0 and not second.transport.reading

    asyncio.run(scenario())
