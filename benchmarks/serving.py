"""Benchmark: mlplat's model server against the model's in-process limit and a naive FastAPI server, the cost of
its connection limits, and goodput under a 10x retry storm.

One run, one machine, every ratio from figures of the same run. Servers are real processes pinned to one CPU; the
load generator runs on the other CPU, so it takes nothing from the server it measures:

- closed loop (`wrk`, one thread, a Lua script that cycles through pre-encoded bodies; the Python generator in
  benchmarks/serving_load.py when `wrk` is missing) at concurrency 1, 16 and 64, one row per request;
- each round measures, back to back: the in-process reference on the server CPU, then every server at every
  point, so a busy moment of this shared machine hits every figure of that round alike. Ratios are taken per
  round and their median reported;
- goodput: a heavier model (compute per request well above the cost of a refusal), its capacity measured with
  the closed loop, then an open loop (benchmarks/serving_load.py) demanding 10x that rate, 503s not waited for:
  the attempts of a client population that retries at once after every 503; against the shipped server and,
  as the baseline, the same server without its shed hold (MLPLAT_SERVING_SHED_HOLD_S=0).

    .venv/bin/python -m benchmarks.serving                 # writes its section of docs/benchmarks.md
    .venv/bin/python -m benchmarks.serving --no-write      # print only

Targets (issue 18): at concurrency 64, at least 0.55x the in-process batch-32 forward with JSON decode and encode,
p99 at most 1.5x p50; at concurrency 1, p50 no higher than the naive server's; the connection limits cost at most 3%
of the concurrency-64 throughput; under the storm, goodput at least 80% of capacity, p99 of answered requests
within the request timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import machine_description, write_section

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = (1, 16, 64)
TOP = 64
FEATURES, HIDDEN, CLASSES = 256, 1024, 10
STORM_HIDDEN = 4096  # the goodput model: ~0.7 ms of forward per row here, ~20x a refusal
STORM_FACTOR = 10
STORM_SECONDS, STORM_WARMUP = 5.0, 2.0
MAX_BATCH = 32
REQUEST_TIMEOUT_S = 5.0  # the server's default
COMMAND = ".venv/bin/python -m benchmarks.serving"

# What a server variant is: (label, how it is started). mlplat runs as `mlplat serve`; the variants through
# mlplat.serving.server.run with one part turned off, to measure what that part costs or gives.
VARIANTS = {
    "naive": "naive FastAPI",
    "mlplat": "mlplat",
    "no-guard": "mlplat, connection limits off",
    "asgi": "mlplat, fast path off (ASGI dispatcher)",
    "strict": "mlplat, strict JSON decoder only (no simdjson)",
}
POINTS = [("naive", c) for c in CONCURRENCY] + [("mlplat", c) for c in CONCURRENCY]
POINTS += [("no-guard", TOP), ("asgi", TOP), ("strict", TOP)]
# One round, in this order: the in-process reference next to the point it is compared with; mlplat and mlplat
# without its connection limits as A B B A (what the limits cost is a few percent: a drifting machine would
# otherwise decide it); each naive point next to mlplat's.
ROUND: list[tuple[str, int] | None] = [None, ("mlplat", TOP), ("no-guard", TOP), ("no-guard", TOP), ("mlplat", TOP)]
ROUND += [("asgi", TOP), ("strict", TOP), ("naive", TOP), ("mlplat", 16), ("naive", 16), ("mlplat", 1), ("naive", 1)]

WRK_SCRIPT = """
local bodies, i = {}, 0
function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      bodies[#bodies + 1] = wrk.format("POST", args[2], {["Content-Type"] = "application/json"}, line)
    end
  end
  i = math.random(#bodies)
end
function request()
  i = i % #bodies + 1
  return bodies[i]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "seconds": %f, "p50_ms": %f, "p99_ms": %f, "errors": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def cpus() -> tuple[int, int]:
    """(server CPU, load generator CPU): two different CPUs when there are two."""
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[0], allowed[-1]


def build_model(directory: Path, hidden: int = HIDDEN) -> Path:
    """Save an MLP 256-hidden-hidden-10 as an MLflow pytorch model (pt2, with signature and an 8-row example)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, CLASSES),
    ).eval()
    example = np.random.default_rng(0).normal(size=(8, FEATURES)).astype(np.float32)
    with torch.inference_mode():
        signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
    path = directory / f"mlp-{hidden}"
    mlflow.pytorch.save_model(
        model,
        str(path),
        signature=signature,
        input_example=example,
        serialization_format="pt2",
        pip_requirements=["torch"],
    )
    return path


class InProcess:
    """The served module's forward on the server CPU, one thread: the limit the servers are held against."""

    def __init__(self, model_dir: Path, cpu: int, bodies: list[bytes]) -> None:
        import torch

        from mlplat.serving.model import load_model
        from mlplat.serving.settings import ServingSettings

        self.cpu = cpu
        torch.set_num_threads(1)
        self.model = load_model(ServingSettings(model_uri=str(model_dir), max_batch_size=MAX_BATCH))
        self.bodies = bodies

    def rows_per_s(self, batch: int, seconds: float, json_io: bool = False) -> float:
        """Rows/s of the forward at `batch`; with `json_io`, each row also decoded from its request body (orjson
        to a float32 array) and its answer encoded (orjson, as the server's), as a server must."""
        import orjson

        previous = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {self.cpu})
        try:
            bodies, predict = self.bodies, self.model.predict
            x = np.stack([np.asarray(orjson.loads(b)["inputs"][0], np.float32) for b in bodies[:batch]])
            version = self.model.version
            n, i, started = 0, 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                if json_io:
                    chunk = bodies[i : i + batch] if i + batch <= len(bodies) else bodies[:batch]
                    i = (i + batch) % len(bodies)
                    x = np.concatenate([np.asarray(orjson.loads(b)["inputs"], dtype=np.float32) for b in chunk])
                y = predict(x)
                if json_io:
                    for j in range(batch):
                        orjson.dumps(
                            {"predictions": y[j : j + 1], "model_version": version}, option=orjson.OPT_SERIALIZE_NUMPY
                        )
                n += batch
            return n / (time.perf_counter() - started)
        finally:
            os.sched_setaffinity(0, previous)


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(port: int, body: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    """POST /predict; returns (status, body)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/predict", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Server:
    """A running server process."""

    kind: str
    port: int
    process: subprocess.Popen[bytes]

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the process has used so far, every thread."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def metrics(self) -> dict[str, float]:
        """mlplat's /metrics samples (empty for servers without it)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
                text = response.read().decode()
        except urllib.error.URLError:
            return {}
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    values[name] = float(value)
        return values


@contextlib.contextmanager
def server(kind: str, model_dir: Path, cpu: int, probe: bytes, **settings: str) -> Iterator[Server]:
    """Start a server process pinned to `cpu` (`settings` as MLPLAT_SERVING_* variables), wait until it answers,
    yield it, then stop it."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLPLAT_SERVING_DRAIN_DELAY_S": "0"}
    env.update({f"MLPLAT_SERVING_{name.upper()}": value for name, value in settings.items()})
    if kind == "naive":
        command = [sys.executable, "-m", "uvicorn", "benchmarks.serving_naive:app", "--port", str(port)]
        command += ["--no-access-log", "--log-level", "warning"]
        env["NAIVE_MODEL_URI"] = str(model_dir)
    elif kind == "mlplat":
        mlplat = Path(sys.executable).parent / "mlplat"
        command = [str(mlplat), "serve", "--model", str(model_dir), "--port", str(port), "--log-level", "warning"]
        command += ["--max-batch-size", str(MAX_BATCH)]
    else:
        command = [sys.executable, "-m", "benchmarks.serving", "--serve", kind, "--model", str(model_dir)]
        command += ["--port", str(port)]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, preexec_fn=lambda: os.sched_setaffinity(0, {cpu}), stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{kind} server exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            with contextlib.suppress(OSError):
                if post(port, probe, timeout=2)[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} server did not answer within 180 s")
            time.sleep(0.25)
        yield Server(kind, port, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serve_variant(kind: str, model: str, port: int) -> None:
    """`--serve`: what `mlplat serve` runs, with one part off (`no-guard`: the connection limits; `asgi`: the
    wire fast path; `strict`: the simdjson decode of /predict rows, serving/flat_rows.py)."""
    from mlplat.serving.schema import PredictDecoder
    from mlplat.serving.server import run
    from mlplat.serving.settings import load_settings

    if kind == "strict":  # every body through msgspec, as before the fast decode (a benchmark-only switch)
        PredictDecoder.decode = PredictDecoder.decode_strict

    settings = load_settings(model_uri=model, port=port, max_batch_size=MAX_BATCH, log_level="warning")
    run(settings, fast_path=kind != "asgi", connection_guard=kind != "no-guard")


def check_answers(port: int, rows: np.ndarray, expected: np.ndarray) -> float:
    """POST each row alone and return the largest difference from the in-process forward (must be tiny)."""
    worst = 0.0
    for row, want in zip(rows, expected, strict=True):
        status, body = post(port, json.dumps({"inputs": [row.tolist()]}).encode())
        if status != 200:
            raise RuntimeError(f"server answered {status}: {body[:300]!r}")
        got = np.asarray(json.loads(body)["predictions"][0], dtype=np.float32)
        worst = max(worst, float(np.max(np.abs(got - want))))
    return worst


@dataclass
class Load:
    """How the closed loop is generated."""

    bodies: Path
    cpu: int
    duration: float
    warmup: float
    script: Path | None  # wrk's Lua script; None: the Python generator

    @property
    def method(self) -> str:
        return "wrk" if self.script is not None else "benchmarks/serving_load.py"

    def run(self, port: int, concurrency: int) -> dict[str, float]:
        """One point: a warm-up, then the measured run; req/s, p50 and p99 (ms) and errors."""
        if self.script is None:
            command = [sys.executable, "-m", "benchmarks.serving_load", "--port", str(port), "--bodies"]
            command += [str(self.bodies), "--concurrency", str(concurrency), "--duration", str(self.duration)]
            command += ["--warmup", str(self.warmup), "--cpu", str(self.cpu)]
            out = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True, timeout=300)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            return {k: float(result[k]) for k in ("rps", "p50_ms", "p99_ms", "errors")}
        self._wrk(port, concurrency, self.warmup)
        result = self._wrk(port, concurrency, self.duration)
        return {
            "rps": result["requests"] / result["seconds"],
            "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"],
            "errors": result["errors"],
        }

    def _wrk(self, port: int, concurrency: int, seconds: float) -> dict[str, float]:
        assert self.script is not None
        command = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
        command += ["-s", str(self.script), f"http://127.0.0.1:{port}/predict", "--", str(self.bodies), "/predict"]
        out = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
            preexec_fn=lambda: os.sched_setaffinity(0, {self.cpu}),
        )
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@dataclass
class Rounds:
    """Every figure of every round, and the per-round ratios."""

    reference: list[dict[str, float]] = field(default_factory=list)
    points: dict[tuple[str, int], list[dict[str, float]]] = field(default_factory=dict)

    def median(self, kind: str, concurrency: int, key: str) -> float:
        return float(statistics.median(p[key] for p in self.points[(kind, concurrency)]))

    def ratios(self, numerator: tuple[str, int, str], denominator: tuple[str, int, str] | str) -> list[float]:
        """Per round: a point's figure over another point's figure, or over a reference figure (its key)."""
        kind, concurrency, key = numerator
        tops = [p[key] for p in self.points[(kind, concurrency)]]
        if isinstance(denominator, str):
            bottoms = [r[denominator] for r in self.reference]
        else:
            bottoms = [p[denominator[2]] for p in self.points[(denominator[0], denominator[1])]]
        return [top / bottom for top, bottom in zip(tops, bottoms, strict=True)]


def measure_rounds(servers: dict[str, Server], reference: InProcess, load: Load, rounds: int, seconds: float) -> Rounds:
    """`rounds` times the steps of ROUND: the in-process reference, and each point with the server's CPU time per
    request and mean batch size (a point measured twice in a round is averaged)."""
    result = Rounds()
    for _ in range(rounds):
        samples: dict[tuple[str, int], list[dict[str, float]]] = {}
        for step in ROUND:
            if step is None:
                result.reference.append({"batch32_json": reference.rows_per_s(MAX_BATCH, seconds, json_io=True)})
                print("reference", json.dumps(result.reference[-1]), flush=True)
                continue
            kind, concurrency = step
            live = servers[kind]
            before_metrics, before_cpu = live.metrics(), live.cpu_seconds()
            point = load.run(live.port, concurrency)
            after_metrics, after_cpu = live.metrics(), live.cpu_seconds()
            requests = point["rps"] * load.duration
            # CPU time per request over the warm-up and the measured run (the server does nothing else meanwhile)
            served = max(1.0, requests * (1 + load.warmup / load.duration))
            point["cpu_us"] = (after_cpu - before_cpu) / served * 1e6
            batches = after_metrics.get("mlplat_batch_size_count", 0) - before_metrics.get("mlplat_batch_size_count", 0)
            if batches > 0:
                point["mean_batch"] = (
                    after_metrics["mlplat_batch_size_sum"] - before_metrics["mlplat_batch_size_sum"]
                ) / batches
                point["gc_per_1k"] = (_collections(after_metrics) - _collections(before_metrics)) / served * 1000
            samples.setdefault(step, []).append(point)
            print(kind, concurrency, json.dumps(point), flush=True)
        for step, measured in samples.items():
            combined = {key: statistics.fmean(m[key] for m in measured) for key in measured[0]}
            combined["errors"] = sum(m["errors"] for m in measured)
            result.points.setdefault(step, []).append(combined)
    return result


def _collections(metrics: dict[str, float]) -> float:
    """The cyclic collector's runs so far, every generation (prometheus-client's gc collector)."""
    return sum(value for name, value in metrics.items() if name.startswith("python_gc_collections_total{"))


@dataclass
class Storm:
    """The goodput measurement: capacity, then the open loop at STORM_FACTOR times it, per round."""

    capacity: list[dict[str, float]] = field(default_factory=list)
    storm: list[dict[str, Any]] = field(default_factory=list)  # mlplat serve as shipped (the hold on)
    unheld: list[dict[str, Any]] = field(default_factory=list)  # the same with MLPLAT_SERVING_SHED_HOLD_S=0
    forward_rows_per_s: float = 0.0


def storm_run(tmp: Path, cpu: int, encoded: list[bytes], load: Load, rounds: int) -> Storm:
    """The goodput model, its in-process forward, and :func:`measure_storm` on a server with and without the hold."""
    big = build_model(tmp, STORM_HIDDEN)
    with (
        server("mlplat", big, cpu, encoded[0]) as live,
        server("mlplat", big, cpu, encoded[0], shed_hold_s="0") as unheld,
    ):
        storm = measure_storm(live, unheld, load, rounds)
    storm.forward_rows_per_s = InProcess(big, cpu, encoded).rows_per_s(MAX_BATCH, 2.0)
    return storm


def measure_storm(live: Server, unheld: Server, load: Load, rounds: int) -> Storm:
    """Per round: the closed loop at concurrency 64 (capacity, and the server CPU per answered request), then an open
    loop at STORM_FACTOR times that rate against the shipped server and against one without the hold."""
    result = Storm()
    for _ in range(rounds):
        cpu_before = live.cpu_seconds()
        capacity = load.run(live.port, TOP)
        capacity["cpu_us"] = (live.cpu_seconds() - cpu_before) / (capacity["rps"] * (load.duration + load.warmup)) * 1e6
        result.capacity.append(capacity)
        for target, runs in ((live, result.storm), (unheld, result.unheld)):
            storm = storm_once(target, load, STORM_FACTOR * capacity["rps"], capacity["cpu_us"])
            runs.append(storm)
            print("storm", target.kind, json.dumps({"capacity": capacity, **storm}), flush=True)
    return result


def storm_once(live: Server, load: Load, rate: float, cpu_per_answer_us: float) -> dict[str, Any]:
    """One open loop at `rate` against `live`: the generator's summary, the server's CPU share and what it shed."""
    before, cpu_before = live.metrics(), live.cpu_seconds()
    command = [sys.executable, "-m", "benchmarks.serving_load", "--port", str(live.port), "--bodies"]
    command += [str(load.bodies), "--rate", f"{rate:.0f}", "--duration", str(STORM_SECONDS), "--warmup"]
    command += [str(STORM_WARMUP), "--connections", "900", "--cpu", str(load.cpu)]
    started = time.monotonic()
    out = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True, timeout=300)
    storm: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    after = live.metrics()
    storm["server_cpu_share"] = (live.cpu_seconds() - cpu_before) / (time.monotonic() - started)
    for reason in ("deadline", "queue_full"):
        name = f'mlplat_requests_shed_total{{reason="{reason}"}}'
        storm[f"shed_{reason}"] = after.get(name, 0.0) - before.get(name, 0.0)
    # What one refusal costs the server: its CPU over the storm, less the answered requests at the capacity point's
    # CPU per request, over everything it refused (warm-up included, as the CPU time is).
    answered = after.get('mlplat_requests_total{route="/predict",status="200"}', 0.0)
    answered -= before.get('mlplat_requests_total{route="/predict",status="200"}', 0.0)
    refused = storm["shed_deadline"] + storm["shed_queue_full"]
    spent = (live.cpu_seconds() - cpu_before) - answered * cpu_per_answer_us / 1e6
    storm["refusal_us"] = spent / refused * 1e6 if refused else float("nan")
    return storm


def main() -> None:
    """Run the benchmark and write (or print) its section."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds measured per point and round")
    parser.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds before each point")
    parser.add_argument("--rounds", type=int, default=7, help="measurements per point (medians are reported)")
    parser.add_argument("--storm-rounds", type=int, default=3, help="capacity + storm measurements")
    parser.add_argument("--no-storm", action="store_true", help="skip the goodput measurement")
    parser.add_argument("--storm-only", action="store_true", help="only the goodput measurement, printed (not written)")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    parser.add_argument("--serve", choices=["no-guard", "asgi", "strict"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_variant(args.serve, args.model, args.port)
        return
    server_cpu, client_cpu = cpus()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp))
        rng = np.random.default_rng(2)
        rows = rng.normal(size=(512, FEATURES)).astype(np.float32)
        bodies = Path(tmp) / "bodies.jsonl"
        bodies.write_text("\n".join(json.dumps({"inputs": [row.tolist()]}) for row in rows) + "\n")
        encoded = [line.encode() for line in bodies.read_text().splitlines()]
        script = None
        if shutil.which("wrk"):
            script = Path(tmp) / "post.lua"
            script.write_text(WRK_SCRIPT)
        load = Load(bodies, client_cpu, args.duration, args.warmup, script)
        if args.storm_only:
            print("\n".join(render_storm(storm_run(Path(tmp), server_cpu, encoded, load, args.storm_rounds))))
            return
        reference = InProcess(model_dir, server_cpu, encoded)
        expected = reference.model.predict(rows[:8])
        with contextlib.ExitStack() as stack:
            servers = {kind: stack.enter_context(server(kind, model_dir, server_cpu, encoded[0])) for kind in VARIANTS}
            errors = {kind: check_answers(live.port, rows[:8], expected) for kind, live in servers.items()}
            for kind, error in errors.items():
                if error > 1e-4:
                    raise RuntimeError(f"{kind} server's answers differ from the model by {error}")
            forward = {"batch1": reference.rows_per_s(1, 2.0), "batch32": reference.rows_per_s(MAX_BATCH, 2.0)}
            results = measure_rounds(servers, reference, load, args.rounds, min(2.0, args.duration))
        storm = None if args.no_storm else storm_run(Path(tmp), server_cpu, encoded, load, args.storm_rounds)
    markdown = render(results, forward, storm, max(errors.values()), load, load_before, os.getloadavg(), server_cpu)
    if not args.no_write:
        write_section("serving", markdown)
    print(markdown)


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _range(values: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(min(values))}-{fmt.format(max(values))}"


