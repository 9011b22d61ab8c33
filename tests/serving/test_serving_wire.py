"""The wire fast path (mlplat.serving.wire) against the app's ASGI dispatcher, on real servers on 127.0.0.1.

Two servers load the same model with `mlplat serve`'s uvicorn config (the connection guard, its settings), one
with the fast path turned off (every request goes through the ASGI dispatcher), one with it on. The same raw
requests, valid and invalid, must get the same bytes back (the `date` header aside), and the servers must count
them alike. Then what only the fast path does for itself: pipelining, `Expect: 100-continue`,
HTTP/1.0, a disconnect while queued, the 504 at the request timeout.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
from support.serving import FEATURES, LiveServer, run_server, slow_model, training_inputs

from mlplat.serving.app import create_app
from mlplat.serving.settings import ServingSettings

KEY = "k3y"
AUTH = f"Authorization: Bearer {KEY}\r\n"


def exchange(live: LiveServer, raw: bytes, answers: int = 1, timeout: float = 10.0) -> bytes:
    """Send `raw` on a new connection and read `answers` complete responses (or until the server closes)."""
    host, port = live.url.removeprefix("http://").split(":")
    data = b""
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(raw)
        deadline = time.monotonic() + timeout
        while _complete(data) < answers and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def _complete(data: bytes) -> int:
    """How many whole responses (with Content-Length bodies; interim 100 responses skipped) `data` holds."""
    count, at = 0, 0
    while True:
        end = data.find(b"\r\n\r\n", at)
        if end < 0:
            return count
        head = data[at:end].lower()
        if head.startswith(b"http/1.1 100 "):
            at = end + 4
            continue
        length = re.search(rb"content-length: (\d+)", head)
        body_end = end + 4 + (int(length.group(1)) if length else 0)
        if len(data) < body_end:
            return count
        count, at = count + 1, body_end


def without_date(data: bytes) -> bytes:
    return re.sub(rb"date: [^\r]*\r\n", b"", data)


def post(path: str, body: bytes, *, headers: str = AUTH, version: str = "1.1", content_type: bool = True) -> bytes:
    """A raw POST with a Content-Length body, a fixed request id and the API key."""
    kind = "Content-Type: application/json\r\n" if content_type else ""
    head = f"POST {path} HTTP/{version}\r\nHost: t\r\nX-Request-ID: same-id\r\n{kind}{headers}"
    return head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from support.serving import make_mlp, save_mlflow_model

    return save_mlflow_model(make_mlp(), tmp_path_factory.mktemp("wire") / "mlp")


@pytest.fixture(scope="module")
def pair(model_dir: Path) -> Iterator[tuple[LiveServer, LiveServer]]:
    """(ASGI dispatcher, wire fast path) servers for the same model, settings and API key."""
    settings = {"model_uri": str(model_dir), "api_key": KEY, "max_request_rows": 16}
    with ExitStack() as stack:
        asgi = stack.enter_context(
            run_server(create_app(ServingSettings(**settings)), guarded=True, fast_path=False)  # type: ignore[arg-type]
        )
        wire = stack.enter_context(run_server(create_app(ServingSettings(**settings)), guarded=True))  # type: ignore[arg-type]
        yield asgi, wire


def v2(rows: np.ndarray, **overrides: object) -> bytes:
    tensor: dict[str, object] = {"name": "input-0", "shape": list(rows.shape), "datatype": "FP32"}
    tensor["data"] = rows.ravel().tolist()
    tensor.update(overrides)
    return json.dumps({"id": "v2-id", "inputs": [tensor]}).encode()


ROW = training_inputs(1, seed=11)
ROWS = training_inputs(3, seed=12)
CASES: dict[str, bytes] = {
    "predict one row": post("/predict", json.dumps({"inputs": ROW.tolist()}).encode()),
    "predict three rows": post("/predict", json.dumps({"inputs": ROWS.tolist()}).encode()),
    "predict with a query string": post("/predict?debug=1", json.dumps({"inputs": ROW.tolist()}).encode()),
    "predict without a content type": post(
        "/predict", json.dumps({"inputs": ROW.tolist()}).encode(), content_type=False
    ),
    "short row": post("/predict", json.dumps({"inputs": [[1.0] * (FEATURES - 1)]}).encode()),
    "string in a row": post("/predict", json.dumps({"inputs": [[1.0] * 7 + ["x"]]}).encode()),
    "bools": post("/predict", json.dumps({"inputs": [[True] * FEATURES]}).encode()),
    "float32 overflow": post("/predict", json.dumps({"inputs": [[1e39] * FEATURES]}).encode()),
    "no rows": post("/predict", b'{"inputs": []}'),
    "wrong key": post("/predict", json.dumps({"instances": ROW.tolist()}).encode()),
    "not json": post("/predict", b"{not json"),
    "empty body": post("/predict", b""),
    "too many rows": post("/predict", json.dumps({"inputs": training_inputs(17).tolist()}).encode()),
    "no api key": post("/predict", json.dumps({"inputs": ROW.tolist()}).encode(), headers=""),
    "wrong api key": post("/predict", json.dumps({"inputs": ROW.tolist()}).encode(), headers="Authorization: x\r\n"),
    "declared body over the model's limit": (
        b"POST /predict HTTP/1.1\r\nHost: t\r\nX-Request-ID: same-id\r\n"
        + AUTH.encode()
        + b"Content-Length: 9999999\r\n\r\n"
    ),
    "get predict": f"GET /predict HTTP/1.1\r\nHost: t\r\nX-Request-ID: same-id\r\n{AUTH}\r\n".encode(),
    "hostile request id": post(
        "/predict", json.dumps({"inputs": ROW.tolist()}).encode(), headers=AUTH + "X-Request-ID: a b\r\n"
    ),
    "v2 flat": post("/v2/models/mlp/infer", v2(ROWS)),
    "v2 nested": post("/v2/models/mlp/infer", v2(ROWS, data=ROWS.tolist())),
    "v2 percent-encoded path": post("/v2/models/ml%70/infer", v2(ROWS)),
    "v2 unknown model": post("/v2/models/other/infer", v2(ROWS)),
    "v2 unknown version": post("/v2/models/mlp/versions/999/infer", v2(ROWS)),
    "v2 wrong datatype": post("/v2/models/mlp/infer", v2(ROWS, datatype="INT32")),
    "v2 wrong input name": post("/v2/models/mlp/infer", v2(ROWS, name="x")),
    "v2 wrong shape": post("/v2/models/mlp/infer", v2(ROWS, shape=[3, 7])),
    "v2 bool among floats": post("/v2/models/mlp/infer", v2(ROWS, data=[True, *ROWS.ravel().tolist()[1:]])),
    "v2 two inputs": post(
        "/v2/models/mlp/infer",
        json.dumps({"inputs": [json.loads(v2(ROWS))["inputs"][0]] * 2}).encode(),
    ),
    "v2 unknown output": post(
        "/v2/models/mlp/infer",
        json.dumps({**json.loads(v2(ROWS)), "outputs": [{"name": "logits"}]}).encode(),
    ),
    "v2 bad envelope": post("/v2/models/mlp/infer", b'{"inputs": "x"}'),
    "http/1.0": post("/predict", json.dumps({"inputs": ROW.tolist()}).encode(), version="1.0"),
    "chunked body": (
        b"POST /predict HTTP/1.1\r\nHost: t\r\nX-Request-ID: same-id\r\n"
        + AUTH.encode()
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"".join(
            b"%x\r\n%s\r\n" % (len(part), part)
            for part in (lambda body: [body[i : i + 50] for i in range(0, len(body), 50)])(
                json.dumps({"inputs": ROWS.tolist()}).encode()
            )
        )
        + b"0\r\n\r\n"
    ),
    "expect 100-continue": post(
        "/predict", json.dumps({"inputs": ROW.tolist()}).encode(), headers=AUTH + "Expect: 100-continue\r\n"
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_fast_path_answers_byte_for_byte_as_the_asgi_dispatcher(
    pair: tuple[LiveServer, LiveServer], case: str
) -> None:
    asgi, wire = pair
    raw = CASES[case]
    expected, got = without_date(exchange(asgi, raw)), without_date(exchange(wire, raw))
    assert expected.startswith(b"HTTP/1.1 ")
    if b"hostile" not in case.encode():
        assert got == expected
    else:  # a request id that is not safe to echo is replaced by a generated one (a per-server prefix)
        pattern = rb"x-request-id: [0-9a-f]{8}-[0-9a-f]+\r\n"
        assert re.sub(pattern, b"", got) == re.sub(pattern, b"", expected)
        assert re.search(pattern, got)


def test_every_case_took_the_path_it_is_meant_to_test(
    pair: tuple[LiveServer, LiveServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The comparison above means something only if the two servers answered by different code."""
    from mlplat.serving.wire import InferenceCycle

    begun: list[str] = []
    original = InferenceCycle.begin

    def counting(cycle: InferenceCycle) -> None:
        begun.append(cycle.scope["path"])
        original(cycle)

    monkeypatch.setattr(InferenceCycle, "begin", counting)
    asgi, wire = pair
    exchange(asgi, CASES["predict one row"])
    exchange(asgi, CASES["v2 flat"])
    assert begun == []
    exchange(wire, CASES["predict one row"])
    exchange(wire, CASES["v2 flat"])
    exchange(wire, CASES["get predict"])  # not an inference request: the ASGI dispatcher answers it
    assert begun == ["/predict", "/v2/models/mlp/infer"]


