"""The wire fast path: the inference routes served from uvicorn's HTTP protocol, without an ASGI task per request.

Under uvicorn, each request costs an asyncio task, a `receive()` and two `send()` coroutines, their message
dicts, a header check per response header and two writes: 15-20 us of server CPU per request on this project's
benchmark machine, a sixth of all a request costs at full load (docs/benchmarks.md). :func:`fast_protocol`
builds a subclass of uvicorn's httptools protocol that serves `POST /predict` and
`POST /v2/models/<name>[/versions/<v>]/infer` from the parser's callbacks instead: the body is collected as it
arrives, parsed when it is complete, its rows queued on the batcher with the request itself as the object their
outcome goes to, and the answer written in one `transport.write` the moment the outputs are there.

Every rule and every byte of the answer comes from :class:`~mlplat.serving.app.ServingApp`, the same methods
its ASGI dispatcher calls (checks, parsing, errors, headers, metrics, access log), so both paths answer alike
(tests/serving/test_serving_wire.py compares them byte for byte). What differs is only how a request reaches
them. Everything else (other routes, other methods, CORS, upgrades) takes uvicorn's ordinary ASGI path.

The request lives in a :class:`InferenceCycle`, a subclass of uvicorn's request-response cycle, so uvicorn's
connection handling stays as it is: keep-alive and its timeout, pipelining, `Connection: close` on HTTP/1.0,
graceful shutdown (which waits for connections whose cycle has not answered), and the connection guard of
:mod:`mlplat.serving.connection`, which is built on top of this protocol. A caller that disconnects while its
rows are queued is known at once (`connection_lost`), and its rows are skipped by the batcher.

Written against uvicorn 0.54's `httptools_impl` (the cycle's constructor, `_start_asgi_task`, the pipeline),
as the guard is; the byte-for-byte tests fail if a uvicorn release changes what this relies on.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import urllib.parse
from collections import deque
from collections.abc import Callable
from typing import Any

import httptools
import numpy as np
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr

from mlplat.serving.app import Admitted, HTTPError, RequestHead, ServingApp, error_body
from mlplat.serving.batcher import Answer, ClientDisconnected, RequestTimedOut

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# The cycle's `message_event` wakes an ASGI task waiting for body or disconnect; the fast path has no such task,
# so its cycles share one event that is set and never awaited (uvicorn and the guard only ever set it).
_NO_WAITER = asyncio.Event()
logger = logging.getLogger("mlplat.serving")


class InferenceCycle(RequestResponseCycle):
    """One inference request on the fast path: its body, its place in the batcher and its answer.

    uvicorn's protocol and the connection guard see an ordinary cycle (`response_started`, `response_complete`,
    `keep_alive`, `disconnected`, `on_response`); the ASGI methods are never called. To the batcher (and the
    deadline check) it is the request's :class:`~mlplat.serving.batcher.Answer`: the outcome of its rows is
    answered the moment it is set, with no future, done-callback or loop turn in between.
    """

    def __init__(self, protocol: _FastPath, scope: Any, route: str, keep_alive: bool) -> None:
        # uvicorn's cycle state, as RequestResponseCycle.__init__ (0.54) sets it, assigned here from the protocol
        # instead of passed through its eleven keyword arguments: a tenth of the fast path's own Python per request
        # (in-process closed loop of 64 connections: 29.4 -> 26.5 us). tests/serving/test_serving_wire.py checks
        # that every attribute uvicorn's constructor sets is set here.
        self.scope = scope
        self.transport = protocol.transport
        self.flow = protocol.flow
        self.logger = protocol.logger
        self.access_logger = protocol.access_logger
        self.access_log = protocol.access_log
        self.default_headers = protocol.server_state.default_headers
        self.message_event = _NO_WAITER
        self.on_response = protocol.on_response_complete
        self.disconnected = False
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = protocol.expect_100_continue
        self.body = bytearray()
        self.more_body = True
        self.response_started = False
        self.response_complete = False
        self.chunked_encoding = None
        self.expected_content_length = 0
        # The fast path's own.
        server = self.server = protocol.serving
        self.route = route  # its metrics label
        self.deadlines = protocol.deadlines
        self.waited = protocol.waited  # how long it may have waited unread behind a hold
        self.hold = protocol.hold  # holds this connection after an overload refusal (HeldConnections.hold)
        self.freed = protocol.held.release_oldest  # its place in the queue is free again
        self.head: RequestHead | None = None  # set when the request's turn comes (begin)
        self.admitted: Admitted | None = None
        self.body_limit = server.settings.max_body_bytes  # lowered to the model's when admitted
        self.queued = False  # its rows went to the batcher
        self.settled = False  # their outcome is known (an Answer's `done`)
        self.error: BaseException | None = None
        self.request_id: str | None = None  # the V2 request's own id
        self.accounted = False

    # -- driven by the protocol ---------------------------------------------------------------------------

    def begin(self) -> None:
        """The request's turn: run the checks that need no body, then wait for the body (or parse it at once)."""
        server = self.server
        head = self.head = server.head(self.scope, self.waited, self.route)
        try:
            server.check_access(head)
            self.admitted = server.admit(head)
        except HTTPError as exc:
            self.fail(exc)
            return
        except Exception:
            self.fail(server.internal_error(head))
            return
        self.body_limit = self.admitted.body_limit
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(_CONTINUE)
            self.waiting_for_100_continue = False
        if len(self.body) > self.body_limit:
            self.fail(server.too_large(self.body_limit))
        elif not self.more_body:
            self.body_complete()

    def body_received(self) -> None:
        """More body arrived: cut it off (413) as soon as it grows past the limit."""
        if len(self.body) > self.body_limit and self.admitted is not None:
            self.fail(self.server.too_large(self.body_limit))

    def body_complete(self) -> None:
        """Parse the body and queue its rows; the answer is written when the batcher is done with them."""
        server, head, admitted = self.server, self.head, self.admitted
        assert head is not None and admitted is not None
        try:
            rows, self.request_id = server.parse(head, admitted, self.body)
            server.submit_to(self, rows, head)
        except HTTPError as exc:
            self.fail(exc)
            return
        except Exception:
            self.fail(server.internal_error(head))
            return
        self.queued = True
        self.body = bytearray()
        self.deadlines.watch(head.deadline, self)

    def abandon(self) -> None:
        """The caller went away: drop the request (the batcher skips queued rows) and count it."""
        if self.queued and not self.settled:
            self.set_exception(ClientDisconnected())  # accounted as 499 there
        elif not self.queued and self.head is not None:
            self._account(499)

    # -- the batcher's Answer -----------------------------------------------------------------------------

    def done(self) -> bool:
        """Whether the outcome is known (the batcher skips the rows of a request that is done before its batch)."""
        return self.settled

    def cancelled(self) -> bool:
        """Never: an outcome is always a result or an exception."""
        return False

    def exception(self) -> BaseException | None:
        """The error the request ended with, if any."""
        return self.error

    def set_result(self, result: np.ndarray, /) -> None:
        """The rows' outputs: answer 200 now."""
        if self.settled:
            return
        self.settled = True
        head, admitted = self.head, self.admitted
        assert head is not None and admitted is not None
        try:
            body = self.server.answer(head, admitted, self.request_id, result)
        except Exception:
            self._safely(self.fail, self.server.internal_error(head))
            return
        self._safely(self.respond, 200, body)

    def set_exception(self, exception: BaseException, /) -> None:
        """The request failed, timed out, was refused or abandoned: answer (or account for) it now."""
        if self.settled:
            return
        self.settled, self.error = True, exception
        head = self.head
        assert head is not None
        outcome = self.server.failure(exception, head)
        if isinstance(outcome, HTTPError):
            self._safely(self.fail, outcome)
        else:  # the caller is gone
            self._account(499)

    def _safely(self, answer: Callable[..., None], *args: Any) -> None:
        # Called from the batcher's own loop over a batch: an error here must not stop the other answers.
        try:
            answer(*args)
        except Exception:
            logger.exception("could not answer a request")
            self.transport.abort()

    # -- answers ------------------------------------------------------------------------------------------

    def fail(self, error: HTTPError) -> None:
        """Answer with an error; after an overload refusal, hold the connection (:class:`HeldConnections`)."""
        self.respond(error.status, error_body(error), error.headers)
        if error.hold_s > 0:
            self.hold(error.hold_s)

    def respond(self, status: int, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        """Write the whole answer at once, as uvicorn's `send` would write it, then hand the connection back."""
        head = self.head
        assert head is not None
        if self.response_complete or self.disconnected or self.transport.is_closing():
            self._account(499)
            return
        parts = [STATUS_LINE[status], _serialized(self.default_headers)]
        close = False
        for name, value in self.server.response_headers(head.request_id, body, extra):
            if name == b"connection" and b"close" in [token.lower().strip() for token in value.split(b",")]:
                close = True
            parts += (name, b": ", value, b"\r\n")
        if close:
            self.keep_alive = False
        elif not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", body)
        self.response_started = True
        self.waiting_for_100_continue = False
        if self.access_log:  # uvicorn's own access log, when it is on (mlplat serve turns it off)
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(self.scope),
                head.method,
                head.path,
                self.scope["http_version"],
                status,
            )
        self.transport.write(b"".join(parts))
        self.response_complete = True
        self.body = bytearray()
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self._account(status)
        self.on_response()

    def _account(self, status: int) -> None:
        if not self.accounted and self.head is not None:
            self.accounted = True
            self.server.finished(self.head, status)
            if self.queued:
                self.freed()


