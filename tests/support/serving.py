"""Helpers for the model server tests: small real torch models, MLflow model directories, live servers.

Servers run for real on 127.0.0.1 (uvicorn on a pre-bound socket, in a thread, or `python -m mlplat.serving`
as a subprocess); requests go over real sockets.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
import uvicorn

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from mlplat.serving.app import ServingApp
from mlplat.serving.model import LoadedModel
from mlplat.serving.schema import TensorSpec
from mlplat.training.reference_stats import compute_reference_stats

FEATURES, CLASSES = 8, 3


def make_mlp(seed: int = 0) -> torch.nn.Module:
    """A small real MLP: 8 features -> 3 classes."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, 16), torch.nn.ReLU(), torch.nn.Linear(16, CLASSES)).eval()


def training_inputs(n: int = 400, seed: int = 0) -> np.ndarray:
    """Stand-in training inputs: standard normal features."""
    return np.random.default_rng(seed).normal(size=(n, FEATURES)).astype(np.float32)


def forward(module: torch.nn.Module, rows: np.ndarray) -> np.ndarray:
    """The reference: the module run on `rows` directly, no server involved."""
    with torch.inference_mode():
        return module(torch.from_numpy(np.asarray(rows, dtype=np.float32))).numpy()


def save_mlflow_model(
    module: torch.nn.Module,
    path: Path,
    *,
    serialization_format: str = "pt2",
    reference_stats: bool = True,
    example_rows: int = 4,
) -> Path:
    """Save `module` as an MLflow pytorch model the way the trainer does (signature, example, drift stats)."""
    import mlflow.pytorch
    from mlflow.models import infer_signature

    x = training_inputs()
    example = x[:example_rows]
    extra = []
    if reference_stats:
        stats_file = path.parent / f"{path.name}-reference_stats.json"
        stats_file.write_text(compute_reference_stats(x, [f"f{i}" for i in range(FEATURES)]).model_dump_json())
        extra_dir = path.parent / f"{path.name}-extra"
        extra_dir.mkdir(exist_ok=True)
        (extra_dir / "reference_stats.json").write_text(stats_file.read_text())
        extra = [str(extra_dir / "reference_stats.json")]
    mlflow.pytorch.save_model(
        module,
        str(path),
        signature=infer_signature(example, forward(module, example)),
        input_example=example,
        serialization_format=serialization_format,
        pip_requirements=["torch"],
        extra_files=extra or None,
    )
    return path


class SlowModel(torch.nn.Module):
    """A model whose forward takes `delay` seconds (to fill queues and pass deadlines); counts its rows."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        time.sleep(self.delay)
        return x[:, :2] * 2


def slow_model(delay: float) -> LoadedModel:
    """A served model around :class:`SlowModel`: rows of 4 float32, answers the first two doubled."""
    return LoadedModel(
        module=SlowModel(delay),
        name="slow",
        version="1",
        source="test",
        input_spec=TensorSpec("x", np.dtype(np.float32), (-1, 4)),
    )


def save_slow_model(directory: Path, forward_s: float) -> Path:
    """A pickled MLflow model of :class:`SlowModel` (a server process imports the class from this module)."""
    import mlflow.pytorch
    from mlflow.models import infer_signature

    example = np.ones((4, 4), np.float32)
    model = SlowModel(forward_s)
    signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
    path = directory / "slow"
    mlflow.pytorch.save_model(
        model, str(path), signature=signature, serialization_format="pickle", pip_requirements=["torch"]
    )
    return path


def wait_until_ready(url: str, server: subprocess.Popen[bytes], timeout_s: float = 90) -> None:
    """Poll readiness of a server process on 127.0.0.1 until 200; fail with its output if it exits first."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        assert time.monotonic() < deadline, "server did not become ready"
        time.sleep(0.2)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    """A running server: its app, base URL and uvicorn handle."""

    app: ServingApp
    url: str
    server: uvicorn.Server

    def client(self, **kwargs: Any) -> httpx.Client:
        """An HTTP client for this server."""
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 30.0), **kwargs)

    def metric(self, sample_name: str, /, **labels: str) -> float:
        """One sample of /metrics (0 when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0


@contextmanager
def run_server(
    app: ServingApp, *, wait_ready: bool = True, guarded: bool = False, fast_path: bool = True
) -> Iterator[LiveServer]:
    """Serve `app` with uvicorn on 127.0.0.1 (a free port) in a thread until the block ends.

    The model loads in the background; with `wait_ready` (the default) this waits until it is served. With
    `guarded`, uvicorn runs with the server's own config (`mlplat serve`'s connection guard and keep-alive, and
    the wire fast path for the inference routes unless `fast_path` is false).
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    if guarded:
        from mlplat.serving.server import uvicorn_config

        config = uvicorn_config(app, app.settings, log_config=False, fast_path=fast_path)
        config.timeout_graceful_shutdown = 10
    else:
        config = uvicorn.Config(app, lifespan="on", log_level="warning", timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started or (wait_ready and not app.ready):
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(30)
            sock.close()
            status = app.unready_reason() if server.started else "not started"
            raise RuntimeError(f"test server did not become ready: {status}")
        time.sleep(0.02)
    try:
        yield LiveServer(app, f"http://127.0.0.1:{port}", server)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
