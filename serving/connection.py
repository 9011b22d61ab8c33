"""The connection layer's guard: read timeouts, a header size limit and a connection cap with eviction.

uvicorn (0.54, httptools) gives a server an idle keep-alive timeout (``timeout_keep_alive``), and
``limit_concurrency``, but no read timeouts and no header size limit (``h11_max_incomplete_event_size`` applies
only to the h11 parser; httptools/llhttp buffers a header of any size). A client that opens a connection and
sends nothing, sends headers a byte at a time, or declares 100 body bytes and sends 10, holds a connection and a
file descriptor forever; 1,100 of them under a 1,024 descriptor limit stop every request, health checks
included. ``limit_concurrency`` does not help: it answers 503 to every new request once that many connections
are open (idle and slow ones count, health checks are refused too) and frees nothing.

:func:`guarded_protocol` builds a subclass of uvicorn's httptools protocol that adds, per connection:

- a **header timeout**: from the connection's start (or the first byte of a next request on a kept-alive
  connection) to the end of the request's headers; then ``408`` and close;
- a **body timeout**: from the end of the headers to the end of the body; then ``408`` and close (the app sees a
  disconnect and drops the request);
- a **header size limit**: the request line and headers together; beyond it ``431`` and close, checked after
  each read, so the parser never buffers more than the limit plus one read (~256 KiB);
- a **connection cap** below the process's file-descriptor limit (:func:`connection_cap`): a new connection
  beyond it evicts an idle kept-alive connection, else the connection that has spent longest reading its
  headers, else the one longest reading its body, and is itself closed only when every other connection has a
  request in the app. So a slowloris cannot lock out a new client (a kubelet probe, an ALB health check): the
  attacker's oldest connection gives way to it.

The idle keep-alive timeout is uvicorn's setting (``timeout_keep_alive``), kept by the guard's clock. The clock
is one periodic check of every connection (:func:`sweep_interval`: a fifth of the shortest timeout, at most
0.25 s), not a loop timer per request and phase: arming and cancelling a timer costs about 2 us, and a request
used three (header, body, keep-alive), a tenth of what the guard may cost (docs/benchmarks.md). A timeout
therefore fires up to one interval late.
"""

from __future__ import annotations

import asyncio
import math
import resource
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Descriptors kept for the process itself (model files, logs, MLflow/S3 connections during a load, torch).
FD_RESERVE_MIN = 64
CloseObserver = Callable[[str], None]


@dataclass(frozen=True)
class ConnectionLimits:
    """What :func:`guarded_protocol` enforces (seconds and bytes)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_header_bytes: int = 16 * 1024
    max_connections: int = 1000


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process's soft file-descriptor limit to its hard limit (as Go's runtime does); returns both."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and hard != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft, hard


def connection_cap(max_connections: int, fd_limit: int | None = None) -> int:
    """The connection cap: `max_connections`, lowered to stay clear of the descriptor limit.

    Keeps an eighth of the limit (at least FD_RESERVE_MIN) for the process's own files and sockets, so the
    server can always accept a connection (and evict another for it) instead of failing `accept()` with EMFILE.
    """
    if fd_limit is None:
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if fd_limit == resource.RLIM_INFINITY or fd_limit <= 0:
        return max_connections
    reserve = max(FD_RESERVE_MIN, fd_limit // 8)
    return max(1, min(max_connections, fd_limit - reserve))


def _status_response(status: int, reason: bytes, message: str) -> bytes:
    body = b'{"error": "%s"}' % message.encode()
    return b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s" % (
        status,
        reason,
        len(body),
        body,
    )


_IDLE, _HEADERS, _BODY, _BUSY = 0, 1, 2, 3
_NEVER = math.inf


def sweep_interval(*timeouts: float) -> float:
    """How often the guard's clock checks its connections: a fifth of the shortest timeout, within 10-250 ms."""
    return min(0.25, max(0.01, min(timeouts) / 5))


@dataclass(frozen=True)
class _Answers:
    """The guard's own answers, rendered once per server."""

    too_large: bytes
    header_late: bytes
    body_late: bytes

    @classmethod
    def of(cls, limits: ConnectionLimits) -> _Answers:
        return cls(
            too_large=_status_response(
                431,
                b"Request Header Fields Too Large",
                f"the request line and headers exceed {limits.max_header_bytes} bytes "
                "(MLPLAT_SERVING_MAX_HEADER_BYTES)",
            ),
            header_late=_status_response(
                408,
                b"Request Timeout",
                f"headers not received within {limits.header_timeout_s:g} s (MLPLAT_SERVING_HEADER_TIMEOUT_S)",
            ),
            body_late=_status_response(
                408,
                b"Request Timeout",
                f"body not received within {limits.body_timeout_s:g} s (MLPLAT_SERVING_BODY_TIMEOUT_S)",
            ),
        )


class _Clock:
    """The guard's one periodic check of every connection, running while any is open."""

    def __init__(self) -> None:
        self.next: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop, connections: Collection[Any], interval: float) -> None:
        if self.next is None:
            self.next = loop.call_later(interval, self._sweep, loop, connections, interval)

    def _sweep(self, loop: asyncio.AbstractEventLoop, connections: Collection[Any], interval: float) -> None:
        self.next = None
        now = time.monotonic()
        for connection in list(connections):
            if isinstance(connection, _Guard) and connection._due <= now:
                connection._due = _NEVER
                connection._expired()
        if connections:
            self.next = loop.call_later(interval, self._sweep, loop, connections, interval)


