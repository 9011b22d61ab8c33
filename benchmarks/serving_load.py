"""A light HTTP/1.1 load generator for benchmarks/serving.py, run in its own process.

`concurrency` keep-alive connections each send pre-encoded POST requests back to back (a closed loop) and
time each answer. It speaks just enough HTTP (Content-Length bodies) to stay cheap: a client built on a
full HTTP library saturates near 500 requests/s on one core, far below the servers it measures.

Bounded in count and time: it stops after `--duration` seconds or `--max-requests` answers, whichever
comes first, and every request has a timeout. Prints one JSON object with the results.

    python -m benchmarks.serving_load --port 8080 --path /predict --bodies bodies.jsonl --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
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
    args = parser.parse_args()
    if args.host not in {"127.0.0.1", "localhost", "::1"}:
        parser.error("the load generator only targets loopback")
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    bodies = [line.encode() for line in args.bodies.read_text().splitlines() if line.strip()]
    load = run_load(
        args.host, args.port, args.path, bodies, args.concurrency, args.duration, args.max_requests, args.warmup
    )
    try:
        import uvloop
    except ImportError:  # plain asyncio works, just slower
        result = asyncio.run(load)
    else:
        result = uvloop.run(load)
    print(json.dumps(result.summary()))


if __name__ == "__main__":
    main()
