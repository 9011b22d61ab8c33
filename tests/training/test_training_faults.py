"""Transient faults are retried within a budget, then exit 75 after a checkpoint; permanent ones fail clearly.

The MLflow outages are real: an ``mlflow server`` on loopback is stopped under a trainer subprocess and
started again on the same port.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, PERMISSION_DENIED, TEMPORARILY_UNAVAILABLE
from support.training_helpers import resume_config, start_trainer, wait_for_checkpoint, write_config

from mlplat.contracts.training_config import ConfigError, GateConfig, parse_config
from mlplat.demo.services import MlflowServer
from mlplat.training import EXIT_PREEMPTED
from mlplat.training.checkpoint import CheckpointManager, checkpoint_names
from mlplat.training.faults import RetryPolicy, TransientFault, is_transient, retry_call
from mlplat.training.gate import decide
from mlplat.training.lineage import ATTEMPT_ENV
from mlplat.training.runner import run_training
from mlplat.training.storage import LocalStore
from mlplat.training.trainer import train

FAST = RetryPolicy(budget_seconds=0.5, initial_backoff_seconds=0.01, max_backoff_seconds=0.05)


# ---- the retry policy ---------------------------------------------------------------------------------------
def test_transient_errors_are_retried_until_they_pass_and_permanent_ones_are_raised_at_once() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError("connection refused")
        return "ok"

    assert retry_call(flaky, "flaky", FAST, sleep=lambda s: None) == "ok" and len(calls) == 3

    def forbidden() -> None:
        calls.append(1)
        raise MlflowException("permission denied", error_code=PERMISSION_DENIED)

    calls.clear()
    with pytest.raises(MlflowException, match="permission denied"):
        retry_call(forbidden, "forbidden", FAST)
    assert len(calls) == 1


def test_a_fault_that_outlasts_the_budget_becomes_a_transient_fault() -> None:
    started = time.monotonic()
    with pytest.raises(TransientFault, match=r"sending things kept failing for 0\.\d s \(ConnectionResetError"):
        retry_call(lambda: (_ for _ in ()).throw(ConnectionResetError("reset")), "sending things", FAST)
    assert time.monotonic() - started < 5


def test_what_counts_as_transient() -> None:
    assert is_transient(MlflowException("API request to http://x/api failed with exception ConnectionError"))
    assert is_transient(MlflowException("API request to endpoint /x failed with error code 503 != 200"))
    assert not is_transient(MlflowException("a bug"))
    assert is_transient(MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE))
    assert not is_transient(MlflowException("bad", error_code=INVALID_PARAMETER_VALUE))
    assert is_transient(TimeoutError()) and is_transient(ConnectionResetError())
    assert not is_transient(PermissionError()) and not is_transient(ValueError("bug"))


# ---- the checkpoint store -----------------------------------------------------------------------------------
class FlakyStore(LocalStore):
    """A local store whose writes fail ``failures`` times (None: for good) with a connection error."""

    def __init__(self, directory: Path, failures: int | None) -> None:
        super().__init__(directory)
        self.failures = failures
        self.failed = 0

    def put(self, name: str, data: bytes) -> None:
        if self.failures is None or self.failed < self.failures:
            self.failed += 1
            raise ConnectionResetError(f"store away (failure {self.failed})")
        super().put(name, data)


def test_a_failed_checkpoint_write_is_retried(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "ckpt", failures=3)
    manager = CheckpointManager(store, keep_last=2, attempt="a", retry=FAST)
    manager.save({"step": 1}, step=1, epoch=0, wait=True)
    assert store.failed == 3 and manager.load_latest() is not None
    manager.close()


def test_flaky_checkpoint_store_does_not_end_a_run(
    make_config: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = FlakyStore(tmp_path / "checkpoints", failures=4)
    monkeypatch.setattr("mlplat.training.trainer.open_store", lambda uri, endpoint=None: store)
    result = train(parse_config(make_config(retry={"budget_seconds": 30, "initial_backoff_seconds": 0.01})))
    assert result.final_step == 40 and store.failed == 4


def test_a_store_that_stays_down_exits_75_and_a_permanent_error_fails_clearly(
    make_config: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore(tmp_path / "checkpoints", failures=None)
    monkeypatch.setattr("mlplat.training.trainer.open_store", lambda uri, endpoint=None: store)
    raw = make_config(
        epochs=50, retry={"budget_seconds": 0.3, "initial_backoff_seconds": 0.01, "max_backoff_seconds": 0.05}
    )
    started = time.monotonic()
    assert run_training(write_config(tmp_path / "t.yaml", raw)) == EXIT_PREEMPTED
    assert time.monotonic() - started < 60
    assert "kept failing for" in caplog.text and "exit 75" in caplog.text


# ---- manifests, pruning, config, gate ------------------------------------------------------------------------
def test_a_manifest_that_points_outside_its_prefix_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    outside = tmp_path / "elsewhere.pt"
    manager = CheckpointManager(LocalStore(tmp_path / "ckpt"), keep_last=3, attempt="a")
    manager.save({"step": 1}, step=1, epoch=0, wait=True)
    manager.save({"step": 2}, step=2, epoch=0, wait=True)
    outside.write_bytes((tmp_path / "ckpt" / checkpoint_names(2)[0]).read_bytes())
    manifest_path = tmp_path / "ckpt" / checkpoint_names(2)[1]
    manifest = json.loads(manifest_path.read_text())
    manifest["payload"] = "../elsewhere.pt"
    manifest_path.write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING):
        loaded = manager.load_latest()
    assert loaded is not None and loaded.manifest.step == 1
    assert "may only point at its own step's payload" in caplog.text
    manager.close()


def test_keep_last_counts_only_checkpoints_that_verify_and_never_deletes_the_newest_valid(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "ckpt")
    writer = CheckpointManager(store, keep_last=2, attempt="a")
    for step in (10, 20):
        writer.save({"step": step}, step=step, epoch=0, wait=True)
    writer.close()
    (tmp_path / "ckpt" / checkpoint_names(20)[0]).write_bytes(b"garbage")  # newest corrupt, 10 still valid
    resumed = CheckpointManager(store, keep_last=2, attempt="a")
    resumed.save({"step": 15}, step=15, epoch=0, wait=True)  # without retiring 20 first (a bare manager)
    assert sorted(int(p.name[5:17]) for p in store.directory.glob("*.json")) == [10, 15, 20], (
        "the corrupt 20 does not count: both valid ones are kept"
    )
    resumed.save({"step": 16}, step=16, epoch=0, wait=True)
    assert sorted(int(p.name[5:17]) for p in store.directory.glob("*.json")) == [15, 16, 20]
    resumed.close()


def test_other_attempts_checkpoints_are_invisible_and_retired(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "ckpt")
    old = CheckpointManager(store, keep_last=3, attempt="old")
    old.save({"step": 50}, step=50, epoch=0, wait=True)
    old.close()
    new = CheckpointManager(store, keep_last=3, attempt="new")
    assert new.load_latest() is None
    assert new.retire_foreign() == [50] and store.list() == []
    new.close()


@pytest.mark.parametrize(
    "override",
    ["optimizer.lr=.inf", "optimizer.max_grad_norm=.nan", "schedule.min_lr=.inf", "retry.budget_seconds=.inf"],
)
def test_infinite_and_nan_settings_are_config_errors(override: str) -> None:
    with pytest.raises(ConfigError, match="finite number"):
        parse_config({}, overrides=[override])


def test_the_gate_refuses_a_model_whose_metrics_are_not_finite() -> None:
    decision = decide({"accuracy": float("nan"), "macro_f1": 0.9, "loss": float("inf")}, GateConfig())
    assert not decision.passed
    assert any("accuracy is nan" in reason for reason in decision.reasons)
    assert any("loss is inf" in reason for reason in decision.reasons)


# ---- MLflow outages (real server) ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    root = tmp_path_factory.mktemp("mlflow-server")
    server = MlflowServer(root, f"sqlite:///{root / 'mlflow.db'}", str(root / "artifacts"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def outage_config(tmp_path: Path, epochs: int, budget: float) -> dict[str, Any]:
    config = resume_config(tmp_path, "checkpoints")
    config["epochs"] = epochs
    config["tracking"] = {**config["tracking"], "experiment": f"outage-{tmp_path.name}", "flush_seconds": 0.2}
    config["registry"] = {"model_name": f"outage-{tmp_path.name[-20:]}"}
    config["retry"] = {"budget_seconds": budget, "initial_backoff_seconds": 0.2, "max_backoff_seconds": 1.0}
    return config


def metric_steps(run_id: str, key: str) -> set[int]:
    return {m.step for m in mlflow.MlflowClient().get_metric_history(run_id, key)}


def test_mlflow_down_mid_run_and_back_the_run_finishes_and_registers(
    mlflow_server: MlflowServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    monkeypatch.setenv(ATTEMPT_ENV, "uid-outage-1")
    config = outage_config(tmp_path, epochs=12, budget=180)
    path = write_config(tmp_path / "training.yaml", config)
    process = start_trainer(["mlplat.training", "--config", str(path)], tmp_path / "trainer.log")
    try:
        wait_for_checkpoint(tmp_path / "checkpoints", process, min_step=25)
        mlflow_server.stop()
        wait_for_checkpoint(tmp_path / "checkpoints", process, min_step=300)  # it trains on meanwhile
        mlflow_server.start()
        code = process.wait(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if not _up(mlflow_server):
            mlflow_server.start()
    log = (tmp_path / "trainer.log").read_text()
    assert code == 0, log[-3000:]
    assert "unreachable" in log and "is back after" in log
    mlflow.set_tracking_uri(mlflow_server.uri)
    (run,) = mlflow.MlflowClient().search_runs(
        [mlflow.MlflowClient().get_experiment_by_name(config["tracking"]["experiment"]).experiment_id]
    )
    assert run.info.status == "FINISHED" and run.data.tags["mlplat.registered_version"] == "1"
    final = max(int(p.name[5:17]) for p in (tmp_path / "checkpoints").glob("ckpt-*.json"))
    assert metric_steps(run.info.run_id, "train_loss") == set(range(50, final + 1, 50)), "no metric was lost"


def test_mlflow_down_past_the_budget_exits_75_after_a_checkpoint_and_the_retry_resumes_and_registers(
    mlflow_server: MlflowServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    monkeypatch.setenv(ATTEMPT_ENV, "uid-outage-2")
    config = outage_config(tmp_path, epochs=40, budget=1.5)
    path = write_config(tmp_path / "training.yaml", config)
    process = start_trainer(["mlplat.training", "--config", str(path)], tmp_path / "trainer.log")
    try:
        wait_for_checkpoint(tmp_path / "checkpoints", process, min_step=25)
        mlflow_server.stop()
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        mlflow_server.start()
    log = (tmp_path / "trainer.log").read_text()
    assert code == EXIT_PREEMPTED, log[-3000:]
    assert "a transient fault outlasted its retry budget" in log
    stopped = int(log.split("checkpointing at step ")[1].split()[0])
    assert max(int(p.name[5:17]) for p in (tmp_path / "checkpoints").glob("ckpt-*.json")) == stopped
    assert stopped < 40 * 158, "it stopped mid-run"

    retry = start_trainer(["mlplat.training", "--config", str(path)], tmp_path / "retry.log")
    assert retry.wait(timeout=240) == 0, (tmp_path / "retry.log").read_text()[-3000:]
    retry_log = (tmp_path / "retry.log").read_text()
    assert f"resuming from checkpoint step {stopped}" in retry_log
    assert "re-sending" in retry_log
    mlflow.set_tracking_uri(mlflow_server.uri)
    (run,) = mlflow.MlflowClient().search_runs(
        [mlflow.MlflowClient().get_experiment_by_name(config["tracking"]["experiment"]).experiment_id]
    )
    assert run.info.status == "FINISHED" and run.data.tags["mlplat.registered_version"] == "1"
    final = max(int(p.name[5:17]) for p in (tmp_path / "checkpoints").glob("ckpt-*.json"))
    assert metric_steps(run.info.run_id, "train_loss") == set(range(50, final + 1, 50)), (
        "metrics buffered during the outage were carried by the checkpoint and sent by the retry"
    )


def _up(server: MlflowServer) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{server.uri}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
