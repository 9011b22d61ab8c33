"""``mlplat demo``: the whole platform on one machine, then the offline preview of the cloud stacks.

1. MLflow tracking: a real ``mlflow server`` over sqlite and a local artifact folder (or, with
   ``--production-topology``, over PostgreSQL and an S3-compatible endpoint, as in the cloud).
2. Training: ``mlplat train`` on the built-in digits task; the evaluation gate; registration as
   ``digits@staging``; ``mlplat promote`` to ``digits@champion``. Skipped when the champion exists.
3. Serving: ``mlplat serve`` on ``models:/digits@champion``, then real requests: accuracy and latency.
4. The dev and production stacks rendered offline: resource counts, the policy check and the monthly cost.

State lives in ``.mlplat/demo`` so a second run reuses the registered model. Ctrl-C stops every process.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from mlplat.demo.services import (
    LOCAL_AWS_ENV,
    LOOPBACK,
    ManagedProcess,
    MlflowServer,
    MotoS3Server,
    PostgresServer,
    ServiceError,
    free_port,
)

MODEL = "digits"
TRAINING_CONFIG: dict[str, Any] = {
    "seed": 0,
    "epochs": 15,
    "batch_size": 64,
    "model": {"hidden_sizes": [128, 64]},
    "optimizer": {"lr": 0.003},
    "checkpoint": {"every_n_steps": 100, "keep_last": 2},
    "tracking": {"experiment": "mlplat-demo"},
    "registry": {"model_name": MODEL, "alias": "staging"},
    "gate": {"min_accuracy": 0.9, "min_macro_f1": 0.9},
}


@dataclass(frozen=True)
class DemoResult:
    """What the demo measured."""

    tracking_uri: str
    server_url: str
    model_version: str
    trained: bool
    accuracy: float
    requests: int
    p50_ms: float
    p99_ms: float
    stacks: dict[str, dict[str, Any]]


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _http_json(url: str, body: Any | None = None, timeout: float = 10) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # loopback only
        return json.loads(response.read())


@contextmanager
def _tracking(state: Path, production_topology: bool, console: Console) -> Iterator[MlflowServer]:
    """An MLflow server over sqlite + a folder, or over PostgreSQL + S3 (moto); stopped on exit."""
    started: list[Any] = []
    root: Path | None = None
    try:
        if production_topology:
            # PostgreSQL runs as its own (non-root) user: its folder must be reachable by that user.
            root = Path(tempfile.mkdtemp(prefix="mlplat-demo-"))
            root.chmod(0o755)
            with console.status("starting PostgreSQL and the S3 endpoint"):
                postgres = PostgresServer(root / "postgres").start()
                started.append(postgres)
                s3 = MotoS3Server(root / "s3", buckets=("mlplat-demo",)).start()
                started.append(s3)
            server = MlflowServer(root / "mlflow", postgres.uri, "s3://mlplat-demo/mlflow", s3.endpoint_url)
        else:
            state.mkdir(parents=True, exist_ok=True)
            server = MlflowServer(state, f"sqlite:///{state / 'mlflow.db'}", str(state / "artifacts"))
        with console.status("starting the MLflow server"):
            server.start()
        started.append(server)
        console.print(f"[green]✓[/green] MLflow tracking at {server.uri}")
        yield server
    finally:
        for service in reversed(started):
            service.stop()
        if root is not None:  # this run's own database and bucket (~50 MB): nothing reads them again
            shutil.rmtree(root, ignore_errors=True)


def _champion_version(tracking_uri: str) -> str | None:
    try:
        answer = _http_json(f"{tracking_uri}/api/2.0/mlflow/registered-models/alias?name={MODEL}&alias=champion")
    except OSError:
        return None
    return str(answer["model_version"]["version"])


def _run(argv: list[str], env: dict[str, str], what: str, log: Path) -> None:
    with log.open("ab") as handle:
        completed = subprocess.run(argv, env=env, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if completed.returncode != 0:
        raise ServiceError(f"{what} failed (exit {completed.returncode}); log:\n" + log.read_text()[-3000:])


def _train_and_promote(state: Path, env: dict[str, str], console: Console) -> None:
    config = {**TRAINING_CONFIG, "checkpoint": {**TRAINING_CONFIG["checkpoint"], "uri": str(state / "checkpoints")}}
    path = state / "training.yaml"
    path.write_text(yaml.safe_dump(config))
    with console.status("training digits (data validation, checkpoints, evaluation gate, registration)"):
        _run([_bin("mlplat"), "train", "--config", str(path)], env, "training", state / "train.log")
    console.print(f"[green]✓[/green] trained, passed the gate, registered {MODEL}@staging (log: {state / 'train.log'})")
    _run(
        [_bin("mlplat"), "promote", MODEL, "--from", "staging", "--to", "champion"],
        env,
        "promotion",
        state / "train.log",
    )
    console.print(f"[green]✓[/green] promoted {MODEL}@staging to {MODEL}@champion")


@contextmanager
def _server(state: Path, env: dict[str, str], console: Console) -> Iterator[str]:
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    process = ManagedProcess(state / "serve.log")
    process.spawn(
        [sys.executable, "-m", "mlplat.serving"],
        env={
            **env,
            "MLPLAT_SERVING_MODEL_URI": f"models:/{MODEL}@champion",
            "MLPLAT_SERVING_HOST": LOOPBACK,
            "MLPLAT_SERVING_PORT": str(port),
        },
    )
    try:
        with console.status(f"starting the model server on models:/{MODEL}@champion"):
            deadline = time.monotonic() + 120
            while True:
                if process.proc is not None and process.proc.poll() is not None:
                    raise ServiceError("the model server exited; log:\n" + process.log.read_text()[-3000:])
                try:
                    _http_json(f"{url}/v2/health/ready", timeout=2)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise ServiceError("the model server did not become ready in 120 s") from None
                    time.sleep(0.3)
        console.print(f"[green]✓[/green] model server at {url} (docs: {url}/docs, metrics: {url}/metrics)")
        yield url
    finally:
        process.stop()


def _exercise(url: str, requests: int) -> tuple[float, list[float], str]:
    """Accuracy over the digits test rows (one batched request) and latency of single-row requests."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).tolist()
    predictions: list[list[float]] = []
    for offset in range(0, len(x), 256):  # the server caps rows per request (422 beyond)
        answer = _http_json(f"{url}/predict", {"inputs": x[offset : offset + 256]}, timeout=60)
        predictions += answer["predictions"]
    predicted = [max(range(len(row)), key=row.__getitem__) for row in predictions]
    accuracy = sum(int(p == t) for p, t in zip(predicted, digits.target, strict=True)) / len(predicted)
    latencies: list[float] = []
    for i in range(requests):
        start = time.perf_counter()
        _http_json(f"{url}/predict", {"inputs": [x[i % len(x)]]})
        latencies.append((time.perf_counter() - start) * 1000)
    return accuracy, latencies, str(answer["model_version"])