_DEFAULTS: list[Any] = [None, b""]  # uvicorn's default headers (a new list each second: the date) and their bytes


def _serialized(headers: list[tuple[bytes, bytes]]) -> bytes:
    """uvicorn's default response headers as its `send` writes them, serialized once per list."""
    if headers is not _DEFAULTS[0]:
        _DEFAULTS[1] = b"".join(b"%s: %s\r\n" % (name.lower(), value) for name, value in headers)
        _DEFAULTS[0] = headers
    return bytes(_DEFAULTS[1])


class Deadlines:
    """504 at the request timeout for requests whose rows are queued: one periodic check, not a timer each.

    A loop timer per request costs about 2 us to arm and cancel. Every request has the same timeout, so deadlines
    come in the order requests are queued: they wait in a deque, and while any does, a check every `interval` (a
    twentieth of the timeout, at most 50 ms) drops the answered ones from its head and fails the overdue ones, so
    a 504 comes at most that late. (A request whose body took long to arrive is due before requests queued ahead of
    it; it is put in its place.) The batcher itself refuses (503) a queued request that could no longer be
    answered in time when its batch forms; this catches the rest (a forward that runs long).

    Answered requests also leave the deque's head each time a request is watched, so that their objects are
    freed at once. Kept until the next check (about a thousand of them at full load), they made the interpreter's
    cyclic collector run every few dozen requests and walk them all: a tenth of the server's CPU at concurrency
    64 (docs/benchmarks.md).
    """

    def __init__(self, timeout_s: float) -> None:
        self.interval = min(0.05, max(0.005, timeout_s / 20))
        self._waiting: deque[tuple[float, Answer]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, deadline: float, answer: Answer, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Fail `answer` with :class:`RequestTimedOut` if it is not done by `deadline` (event-loop time)."""
        waiting = self._waiting
        while waiting and waiting[0][1].done():  # the answered leave as new ones come, not all at the next check
            waiting.popleft()
        if not waiting or deadline >= waiting[-1][0]:
            waiting.append((deadline, answer))
        else:
            waiting.insert(bisect.bisect_right([d for d, _ in waiting], deadline), (deadline, answer))
        if self._timer is None:
            loop = loop or asyncio.get_running_loop()
            self._timer = loop.call_later(self.interval, self._check, loop)

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        waiting, now = self._waiting, loop.time()
        while waiting and (waiting[0][1].done() or waiting[0][0] <= now):
            future = waiting.popleft()[1]
            if not future.done():
                future.set_exception(RequestTimedOut())
        self._timer = loop.call_later(self.interval, self._check, loop) if waiting else None


class HeldConnections:
    """Connections not read after an overload refusal: the Retry-After, enforced, until the queue has room.

    A client that retries at once after a 503 (a retry storm) would otherwise cost the server a read, a parse and
    a refusal per attempt, about 40 us of CPU each on the benchmark machine: at ten times capacity, half the CPU
    the model needs (docs/benchmarks.md). A held connection's retry waits in the kernel's socket buffer instead,
    at no cost. Each queued request that ends frees a place, and releases the connection held longest; a hold
    also ends when its time is up (the refusal's Retry-After, bounded by the settings). The request read after a
    hold counts the hold against its deadline, since it may have waited that long. A client that honours
    Retry-After never notices. Pauses go through uvicorn's flow control, so its own pause and resume (pipelining)
    stay consistent.
    """

    def __init__(self) -> None:
        self._held: dict[Any, asyncio.TimerHandle] = {}  # protocol -> its hold's end, in the order held

    def hold(self, protocol: Any, seconds: float) -> None:
        """Stop reading `protocol`'s connection until a place frees or `seconds` pass."""
        if protocol in self._held or protocol.transport.is_closing():
            return
        protocol.flow.pause_reading()
        protocol.held_at = protocol.loop.time()
        self._held[protocol] = protocol.loop.call_later(seconds, self.release, protocol)

    def release(self, protocol: Any) -> None:
        """Read `protocol`'s connection again; its next request knows how long it may have waited."""
        timer = self._held.pop(protocol, None)
        if timer is None:
            return
        timer.cancel()
        protocol.waited = protocol.loop.time() - protocol.held_at
        if not protocol.transport.is_closing():
            protocol.flow.resume_reading()

    def release_oldest(self) -> None:
        """A place in the queue is free: release the connection held longest."""
        if self._held:
            self.release(next(iter(self._held)))

    def forget(self, protocol: Any) -> None:
        """The connection closed."""
        timer = self._held.pop(protocol, None)
        if timer is not None:
            timer.cancel()

    def __len__(self) -> int:
        return len(self._held)


class _FastPath(HttpToolsProtocol):
    """The fast path's callbacks, put in front of a protocol class by :func:`fast_protocol` (which sets the class
    attributes below)."""

    serving: ServingApp  # (uvicorn's protocol has a `server` of its own: its address)
    deadlines: Deadlines
    held: HeldConnections
    cycle: RequestResponseCycle | None  # type: ignore[assignment]  # None before the first request, as uvicorn's

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._active: InferenceCycle | None = None  # the inference request being served, if any
        self.waited = 0.0  # how long the last hold lasted, until the next request is read
        self.held_at = 0.0  # when the current hold began

    def _takes(self) -> bool:
        # The checks uvicorn's own on_headers_complete makes, in its order, for the requests the fast path takes.
        parser = self.parser
        return (
            parser.get_method() == b"POST"
            and self.serving.fast_path
            and self.limit_concurrency is None
            and not parser.should_upgrade()
        )

    def on_headers_complete(self) -> None:
        if not self._takes():
            super().on_headers_complete()
            return
        url = httptools.parse_url(self.url)
        raw_path = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        route = self.serving.route_label(self.root_path + path)
        if route == "other":
            super().on_headers_complete()
            return
        http_version = self.parser.get_http_version()
        scope = self.scope
        scope["method"] = "POST"
        if http_version != "1.1":
            scope["http_version"] = http_version
        scope["path"] = self.root_path + path
        scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        scope["query_string"] = url.query or b""
        previous = self.cycle
        keep_alive = http_version != "1.0" and self.parser.should_keep_alive()
        self.cycle = self._inference_cycle(scope, route, keep_alive)
        if previous is None or previous.response_complete:
            self._start_asgi_task(self.cycle, self.app)
        else:  # pipelined behind a request still being answered: its turn comes in on_response_complete
            self.flow.pause_reading()
            self.pipeline.appendleft((self.cycle, self.app))

    def _inference_cycle(self, scope: Any, route: str, keep_alive: bool) -> InferenceCycle:
        cycle = InferenceCycle(self, scope, route, keep_alive)
        self.waited = 0.0
        return cycle

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if isinstance(cycle, InferenceCycle):
            self._active = cycle
            cycle.begin()
        else:
            super()._start_asgi_task(cycle, app)

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if not isinstance(cycle, InferenceCycle):
            super().on_body(body)
            return
        if cycle.response_complete:
            return
        cycle.body += body
        if cycle is self._active:
            cycle.body_received()
        elif len(cycle.body) > HIGH_WATER_LIMIT:  # waiting for its turn behind a pipelined request
            self.flow.pause_reading()

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if not isinstance(cycle, InferenceCycle):
            super().on_message_complete()
            return
        if cycle.response_complete:
            return
        cycle.more_body = False
        if cycle is self._active:
            cycle.body_complete()

    def hold(self, seconds: float) -> None:
        """Read nothing more until the queue has room, or `seconds` pass (:class:`HeldConnections`)."""
        self.held.hold(self, seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        active = self._active
        self.held.forget(self)
        super().connection_lost(exc)
        if active is not None and not active.response_complete:
            active.disconnected = True
            active.abandon()


def fast_protocol(server: ServingApp, base: type[HttpToolsProtocol] = HttpToolsProtocol) -> type[HttpToolsProtocol]:
    """`base` (uvicorn's httptools protocol or a subclass) with the inference routes of `server` served directly.

    Pass it as ``uvicorn.Config(http=...)``; :func:`mlplat.serving.server.uvicorn_config` puts the connection
    guard on top of it.
    """
    deadlines = Deadlines(server.settings.request_timeout_s)
    attributes = {"serving": server, "deadlines": deadlines, "held": HeldConnections()}
    return type("FastPathProtocol", (_FastPath, base), attributes)
