"""Fixtures for the model server tests (helpers live in tests/support/serving.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from support.serving import LiveServer, make_mlp, run_server, save_mlflow_model

from mlplat.serving.app import create_app
from mlplat.serving.model import LoadedModel
from mlplat.serving.settings import ServingSettings


@pytest.fixture(autouse=True)
def _clean_serving_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the environment: keep the developer's MLPLAT_SERVING_* out of the tests."""
    for name in list(os.environ):
        if name.startswith("MLPLAT_SERVING_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def mlp() -> torch.nn.Module:
    """The module behind the session's MLflow model."""
    return make_mlp()


@pytest.fixture(scope="session")
def mlflow_model_dir(tmp_path_factory: pytest.TempPathFactory, mlp: torch.nn.Module) -> Path:
    """An MLflow model directory (pt2, signature float32 [-1, 8], input example, reference stats)."""
    return save_mlflow_model(mlp, tmp_path_factory.mktemp("models") / "mlp")


# Each server-backed test runs twice: behind plain uvicorn, where the app's ASGI dispatcher answers, and with
# `mlplat serve`'s own uvicorn config, where the inference routes take the wire fast path (mlplat.serving.wire)
# under the connection guard. Both must behave alike.
SERVER_PATHS = ["asgi", "wire"]


@pytest.fixture(params=SERVER_PATHS)
def serve(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """`with serve(model, **settings) as live:` runs a server for a LoadedModel (or a URI in settings)."""

    def _serve(model: LoadedModel | None = None, **settings: Any) -> Any:
        settings.setdefault("model_uri", "test")
        return run_server(create_app(ServingSettings(**settings), model), guarded=request.param == "wire")

    return _serve


@pytest.fixture(scope="module", params=SERVER_PATHS)
def mlp_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server per module and path: the MLflow MLP model loaded from disk at start-up, default settings."""
    path = save_mlflow_model(make_mlp(), tmp_path_factory.mktemp("served") / "mlp")
    with run_server(create_app(ServingSettings(model_uri=str(path))), guarded=request.param == "wire") as live:
        yield live