def preview_stacks(root: Path) -> dict[str, dict[str, Any]]:
    """Render the shipped stacks offline: resources, policy result and cost per stack."""
    from mlplat.infra.synth import render_stack
    from mlplat.policy.check import check_render, has_mandatory
    from mlplat.review.cost import estimate

    summary = {}
    for stack in ("dev", "production"):
        document = render_stack(stack, root).to_json()
        findings = check_render(document)
        cost = estimate(document, stack)
        summary[stack] = {
            "resources": len(document["resources"]),
            "mandatory_violations": sum(f.enforcement == "mandatory" for f in findings),
            "advisories": sum(f.enforcement != "mandatory" for f in findings),
            "policy": "fail" if has_mandatory(findings) else "pass",
            "idle_monthly_usd": round(cost.idle, 2),
            "peak_monthly_usd": round(cost.peak, 2),
        }
    return summary


def run_demo(
    root: Path,
    *,
    state: Path | None = None,
    production_topology: bool = False,
    requests: int = 200,
    console: Console | None = None,
) -> DemoResult:
    """Run the demo end to end (see the module docstring) and return what it measured."""
    console = console or Console()
    state = state or root / ".mlplat" / "demo"
    state.mkdir(parents=True, exist_ok=True)
    with _tracking(state, production_topology, console) as tracking:
        env = {
            **os.environ,
            **LOCAL_AWS_ENV,
            "MLFLOW_TRACKING_URI": tracking.uri,
            "CI": "true",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
        version = _champion_version(tracking.uri)
        trained = version is None
        if trained:
            _train_and_promote(state, env, console)
        else:
            console.print(f"[green]✓[/green] reusing {MODEL}@champion (version {version}) from {state}")
        with _server(state, env, console) as url:
            accuracy, latencies, served_version = _exercise(url, requests)
    p50, p99 = statistics.median(latencies), _p99(latencies)
    console.print(
        f"[green]✓[/green] accuracy {accuracy:.3f} on all 1,797 {MODEL} images; "
        f"{requests} single-row requests: p50 {p50:.2f} ms, p99 {p99:.2f} ms"
    )
    with console.status("rendering the dev and production stacks offline"):
        stacks = preview_stacks(root)
    table = Table(title="cloud stacks, rendered offline (no credentials)")
    for column in ("stack", "resources", "policy", "advisories", "idle $/month", "peak $/month"):
        table.add_column(column, justify="right" if column != "stack" else "left")
    for stack, row in stacks.items():
        table.add_row(
            stack,
            str(row["resources"]),
            row["policy"],
            str(row["advisories"]),
            f"{row['idle_monthly_usd']:,.0f}",
            f"{row['peak_monthly_usd']:,.0f}",
        )
    console.print(table)
    return DemoResult(
        tracking_uri=tracking.uri,
        server_url=url,
        model_version=served_version,
        trained=trained,
        accuracy=accuracy,
        requests=requests,
        p50_ms=p50,
        p99_ms=p99,
        stacks=stacks,
    )


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
