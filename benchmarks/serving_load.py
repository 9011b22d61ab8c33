"""A light HTTP/1.1 load generator for benchmarks/serving.py, run in its own process.

Two modes, both over keep-alive connections with pre-encoded POST requests (Content-Length bodies), speaking
just enough HTTP to stay cheap (a client built on a full HTTP library saturates near 500 requests/s on one
core, far below the servers it measures):

- closed loop (default): `concurrency` connections each send requests back to back and time each answer;
- open loop (`--rate R`): requests leave at R per second whatever the answers, each on an idle connection
  (a pool of up to `--connections`), so a server that falls behind sees them pile up, as it would from many
  independent clients. A refused request (503) is not waited for or slowed down: the stream of attempts goes
  on at the same rate, which is what a population of clients retrying at once after each 503 (ignoring
  Retry-After) sends. Goodput is the 200 answers per second.

Bounded in count and time: it stops after `--duration` seconds or `--max-requests` answers, whichever
comes first, and every request has a timeout. Prints one JSON object with the results.

    python -m benchmarks.serving_load --port 8080 --path /predict --bodies bodies.jsonl --concurrency 64
    python -m benchmarks.serving_load --port 8080 --bodies bodies.jsonl --rate 12000 --connections 900
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LoadResult:
    """What one load run measured."""

    concurrency: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0  # non-200 answers, connection failures and timeouts

    def summary(self) -> dict[str, float | int | dict[str, int]]:
        """Requests/s, p50 and p99 latency (ms) and error counts."""
        done = sorted(self.latencies)

        def pct(q: float) -> float:
            return round(done[min(len(done) - 1, int(q * len(done)))] * 1000, 3) if done else float("nan")

        return {
            "concurrency": self.concurrency,
            "requests": len(done),
            "seconds": round(self.seconds, 3),
            "rps": round(len(done) / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": pct(0.50),
            "p90_ms": pct(0.90),
            "p99_ms": pct(0.99),
            "p999_ms": pct(0.999),
            "max_ms": round(done[-1] * 1000, 3) if done else float("nan"),
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


def encode_requests(host: str, port: int, path: str, bodies: list[bytes]) -> list[bytes]:
    """Pre-encoded HTTP/1.1 POST requests, one per body."""
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nContent-Length: "
    return [head.encode() + str(len(body)).encode() + b"\r\n\r\n" + body for body in bodies]


async def _connection(
    host: str,
    port: int,
    requests: list[bytes],
    offset: int,
    stop_at: float,
    budget: list[int],
    result: LoadResult | None,
    timeout: float,
) -> None:
    reader = writer = None
    i = offset
    clock = time.perf_counter
    while clock() < stop_at and budget[0] > 0:
        if writer is None:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            except (OSError, TimeoutError):
                if result is not None:
                    result.errors += 1
                await asyncio.sleep(0.01)
                continue
        assert reader is not None and writer is not None
        budget[0] -= 1
        request = requests[i % len(requests)]
        i += 1
        started = clock()
        try:
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            status = int(head[9:12])
            at = head.lower().find(b"content-length:")
            length = int(head[at + 15 : head.find(b"\r\n", at)]) if at >= 0 else 0
            if length:
                await asyncio.wait_for(reader.readexactly(length), timeout)
            closing = b"connection: close" in head.lower()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            if result is not None:
                result.errors += 1
            writer.close()
            writer = None
            continue
        if result is not None:
            result.latencies.append(clock() - started)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status != 200:
                result.errors += 1
        if closing:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def run_load(
    host: str,
    port: int,
    path: str,
    bodies: list[bytes],
    concurrency: int,
    duration: float,
    max_requests: int,
    warmup: float = 1.0,
    timeout: float = 10.0,
) -> LoadResult:
    """Warm up for `warmup` seconds (unrecorded), then measure for `duration` seconds or `max_requests` answers."""
    requests = encode_requests(host, port, path, bodies)
    step = max(1, len(requests) // concurrency)
    if warmup > 0:
        stop = time.perf_counter() + warmup
        budget = [max_requests]
        await asyncio.gather(
            *(_connection(host, port, requests, c * step, stop, budget, None, timeout) for c in range(concurrency))
        )
    result = LoadResult(concurrency)
    budget = [max_requests]
    started = time.perf_counter()
    await asyncio.gather(
        *(
            _connection(host, port, requests, c * step, started + duration, budget, result, timeout)
            for c in range(concurrency)
        )
    )
    result.seconds = time.perf_counter() - started
    return result


@dataclass
class OpenLoopResult:
    """What one open-loop run measured (answers counted when they arrive within the window)."""

    rate: float
    seconds: float = 0.0
    sent: int = 0
    unsent: int = 0  # attempts due while every connection was busy (the generator, not the server, fell behind)
    latencies: list[float] = field(default_factory=list)  # of 200 answers
    refused_latencies: list[float] = field(default_factory=list)  # of 503 answers
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0  # connection failures and timeouts

    def summary(self) -> dict[str, float | int | dict[str, int]]:
        """Attempts and answers per second, goodput, latency percentiles (ms) of the 200s and of the 503s."""

        def pct(values: list[float], q: float) -> float:
            done = sorted(values)
            return round(done[min(len(done) - 1, int(q * len(done)))] * 1000, 3) if done else float("nan")

        seconds = self.seconds or 1.0
        return {
            "rate": self.rate,
            "seconds": round(self.seconds, 3),
            "attempts_per_s": round(self.sent / seconds, 1),
            "unsent": self.unsent,
            "goodput": round(len(self.latencies) / seconds, 1),
            "refused_per_s": round(self.statuses.get(503, 0) / seconds, 1),
            "p50_ms": pct(self.latencies, 0.50),
            "p99_ms": pct(self.latencies, 0.99),
            "max_ms": pct(self.latencies, 1.0),
            "refused_p50_ms": pct(self.refused_latencies, 0.50),
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


class _Client(asyncio.Protocol):
    """One keep-alive connection of the open loop: at most one request in flight, answers parsed as they come."""

    def __init__(self, idle: list[_Client], on_answer: Callable[[int, float], None], on_lost: Callable[[], None]):
        self.idle, self.on_answer, self.on_lost = idle, on_answer, on_lost
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.sent_at = 0.0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.idle.append(self)

    def send(self, request: bytes, now: float) -> None:
        assert self.transport is not None
        self.busy, self.sent_at = True, now
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = (
                int(head[at + 15 : head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None]) if at >= 0 else 0
            )
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            status = int(head[9:12])
            self.busy = False
            self.on_answer(status, time.perf_counter() - self.sent_at)
            if b"connection: close" in head:
                self.transport.close()  # type: ignore[union-attr]
                return
            self.idle.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.idle:
            self.idle.remove(self)
        if self.busy:
            self.busy = False
            self.on_lost()


class _OpenLoop:
    """The open loop's state: its result, the connection pool and the window being measured."""

    def __init__(
        self, host: str, port: int, rate: float, duration: float, warmup: float, connections: int, timeout: float
    ) -> None:
        self.host, self.port, self.rate, self.connections, self.timeout = host, port, rate, connections, timeout
        self.duration, self.warmup = duration, warmup
        self.result = OpenLoopResult(rate)
        self.idle: list[_Client] = []
        self.clients: list[_Client] = []
        self.pending: set[asyncio.Task[None]] = set()
        self.window = (0.0, 0.0)

    def in_window(self) -> bool:
        return self.window[0] <= time.perf_counter() < self.window[1]

    def on_answer(self, status: int, latency: float) -> None:
        if self.in_window():
            result = self.result
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status == 200:
                result.latencies.append(latency)
            elif status == 503:
                result.refused_latencies.append(latency)

    def on_lost(self) -> None:
        if self.in_window():
            self.result.errors += 1

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, client = await asyncio.wait_for(
                loop.create_connection(lambda: _Client(self.idle, self.on_answer, self.on_lost), self.host, self.port),
                self.timeout,
            )
            self.clients.append(client)
        except (OSError, TimeoutError):
            self.on_lost()

    async def open_pool(self) -> None:
        """Open the pool before the clock starts (at most 64 handshakes at a time)."""
        for first in range(0, self.connections, 64):
            await asyncio.gather(*(self.connect() for _ in range(first, min(self.connections, first + 64))))

    def maintain(self, now: float) -> None:
        """Time out silent requests and replace closed connections."""
        self.clients[:] = [c for c in self.clients if c.transport is not None and not c.transport.is_closing()]
        for client in self.clients:
            if client.busy and now - client.sent_at > self.timeout:
                client.transport.abort()  # type: ignore[union-attr]
        loop = asyncio.get_running_loop()
        for _ in range(min(64, self.connections - len(self.clients) - len(self.pending))):
            task = loop.create_task(self.connect())
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def run(self, requests: list[bytes]) -> OpenLoopResult:
        await self.open_pool()
        started = time.perf_counter()
        self.window = (started + self.warmup, started + self.warmup + self.duration)
        due_total, i, maintained = 0, 0, started
        while (now := time.perf_counter()) < self.window[1]:
            due = int((now - started) * self.rate) - due_total
            due_total += due
            counted = now >= self.window[0]
            for _ in range(due):
                if not self.idle:
                    self.result.unsent += counted
                    continue
                self.idle.pop().send(requests[i % len(requests)], now)
                i += 1
                self.result.sent += counted
            if now - maintained > 0.1:  # every 100 ms
                maintained = now
                self.maintain(now)
            await asyncio.sleep(0.0005)
        self.result.seconds = self.window[1] - self.window[0]
        for client in self.clients:
            if client.transport is not None:
                client.transport.close()
        return self.result


