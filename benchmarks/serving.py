"""Benchmark: mlplat's model server vs a naive FastAPI server vs the model's in-process limit.

One run, one model (an MLP 256-1024-1024-10, float32, logged with MLflow as a torch.export program), one
machine. Each server is a real process pinned to one CPU (`mlplat serve` itself, and
benchmarks/serving_naive.py under uvicorn); the load generator (benchmarks/serving_load.py) runs in its own
process on another CPU and sends one row per request over loopback at concurrency 1, 16 and 64.

    .venv/bin/python -m benchmarks.serving                 # writes its section of docs/benchmarks.md
    .venv/bin/python -m benchmarks.serving --no-write      # print only

Targets (at concurrency 64): at least 4x the naive server's throughput, p99 under 20 ms, no errors; at
concurrency 1, p50 at most 0.3 ms above the naive server's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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
from pathlib import Path

import numpy as np

from benchmarks.report import machine_description, write_section

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = (1, 16, 64)
FEATURES, HIDDEN, CLASSES = 256, 1024, 10
MAX_BATCH = 32
COMMAND = ".venv/bin/python -m benchmarks.serving"


def cpus() -> tuple[int, int]:
    """(server CPU, load generator CPU): two different CPUs when there are two."""
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[0], allowed[-1]


def build_model(directory: Path) -> Path:
    """Save the benchmark MLP as an MLflow pytorch model (pt2, with signature and an 8-row input example)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, CLASSES),
    ).eval()
    example = np.random.default_rng(0).normal(size=(8, FEATURES)).astype(np.float32)
    with torch.inference_mode():
        signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
    path = directory / "mlp"
    mlflow.pytorch.save_model(
        model,
        str(path),
        signature=signature,
        input_example=example,
        serialization_format="pt2",
        pip_requirements=["torch"],
    )
    return path


def in_process_limit(model_dir: Path, cpu: int, seconds: float) -> dict[int, float]:
    """Rows/s of the served module's forward at batch 1 and at the max batch, on the server's CPU, one thread."""
    import torch

    from mlplat.serving.model import load_model
    from mlplat.serving.settings import ServingSettings

    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    torch.set_num_threads(1)
    try:
        model = load_model(ServingSettings(model_uri=str(model_dir), max_batch_size=MAX_BATCH))
        rng = np.random.default_rng(1)
        result = {}
        for batch in (1, MAX_BATCH):
            x = rng.normal(size=(batch, FEATURES)).astype(np.float32)
            for _ in range(20):
                model.predict(x)
            n, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                model.predict(x)
                n += 1
            result[batch] = n * batch / (time.perf_counter() - started)
        return result
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


@contextlib.contextmanager
def server(kind: str, model_dir: Path, cpu: int, probe: bytes) -> Iterator[int]:
    """Start a server process pinned to `cpu`, wait until it answers, yield its port, then stop it."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if kind == "mlplat":
        mlplat = Path(sys.executable).parent / "mlplat"
        command = [str(mlplat), "serve", "--model", str(model_dir), "--port", str(port), "--log-level", "warning"]
        command += ["--max-batch-size", str(MAX_BATCH)]
        env["MLPLAT_SERVING_DRAIN_DELAY_S"] = "0"
    else:
        command = [sys.executable, "-m", "uvicorn", "benchmarks.serving_naive:app", "--port", str(port)]
        command += ["--no-access-log", "--log-level", "warning"]
        env["NAIVE_MODEL_URI"] = str(model_dir)
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
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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


def run_load(port: int, bodies: Path, concurrency: int, cpu: int, duration: float, warmup: float) -> dict[str, object]:
    """Run the load generator in its own process, pinned to `cpu`, and return its summary."""
    command = [sys.executable, "-m", "benchmarks.serving_load", "--port", str(port), "--bodies", str(bodies)]
    command += ["--concurrency", str(concurrency), "--duration", str(duration), "--warmup", str(warmup)]
    command += ["--cpu", str(cpu)]
    out = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True, timeout=duration + warmup + 120)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def batch_totals(port: int) -> tuple[float, float] | None:
    """(rows, forward passes) so far, from mlplat's /metrics (None for servers without it)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except urllib.error.URLError:
        return None
    values = {}
    for line in text.splitlines():
        if line.startswith(("mlplat_batch_size_sum", "mlplat_batch_size_count")):
            name, value = line.split()
            values[name] = float(value)
    if "mlplat_batch_size_count" not in values:
        return None
    return values.get("mlplat_batch_size_sum", 0.0), values["mlplat_batch_size_count"]