def test_both_paths_count_the_same_requests(pair: tuple[LiveServer, LiveServer]) -> None:
    series = [
        ("mlplat_requests_total", {"route": "/predict", "status": "200"}),
        ("mlplat_requests_total", {"route": "/predict", "status": "422"}),
        ("mlplat_requests_total", {"route": "/predict", "status": "401"}),
        ("mlplat_requests_total", {"route": "/v2/models/{name}/infer", "status": "404"}),
        ("mlplat_request_duration_seconds_count", {"route": "/predict"}),
    ]

    def counts(live: LiveServer) -> list[float]:
        return [live.metric(name, **labels) for name, labels in series]

    before = [counts(live) for live in pair]
    for raw in (CASES["predict one row"], CASES["short row"], CASES["v2 unknown model"], CASES["no api key"]):
        for live in pair:
            exchange(live, raw)
    added = [[a - b for a, b in zip(counts(live), was, strict=True)] for live, was in zip(pair, before, strict=True)]
    assert added[0] == added[1] == [1, 1, 1, 1, 3]


def test_pipelined_requests_are_answered_in_order(pair: tuple[LiveServer, LiveServer]) -> None:
    asgi, wire = pair
    raw = CASES["predict three rows"] + CASES["short row"] + CASES["v2 flat"]
    expected, got = without_date(exchange(asgi, raw, answers=3)), without_date(exchange(wire, raw, answers=3))
    assert _complete(got) == 3
    assert got == expected
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", got) == [b"200", b"422", b"200"]