def render(
    results: Rounds,
    forward: dict[str, float],
    storm: Storm | None,
    max_error: float,
    load: Load,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    server_cpu: int,
) -> str:
    """The markdown section: method, in-process limit, the table, the targets, the storm."""
    rounds = len(results.reference)
    reference = {**forward, "batch32_json": _median([r["batch32_json"] for r in results.reference])}
    json_us = 1e6 / reference["batch32_json"] - 1e6 / reference["batch32"]  # the reference's JSON, per row
    lines = [
        "## Model server (`benchmarks/serving.py`)",
        "",
        f"Machine: {machine_description()}, shared with other work (load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after). Command: `{COMMAND}`.",
        "",
        f"**Method.** Model: MLP {FEATURES}-{HIDDEN}-{HIDDEN}-{CLASSES} (float32, MLflow pytorch flavor, "
        f"torch.export), one row (a ~5 KB JSON body) per request. Every server is a process pinned to CPU "
        f"{server_cpu} with one torch thread; the load generator ({load.method}, one thread) is pinned to CPU "
        f"{load.cpu}, so it takes no CPU from the server (a Python generator on the server's CPU would). Closed loop "
        "over keep-alive "
        f"connections on 127.0.0.1: {load.warmup:g} s warm-up, then {load.duration:g} s per point. {rounds} rounds; "
        "each runs the in-process reference on the server CPU and, right after it, mlplat at concurrency "
        f"{TOP}; then mlplat without its connection limits and with them again (A B B A, both averaged), the "
        "other variants, and each naive point next to mlplat's. Ratios are taken within a round and their median "
        "reported (range over the rounds in brackets). Server CPU per request is the "
        "process's user + system time over the point, which other work on the machine disturbs far less than "
        f"throughput. mlplat: `mlplat serve --max-batch-size {MAX_BATCH}` (no batch window); the three variants "
        "are the same server with its connection limits (read timeouts, connection cap, header limit) off, "
        "with the inference routes on the ASGI dispatcher instead of the wire fast path, and with every body "
        "decoded by the strict msgspec decoder instead of simdjson's fast path. Naive: FastAPI, pydantic "
        "body, one forward per request inline in an `async def` route.",
        "",
        f"(a) In-process, server CPU, one thread: forward at batch 1: "
        f"{reference['batch1']:,.0f} rows/s; batch {MAX_BATCH}: {reference['batch32']:,.0f} rows/s; batch "
        f"{MAX_BATCH} with each row's JSON body decoded (orjson to a float32 array) and its answer encoded (orjson): "
        f"**{reference['batch32_json']:,.0f} rows/s** (median of the rounds), the reference below.",
        "",
        "| server | concurrency | req/s [range] | x reference | p50 ms | p99 ms | p99/p50 | errors | server CPU us/req"
        " | mean batch | collector runs per 1,000 req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, concurrency in POINTS:
        samples = results.points[(kind, concurrency)]
        rps = [p["rps"] for p in samples]
        ratio = results.ratios((kind, concurrency, "rps"), "batch32_json")
        tail = [p["p99_ms"] / p["p50_ms"] for p in samples]
        batches = [p["mean_batch"] for p in samples if "mean_batch" in p]
        batch = f"{_median(batches):.1f}" if batches else "1 (none)"
        collections = [p["gc_per_1k"] for p in samples if "gc_per_1k" in p]
        runs = f"{_median(collections):.1f}" if collections else "(not exported)"
        lines.append(
            f"| {VARIANTS[kind]} | {concurrency} | {_median(rps):,.0f} [{_range(rps, '{:,.0f}')}] | "
            f"{_median(ratio):.2f} | {results.median(kind, concurrency, 'p50_ms'):.2f} | "
            f"{results.median(kind, concurrency, 'p99_ms'):.2f} | {_median(tail):.2f} | "
            f"{sum(int(p['errors']) for p in samples)} | {results.median(kind, concurrency, 'cpu_us'):.0f} | {batch} | "
            f"{runs} |"
        )

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    speed = results.ratios(("mlplat", TOP, "rps"), "batch32_json")
    tail = [p["p99_ms"] / p["p50_ms"] for p in results.points[("mlplat", TOP)]]
    lone = [
        a["p50_ms"] / b["p50_ms"]
        for a, b in zip(results.points[("mlplat", 1)], results.points[("naive", 1)], strict=True)
    ]
    guard = [1 - r for r in results.ratios(("mlplat", TOP, "rps"), ("no-guard", TOP, "rps"))]
    guard_cpu = [
        a["cpu_us"] / b["cpu_us"] - 1
        for a, b in zip(results.points[("mlplat", TOP)], results.points[("no-guard", TOP)], strict=True)
    ]
    fast = results.ratios(("mlplat", TOP, "rps"), ("asgi", TOP, "rps"))
    decode = results.ratios(("mlplat", TOP, "rps"), ("strict", TOP, "rps"))
    decode_cpu = [
        a["cpu_us"] / b["cpu_us"]
        for a, b in zip(results.points[("mlplat", TOP)], results.points[("strict", TOP)], strict=True)
    ]
    naive = results.ratios(("mlplat", TOP, "rps"), ("naive", TOP, "rps"))
    errors = sum(int(p["errors"]) for (kind, _), samples in results.points.items() for p in samples if kind != "naive")
    lines += [
        "",
        "Targets (medians of the per-round ratios, range in brackets):",
        "",
        f"- throughput at concurrency {TOP}: **{_median(speed):.3f}x** the in-process batch-{MAX_BATCH} forward "
        f"with JSON [{_range(speed)}] (target >= 0.55x: {verdict(_median(speed) >= 0.55)});",
        f"- p99/p50 at concurrency {TOP}: **{_median(tail):.3f}** [{_range(tail)}] (target <= 1.5: "
        f"{verdict(_median(tail) <= 1.5)});",
        f"- p50 at concurrency 1: **{_median(lone):.2f}x** the naive server's [{_range(lone)}] (target <= 1: "
        f"{verdict(_median(lone) <= 1)});",
        f"- cost of the connection limits: **{_median(guard) * 100:+.2f}%** of the concurrency-{TOP} throughput "
        f"[{_range([g * 100 for g in guard], '{:+.1f}')}%] (target <= 3%: {verdict(_median(guard) <= 0.03)}); "
        f"server CPU per request {_median(guard_cpu) * 100:+.1f}% "
        f"[{_range([g * 100 for g in guard_cpu], '{:+.1f}')}%];",
        f"- errors (mlplat, every variant): {errors} (target 0: {verdict(errors == 0)}).",
        "",
        f"For context: the wire fast path gives {_median(fast):.2f}x the throughput of the same server on its ASGI "
        f"dispatcher [{_range(fast)}], and its simdjson decode of /predict rows {_median(decode):.2f}x the "
        f"throughput of the same server with the strict decoder alone [{_range(decode)}] at "
        f"{_median(decode_cpu):.2f}x its CPU per request [{_range(decode_cpu)}]; mlplat serves "
        f"{_median(naive):.1f}x the naive server at concurrency {TOP}. "
        f"Answers were checked against the in-process forward before the loads (largest difference {max_error:.1e}).",
        "",
        f"Where a request's server CPU goes at concurrency {TOP} (~90-110 us): the forward's share of a batch of "
        f"{MAX_BATCH} (~40 us alone, 50-53 us measured on the server's worker thread: the loop's work between "
        "forwards slows it), the JSON body's decode (~8 us: simdjson straight into an array of doubles, "
        "serving/flat_rows.py; the strict msgspec decoder, which makes a Python float of each value, took ~13), the "
        "kernel's receive and send on loopback (~10-15 us) and ~20 us of Python in uvicorn's parser callbacks, the "
        f"fast path, the batcher and the guard; the reference pays the forward and ~{json_us:.0f} us of JSON "
        "(orjson). The cyclic garbage collector used to take another tenth: the deadline watch kept each answered "
        "request alive until its next check (up to 50 ms, a thousand "
        "requests), so the collector ran every ~80 requests and walked them all; it now runs less than once per "
        "1,000 (last column). p99/p50 near 1.5 is what a closed loop of 64 clients over batches of 32 gives: a "
        "request waits for the batch in progress and then its own, one that just misses its batch a third. p99/p50 "
        "and the connection limits' cost sit within a few percent of their limits, and other work on this shared "
        "machine moves them by more than that between runs (see the ranges): the server's cost per request "
        "(syscalls, cache misses) moves more with it than the compute-bound reference does.",
    ]
    if storm is not None:
        lines += ["", *render_storm(storm)]
    return "\n".join(lines)


def render_storm(storm: Storm) -> list[str]:
    """The goodput part of the section: the shipped server (the hold on) and the same without the hold."""

    def ratios(runs: list[dict[str, Any]], key: str) -> list[float]:
        return [s[key] / c["rps"] for s, c in zip(runs, storm.capacity, strict=True)]

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    capacity = [c["rps"] for c in storm.capacity]
    goodput, unheld_goodput = ratios(storm.storm, "goodput"), ratios(storm.unheld, "goodput")
    p99 = [s["p99_ms"] / 1000 for s in storm.storm]
    lines = [
        f"### Goodput under a {STORM_FACTOR}x retry storm",
        "",
        f"Model: MLP {FEATURES}-{STORM_HIDDEN}-{STORM_HIDDEN}-{CLASSES} (in-process forward at batch {MAX_BATCH}: "
        f"{storm.forward_rows_per_s:,.0f} rows/s on the server CPU), `mlplat serve` with its defaults (request "
        f"timeout {REQUEST_TIMEOUT_S:g} s, queue limit 512, shed hold 1 s), and the same server with "
        "`MLPLAT_SERVING_SHED_HOLD_S=0` as the baseline. Per round: capacity with the closed loop at concurrency "
        f"{TOP}, then an open loop (`benchmarks/serving_load.py --rate`) demanding {STORM_FACTOR}x that rate for "
        f"{STORM_SECONDS:g} s after {STORM_WARMUP:g} s of warm-up against each server: every attempt leaves on "
        "schedule on an idle connection of a pool of 900 (an attempt due while all 900 wait for an answer is not "
        "sent, as from a client library's full connection pool), 503s are not waited for: clients that retry at "
        "once after each 503 on the connection that answered it, ignoring Retry-After.",
        "",
        "| round | capacity req/s | sent attempts/s (x capacity) | goodput req/s (x capacity) | "
        "p50 / p99 of answered ms | refused/s | not sent/s | server CPU share | "
        "without the hold: sent/s, goodput (x), p99 ms, refused/s, CPU per refusal us |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for i, (c, s, u) in enumerate(zip(storm.capacity, storm.storm, storm.unheld, strict=True), 1):
        lines.append(
            f"| {i} | {c['rps']:,.0f} | {s['attempts_per_s']:,.0f} ({s['attempts_per_s'] / c['rps']:.1f}x) | "
            f"{s['goodput']:,.0f} ({s['goodput'] / c['rps']:.2f}x) | {s['p50_ms']:,.0f} / {s['p99_ms']:,.0f} | "
            f"{s['refused_per_s']:,.0f} | {s['unsent'] / STORM_SECONDS:,.0f} | {s['server_cpu_share']:.0%} | "
            f"{u['attempts_per_s']:,.0f}, {u['goodput']:,.0f} ({u['goodput'] / c['rps']:.2f}x), "
            f"{u['p99_ms']:,.0f}, {u['refused_per_s']:,.0f}, {u['refusal_us']:.0f} |"
        )
    refused = [s["refused_per_s"] for s in storm.unheld]
    spent = [s["refused_per_s"] * s["refusal_us"] / 1e6 for s in storm.unheld]
    lines += [
        "",
        f"Goodput: **{_median(goodput):.2f}x** capacity [{_range(goodput)}] (target >= 0.80: "
        f"{verdict(_median(goodput) >= 0.8)}), against {_median(unheld_goodput):.2f}x "
        f"[{_range(unheld_goodput)}] without the hold; p99 of answered requests **{_median(p99):.2f} s** "
        f"[{_range(p99)}] against the {REQUEST_TIMEOUT_S:g} s request timeout (target within: "
        f"{verdict(max(p99) <= REQUEST_TIMEOUT_S)}); capacity {_median(capacity):,.0f} req/s.",
        "",
        "What the hold changes: without it, every refusal is read, parsed and answered, ~"
        f"{_median([s['refusal_us'] for s in storm.unheld]):.0f} us of server CPU each (the kernel's receive and "
        "send on loopback included), and a client that retries at once comes straight back: "
        f"{_median(refused):,.0f} refusals/s took {_median(spent):.0%} of the one CPU the forward needs. With it, "
        "a connection just refused is not read for its Retry-After (1 s, capped at a quarter of the request "
        "timeout), so its retry waits in the kernel at no cost and each connection costs at most one refusal a "
        "second; the held retry counts the hold against its deadline, so answered requests stay within the "
        "timeout as the client measures it. Clients that honour Retry-After see no difference.",
    ]
    return lines


if __name__ == "__main__":
    main()
