"""End to end on real servers: train and register through MLflow (PostgreSQL + S3), promote, restart the
stores, then serve the champion by alias and answer real requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from sklearn.datasets import load_digits

from mlplat.demo.services import LOCAL_AWS_ENV, LOOPBACK, free_port
from mlplat.training.registry import load_alias

pytestmark = pytest.mark.integration
MLPLAT = str(Path(sys.executable).with_name("mlplat"))


def client_env(platform: Any) -> dict[str, str]:
    # Clients talk to MLflow only: artifacts go through the server's proxy (--serve-artifacts) to S3.
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": platform.mlflow.uri,
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "CI": "true",
    }


def run(argv: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def http_json(url: str, body: Any | None = None, timeout: float = 10) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def trained(platform: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The digits model trained, gated and registered as digits@staging, then promoted to champion."""
    work = tmp_path_factory.mktemp("train")
    config = {
        "seed": 1,
        "epochs": 4,
        "batch_size": 32,
        "model": {"hidden_sizes": [64]},
        "checkpoint": {"uri": str(work / "checkpoints"), "every_n_steps": 50},
        "tracking": {"experiment": "e2e"},
        "registry": {"model_name": "digits", "alias": "staging"},
        "gate": {"min_accuracy": 0.8, "min_macro_f1": 0.8},
        "runtime": {"device": "cpu", "num_threads": 1},
    }
    path = work / "training.yaml"
    path.write_text(yaml.safe_dump(config))
    env = client_env(platform)
    trained = run([MLPLAT, "train", "--config", str(path)], env)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    promoted = run([MLPLAT, "promote", "digits", "--from", "staging", "--to", "champion"], env)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    return platform


def test_training_registers_in_postgres_and_stores_artifacts_in_s3(trained: Any) -> None:
    assert trained.postgres.psql("SELECT name FROM registered_models") == "digits"
    aliases = trained.postgres.psql("SELECT alias || '=' || version FROM registered_model_aliases ORDER BY alias")
    assert aliases.split("\n") == ["champion=1", "staging=1"]
    listing = trained.s3.client().list_objects_v2(Bucket=trained.bucket, Prefix="mlflow/")
    keys = [o["Key"] for o in listing.get("Contents", [])]
    assert any(k.endswith("MLmodel") for k in keys), keys
    assert any(k.endswith("reference_stats.json") for k in keys), keys


def test_restarting_postgres_and_mlflow_loses_no_registered_model(trained: Any) -> None:
    trained.postgres.restart()
    trained.mlflow.restart()
    version = http_json(f"{trained.mlflow.uri}/api/2.0/mlflow/registered-models/alias?name=digits&alias=champion")
    assert version["model_version"]["version"] == "1"


def test_the_champion_gate_loads_the_champion_through_the_proxy_and_keeps_no_copy(
    trained: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.mlflow.uri)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where MLflow downloads to when given no folder
    loaded = load_alias("digits", "champion")
    assert loaded is not None
    version, model = loaded
    digits = load_digits()
    with torch.no_grad():
        predicted = model(torch.from_numpy((digits.data[:200] / 16.0).astype(np.float32))).argmax(dim=1).numpy()
    assert version == "1" and float((predicted == digits.target[:200]).mean()) > 0.8
    left = [path.name for path in tmp_path.iterdir() if not path.name.startswith("torchinductor_")]  # torch's cache
    assert left == [], "the champion's download was left in the temp dir"
    assert load_alias("digits", "canary") is None


def test_the_server_loads_the_champion_by_alias_through_mlflow(trained: Any) -> None:
    port = free_port()
    env = {
        **client_env(trained),
        **LOCAL_AWS_ENV,
        "MLPLAT_SERVING_MODEL_URI": "models:/digits@champion",
        "MLPLAT_SERVING_HOST": LOOPBACK,
        "MLPLAT_SERVING_PORT": str(port),
        "MLPLAT_SERVING_ALLOW_PICKLE": "false",
        "MLPLAT_SERVING_MLFLOW_TRACKING_URI": trained.mlflow.uri,
    }
    log = (trained.root / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlplat.serving"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://{LOOPBACK}:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert server.poll() is None, (trained.root / "serve.log").read_text()[-3000:]
            try:
                if http_json(f"{base}/v2/health/ready", timeout=2) is not None:
                    break
            except OSError:
                time.sleep(0.3)
        digits = load_digits()
        x = (digits.data[:200] / 16.0).astype(np.float32)
        answer = http_json(f"{base}/predict", {"inputs": x.tolist()})
        predicted = np.asarray(answer["predictions"]).argmax(axis=1)
        assert (predicted == digits.target[:200]).mean() > 0.8
        assert str(answer["model_version"]) == "1"
    finally:
        server.terminate()
        server.wait(30)
        log.close()