def test_many_requests_on_one_kept_alive_connection(pair: tuple[LiveServer, LiveServer]) -> None:
    _, wire = pair
    rows = training_inputs(20, seed=13)
    raw = b"".join(post("/predict", json.dumps({"inputs": [row.tolist()]}).encode()) for row in rows)
    answers = exchange(wire, raw, answers=len(rows))
    bodies = [json.loads(part.split(b"\r\n\r\n", 1)[1]) for part in re.split(rb"(?=HTTP/1\.1 )", answers) if part]
    got = np.array([body["predictions"][0] for body in bodies], np.float32)
    assert got.shape == (20, 3)
    with_asgi = [
        json.loads(
            without_date(exchange(pair[0], post("/predict", json.dumps({"inputs": [row.tolist()]}).encode()))).split(
                b"\r\n\r\n", 1
            )[1]
        )["predictions"][0]
        for row in rows[:3]
    ]
    np.testing.assert_array_equal(got[:3], np.array(with_asgi, np.float32))


def test_a_caller_that_hangs_up_while_queued_is_skipped_at_once() -> None:
    """No 20 ms wait before the disconnect is noticed: the protocol hears of it directly."""
    model = slow_model(0.4)
    settings = ServingSettings(model_uri="test", max_batch_size=1)
    with run_server(create_app(settings, model), guarded=True) as live:
        host, port = live.url.removeprefix("http://").split(":")
        body = json.dumps({"inputs": [[1.0, 1.0, 1.0, 1.0]]}).encode()
        raw = b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        with socket.create_connection((host, int(port)), timeout=10) as first:
            first.sendall(raw)  # occupies the worker for 0.4 s
            time.sleep(0.1)
            with socket.create_connection((host, int(port)), timeout=10) as second:
                second.sendall(raw)
                time.sleep(0.05)
            assert first.recv(65536).startswith(b"HTTP/1.1 200 ")
        deadline = time.monotonic() + 5
        while live.metric("mlplat_requests_skipped_total", reason="disconnect") < 1:
            assert time.monotonic() < deadline, "the hang-up was not noticed"
            time.sleep(0.05)
        assert live.metric("mlplat_requests_total", route="/predict", status="499") == 1
    assert model.module.batches == [1]  # type: ignore[union-attr]