async def run_open_loop(
    host: str,
    port: int,
    path: str,
    bodies: list[bytes],
    rate: float,
    duration: float,
    warmup: float,
    connections: int,
    timeout: float = 10.0,
) -> OpenLoopResult:
    """Send `rate` requests per second for `warmup` + `duration` seconds; measure the last `duration`."""
    requests = encode_requests(host, port, path, bodies)
    return await _OpenLoop(host, port, rate, duration, warmup, connections, timeout).run(requests)


def main() -> None:
    """Command line: run one load and print its summary as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/predict")
    parser.add_argument("--bodies", type=Path, required=True, help="JSON lines: one request body per line")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    parser.add_argument("--rate", type=float, default=None, help="open loop: requests per second")
    parser.add_argument("--connections", type=int, default=900, help="open loop: most connections in the pool")
    args = parser.parse_args()
    if args.host not in {"127.0.0.1", "localhost", "::1"}:
        parser.error("the load generator only targets loopback")
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    bodies = [line.encode() for line in args.bodies.read_text().splitlines() if line.strip()]

    async def load() -> LoadResult | OpenLoopResult:
        if args.rate is not None:
            return await run_open_loop(
                args.host, args.port, args.path, bodies, args.rate, args.duration, args.warmup, args.connections
            )
        return await run_load(
            args.host, args.port, args.path, bodies, args.concurrency, args.duration, args.max_requests, args.warmup
        )

    try:
        import uvloop
    except ImportError:  # plain asyncio works, just slower
        result = asyncio.run(load())
    else:
        result = uvloop.run(load())
    print(json.dumps(result.summary()))


if __name__ == "__main__":
    main()