class _Guard(HttpToolsProtocol):
    """The guard's per-connection state and callbacks, put in front of a protocol class by :func:`guarded_protocol`
    (which sets the class attributes below)."""

    cap: int
    limits_: ConnectionLimits
    answers: _Answers
    clock: _Clock
    on_close: CloseObserver | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = _HEADERS
        self._since = time.monotonic()
        self._header_bytes = 0  # bytes read while this request's headers are incomplete (memory bound)
        self._chunk = 0  # bytes in the read being parsed
        self._rejected = False
        self._due = _NEVER  # time.monotonic() when the current phase times out

    def _closed(self, reason: str) -> None:
        if self.on_close is not None:
            self.on_close(reason)

    # -- connection ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = self.limits_
        self._due = self._since + limits.header_timeout_s
        interval = sweep_interval(limits.header_timeout_s, limits.body_timeout_s, self.timeout_keep_alive)
        self.clock.start(self.loop, self.connections, interval)
        if len(self.connections) > self.cap:
            self._make_room(transport)

    def _make_room(self, transport: asyncio.Transport) -> None:
        victim = self._victim()
        if victim is None:  # every other connection has a request in the app: refuse this one
            self._closed("refused")
            self._cancel()
            transport.abort()
            return
        self._closed("evicted")
        victim._cancel()
        if victim._phase == _IDLE:
            victim.transport.close()
        else:
            victim.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def _victim(self) -> _Guard | None:
        best: _Guard | None = None
        for other in self.connections:
            if other is self or not isinstance(other, _Guard) or other._phase == _BUSY:
                continue
            if other.transport is None or other.transport.is_closing():
                continue
            if best is None or (other._phase, other._since) < (best._phase, best._since):
                best = other
        return best

    # -- timeouts --------------------------------------------------------------------------------------

    def _cancel(self) -> None:
        self._due = _NEVER

    def _expired(self) -> None:
        """The clock found this connection past its current phase's timeout."""
        if self._phase == _HEADERS:
            self._reject(self.answers.header_late, "header_timeout")
        elif self._phase == _BODY:
            self._reject(self.answers.body_late, "body_timeout")
        elif self._phase == _IDLE:
            self.timeout_keep_alive_handler()

    def _reject(self, response: bytes, reason: str) -> None:
        self._cancel()
        self._rejected = True
        self._closed(reason)
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if self._phase == _HEADERS:  # any cycle is the previous request's: write unless it is still answering
            if cycle is None or cycle.response_complete:
                self.transport.write(response)
        elif cycle is not None and not cycle.response_started:  # the app waits for this body: tell it
            cycle.disconnected = True  # so its own answer, if any, goes nowhere
            cycle.message_event.set()
            self.transport.write(response)
        self.transport.close()

    # -- reading ---------------------------------------------------------------------------------------

    def _request_starts(self) -> None:
        self._phase, self._since = _HEADERS, time.monotonic()
        self._due = self._since + self.limits_.header_timeout_s

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        if self._phase == _IDLE:  # the first byte of a next request on a kept-alive connection
            self._request_starts()
            self._header_bytes = 0
        self._chunk = len(data)
        super().data_received(data)
        if self._phase == _HEADERS and self.parser is not None:
            self._header_bytes += len(data)
            if self._header_bytes > self.limits_.max_header_bytes:
                self._reject(self.answers.too_large, "header_too_large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase != _HEADERS:  # pipelined: a next request starts while the previous one is served
            self._request_starts()
        self._header_bytes = 0

    def on_headers_complete(self) -> None:
        # The bytes read for this request so far bound its headers' size; only past the limit are the request
        # line and headers (uvicorn keeps both) measured exactly: cheaper than a callback per header.
        limit = self.limits_.max_header_bytes
        if self._header_bytes + self._chunk > limit and (
            len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers) > limit
        ):  # arrived in one read: caught here, before the app sees it
            self._reject(self.answers.too_large, "header_too_large")
            return
        self._phase, self._since = _BODY, time.monotonic()
        self._due = self._since + self.limits_.body_timeout_s
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._rejected:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._rejected:
            return
        super().on_message_complete()
        self._due = _NEVER
        if self.cycle is not None and self.cycle.response_complete:
            # Answered before its body was read (401, 413): idle now, closed like any idle connection.
            self._idle()
        else:
            self._phase = _BUSY

    def _idle(self) -> None:
        self._phase, self._since = _IDLE, time.monotonic()
        self._due = self._since + self.timeout_keep_alive

    def on_response_complete(self) -> None:
        # uvicorn's own, with its keep-alive timer (a loop timer per request) replaced by the guard's clock.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self._phase == _BUSY:
            self._idle()


def guarded_protocol(
    limits: ConnectionLimits,
    cap: int | None = None,
    on_close: CloseObserver | None = None,
    base: type[HttpToolsProtocol] = HttpToolsProtocol,
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol (or `base`, a subclass of it) with `limits` enforced; pass it as
    ``uvicorn.Config(http=...)``.

    `cap` is the connection cap (default: :func:`connection_cap` of ``limits.max_connections``);
    `on_close(reason)` is told of every connection the guard ends: ``header_timeout``, ``body_timeout``,
    ``header_too_large``, ``evicted``, ``refused``.
    """
    attributes = {
        "cap": cap if cap is not None else connection_cap(limits.max_connections),
        "limits_": limits,
        "answers": _Answers.of(limits),
        "clock": _Clock(),
        "on_close": staticmethod(on_close) if on_close is not None else None,
    }
    return type("GuardedHttpToolsProtocol", (_Guard, base), attributes)