def test_a_queued_request_gets_504_at_its_timeout_and_is_not_computed() -> None:
    model = slow_model(0.6)
    settings = ServingSettings(model_uri="test", max_batch_size=1, request_timeout_s=0.4)
    with run_server(create_app(settings, model), guarded=True) as live:
        body = json.dumps({"inputs": [[2.0, 2.0, 2.0, 2.0]]}).encode()
        raw = b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        host, port = live.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as first:
            first.sendall(raw)
            time.sleep(0.05)
            started = time.monotonic()
            late = exchange(live, raw)
            took = time.monotonic() - started
            assert first.recv(65536).startswith(b"HTTP/1.1 504 ")  # outlived its timeout while computing
        time.sleep(0.5)
        assert live.metric("mlplat_requests_skipped_total", reason="timeout") == 1
    assert late.startswith(b"HTTP/1.1 504 ") and b"request timeout of 0.4 s" in late
    assert took < 2  # answered at its deadline, not after the 0.6 s forward plus its own
    assert model.module.batches == [1]  # type: ignore[union-attr]


def test_the_deadline_check_fails_only_overdue_requests_even_one_queued_after_later_ones() -> None:
    from mlplat.serving.batcher import RequestTimedOut
    from mlplat.serving.wire import Deadlines

    async def scenario() -> tuple[bool, BaseException | None, bool]:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(timeout_s=0.2)  # checked every 10 ms
        now = loop.time()
        late: asyncio.Future[np.ndarray] = loop.create_future()
        answered: asyncio.Future[np.ndarray] = loop.create_future()
        early: asyncio.Future[np.ndarray] = loop.create_future()
        deadlines.watch(now + 30, late)
        deadlines.watch(now + 31, answered)
        deadlines.watch(now + 0.05, early)  # its body arrived last, but it is due first
        answered.set_result(np.zeros(1))
        await asyncio.sleep(0.3)
        return late.done(), early.exception() if early.done() else None, answered.done()

    late_done, early_error, answered_done = asyncio.run(scenario())
    assert isinstance(early_error, RequestTimedOut)
    assert not late_done
    assert answered_done


def test_an_answered_request_is_released_when_the_next_is_watched_not_at_the_next_check() -> None:
    # Held until the periodic check, every answered request's objects stayed alive for up to 50 ms at full load
    # (about a thousand of them), and the cyclic collector kept walking them.
    import weakref

    from mlplat.serving.wire import Deadlines

    async def scenario() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(timeout_s=5.0)  # its check runs 50 ms later: this test never awaits it
        answered: asyncio.Future[np.ndarray] = loop.create_future()
        ref = weakref.ref(answered)
        deadlines.watch(loop.time() + 5, answered)
        answered.set_result(np.zeros(1))
        del answered
        kept_while_alone = ref() is not None
        deadlines.watch(loop.time() + 5, loop.create_future())
        return kept_while_alone, ref() is None

    gc.disable()  # freed by reference counting alone, not by a collection
    try:
        kept_while_alone, released = asyncio.run(scenario())
    finally:
        gc.enable()
    assert kept_while_alone  # the deque held it (so the test can fail)
    assert released


def test_an_inference_cycle_holds_all_the_state_uvicorns_cycle_constructor_sets() -> None:
    """InferenceCycle sets uvicorn's cycle attributes itself (no call through its constructor): a uvicorn release
    that adds one fails here, not on a connection."""
    from types import SimpleNamespace

    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    from mlplat.serving.wire import InferenceCycle

    transport, flow, logger, on_response, headers = object(), object(), object(), object(), [(b"server", b"x")]
    uvicorns = RequestResponseCycle(
        scope={"type": "http"},  # type: ignore[arg-type]
        transport=transport,  # type: ignore[arg-type]
        flow=flow,  # type: ignore[arg-type]
        logger=logger,  # type: ignore[arg-type]
        access_logger=logger,  # type: ignore[arg-type]
        access_log=False,
        default_headers=headers,
        message_event=asyncio.Event(),
        expect_100_continue=True,
        keep_alive=False,
        on_response=on_response,  # type: ignore[arg-type]
    )
    protocol = SimpleNamespace(
        transport=transport,
        flow=flow,
        logger=logger,
        access_logger=logger,
        access_log=False,
        server_state=SimpleNamespace(default_headers=headers),
        on_response_complete=on_response,
        expect_100_continue=True,
        serving=SimpleNamespace(settings=SimpleNamespace(max_body_bytes=1024)),
        deadlines=object(),
        waited=0.0,
        hold=object(),
        held=SimpleNamespace(release_oldest=object()),
    )
    ours = InferenceCycle(protocol, {"type": "http"}, "predict", False)  # type: ignore[arg-type]
    theirs, mine = vars(uvicorns), vars(ours)
    assert set(theirs) <= set(mine), sorted(set(theirs) - set(mine))
    for name, value in theirs.items():
        if name != "message_event":  # the fast path's cycles share one event that is never awaited
            assert mine[name] == value, name
