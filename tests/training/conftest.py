"""Fixtures for the trainer's tests: an isolated MLflow store per test, tiny configs, moto S3."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from support.training_helpers import tiny_config


@pytest.fixture(scope="session")
def _mlflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store with its schema created once (the migrations take seconds)."""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}")
    client.search_experiments()
    client.search_registered_models()
    return path


@pytest.fixture(autouse=True)
def _isolated_training_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _mlflow_template_db: Path
) -> Iterator[None]:
    """Each test works in its own directory with its own SQLite MLflow store, and torch's global
    settings (which the trainer sets, as the main program of a job should) are restored afterwards."""
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root (./mlruns) lands in tmp_path
    shutil.copyfile(_mlflow_template_db, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.setenv("CI", "1")  # plain log lines, no progress bar
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    import mlflow

    while mlflow.active_run() is not None:  # a failed test must not leak an open run into the next
        mlflow.end_run("FAILED")


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """``make_config(**sections)``: a tiny config rooted in this test's directory."""
    return lambda **sections: tiny_config(tmp_path, **sections)