def median_of_rounds(rounds: list[dict[str, object]]) -> dict[str, object]:
    """Each figure's median over the rounds (errors summed), with the throughput range for context."""

    def median(key: str) -> float:
        return float(statistics.median(float(str(r[key])) for r in rounds))

    rps = [float(str(r["rps"])) for r in rounds]
    summary: dict[str, object] = {
        "concurrency": rounds[0]["concurrency"],
        "rps": median("rps"),
        "rps_min": min(rps),
        "rps_max": max(rps),
        "p50_ms": median("p50_ms"),
        "p99_ms": median("p99_ms"),
        "errors": sum(int(str(r["errors"])) for r in rounds),
        "max_abs_error": rounds[0]["max_abs_error"],
        "rounds": len(rounds),
    }
    if all(isinstance(r.get("mean_batch"), float) for r in rounds):
        summary["mean_batch"] = median("mean_batch")
    return summary


def main() -> None:
    """Run the benchmark and write (or print) its section."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds measured per point and round")
    parser.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds before each point")
    parser.add_argument("--rounds", type=int, default=5, help="measurements per point (medians are reported)")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    args = parser.parse_args()
    server_cpu, client_cpu = cpus()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp))
        limit = in_process_limit(model_dir, server_cpu, seconds=2.0)
        rng = np.random.default_rng(2)
        rows = rng.normal(size=(512, FEATURES)).astype(np.float32)
        bodies = Path(tmp) / "bodies.jsonl"
        bodies.write_text("\n".join(json.dumps({"inputs": [row.tolist()]}) for row in rows) + "\n")
        from mlplat.serving.model import load_model
        from mlplat.serving.settings import ServingSettings

        reference = load_model(ServingSettings(model_uri=str(model_dir))).predict(rows[:8])
        probe = bodies.read_text().splitlines()[0].encode()
        samples: dict[tuple[str, int], list[dict[str, object]]] = {}
        with (
            server("naive", model_dir, server_cpu, probe) as naive_port,
            server("mlplat", model_dir, server_cpu, probe) as mlplat_port,
        ):
            ports = {"naive": naive_port, "mlplat": mlplat_port}
            errors = {kind: check_answers(port, rows[:8], reference) for kind, port in ports.items()}
            for kind, error in errors.items():
                if error > 1e-4:
                    raise RuntimeError(f"{kind} server's answers differ from the model by {error}")
            # Both servers wait, idle, on the same CPU; each point alternates between them, round after round,
            # so that other activity on a shared machine hits both alike. Medians over the rounds are reported.
            for _ in range(args.rounds):
                for concurrency in CONCURRENCY:
                    for kind, port in ports.items():
                        before = batch_totals(port)
                        summary = run_load(port, bodies, concurrency, client_cpu, args.duration, args.warmup)
                        after = batch_totals(port)
                        summary["max_abs_error"] = errors[kind]
                        if before is not None and after is not None and after[1] > before[1]:
                            # includes the warm-up second: the mean batch size of this point's load
                            summary["mean_batch"] = (after[0] - before[0]) / (after[1] - before[1])
                        samples.setdefault((kind, concurrency), []).append(summary)
                        print(kind, json.dumps(summary), flush=True)
        results = {kind: [median_of_rounds(samples[(kind, c)]) for c in CONCURRENCY] for kind in ("naive", "mlplat")}
    markdown = render(limit, results, load_before, os.getloadavg(), server_cpu, client_cpu, args)
    if args.no_write:
        print(markdown)
    else:
        write_section("serving", markdown)
        print(markdown)


def render(
    limit: dict[int, float],
    results: dict[str, list[dict[str, object]]],
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    server_cpu: int,
    client_cpu: int,
    args: argparse.Namespace,
) -> str:
    """The markdown section: set-up, in-process limit, the table and the targets."""
    naive = {int(str(r["concurrency"])): r for r in results["naive"]}
    ours = {int(str(r["concurrency"])): r for r in results["mlplat"]}
    lines = [
        "## Model server (`benchmarks/serving.py`)",
        "",
        f"Machine: {machine_description()}. Command: `{COMMAND}`.",
        "",
        f"Model: MLP {FEATURES}-{HIDDEN}-{HIDDEN}-{CLASSES} (float32, MLflow pytorch flavor, torch.export), one row "
        f"per request. Servers pinned to CPU {server_cpu} with one torch thread; the load generator "
        f"(`benchmarks/serving_load.py`, its own process) on CPU {client_cpu}, closed loop over keep-alive "
        f"connections on 127.0.0.1: {args.warmup:g} s warm-up, then {args.duration:g} s (at most 200k requests) per "
        f"point; {args.rounds} rounds alternating between the two servers; each figure is the median over the "
        "rounds (errors: all rounds; req/s range in brackets). "
        f"mlplat: `mlplat serve --max-batch-size {MAX_BATCH}` (no batch window). Naive: FastAPI, pydantic "
        "body, one forward per request inline in an `async def` route. Load average before/after: "
        f"{load_before[0]:.2f}/{load_after[0]:.2f} (the machine is shared; every number here is from the same run).",
        "",
        f"(a) In-process limit of the model's forward on the server CPU: batch 1: {limit[1]:,.0f} rows/s; "
        f"batch {MAX_BATCH}: {limit[MAX_BATCH]:,.0f} rows/s.",
        "",
        "| server | concurrency | req/s [range] | p50 ms | p99 ms | errors | mean batch |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, table in (("(b) naive FastAPI", naive), ("(c) mlplat", ours)):
        for c in CONCURRENCY:
            r = table[c]
            batch = f"{r['mean_batch']:.1f}" if isinstance(r.get("mean_batch"), float) else "1 (none)"
            lines.append(
                f"| {name} | {c} | {float(str(r['rps'])):,.0f} [{float(str(r['rps_min'])):,.0f}-"
                f"{float(str(r['rps_max'])):,.0f}] | {float(str(r['p50_ms'])):.2f} | {float(str(r['p99_ms'])):.2f} "
                f"| {r['errors']} | {batch} |"
            )
    top, one = max(CONCURRENCY), min(CONCURRENCY)
    speedup = float(str(ours[top]["rps"])) / float(str(naive[top]["rps"]))
    p99 = float(str(ours[top]["p99_ms"]))
    errors = sum(int(str(r["errors"])) for r in results["mlplat"])
    lone = float(str(ours[one]["p50_ms"])) - float(str(naive[one]["p50_ms"]))

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    lines += [
        "",
        f"Targets: throughput at concurrency {top}: {speedup:.2f}x the naive server "
        f"(target >= 4x: {verdict(speedup >= 4)}); "
        f"p99 at concurrency {top}: {p99:.2f} ms (target < 20 ms: {verdict(p99 < 20)}); errors: {errors} "
        f"(target 0: {verdict(errors == 0)}); p50 at concurrency {one}: {lone:+.3f} ms vs naive "
        f"(target <= +0.3 ms: {verdict(lone <= 0.3)}).",
        "",
        "Answers were checked against the in-process forward before each load (largest difference "
        f"{max(float(str(r['max_abs_error'])) for r in results['mlplat']):.1e}).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
