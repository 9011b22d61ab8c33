"""Run lineage: scheduled runs train on fresh checkpoints, retries of one Job resume, changes never resume silently."""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
from support.training_builders import write_blobs
from support.training_helpers import load_final_weights, write_config

from mlplat.contracts.training_config import parse_config
from mlplat.training import EXIT_CONFIG_INVALID, EXIT_DIVERGED
from mlplat.training.checkpoint import checkpoint_names
from mlplat.training.lineage import ATTEMPT_ENV, LineageMismatch
from mlplat.training.loop import Preempted
from mlplat.training.progress import NullProgress
from mlplat.training.runner import run_training
from mlplat.training.trainer import GateRejected, TrainingResult, train

Config = Callable[..., dict[str, Any]]


def client() -> mlflow.MlflowClient:
    return mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])


class SigtermAt(NullProgress):
    """Sends this process SIGTERM once the loop reports ``step`` or later (a spot interruption, in-process)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def update(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        if step >= self.step:
            self.step = 10**9
            os.kill(os.getpid(), signal.SIGTERM)


def preempt(config: dict[str, Any], at: int) -> int:
    """Train until SIGTERM at step ``at`` (or the next log step); return the step the checkpoint was written at."""
    with pytest.raises(Preempted) as caught:
        train(parse_config(config), progress=SigtermAt(at))
    return caught.value.step


def record(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "attempt.json").read_text())
    return data


def steps_in(directory: Path) -> list[int]:
    return sorted(int(p.name[5:17]) for p in directory.glob("ckpt-*.json"))


def corrupt(directory: Path, step: int) -> None:
    payload = directory / checkpoint_names(step)[0]
    data = bytearray(payload.read_bytes())
    data[-20] ^= 0x01
    payload.write_bytes(bytes(data))


# ---- scheduled runs ---------------------------------------------------------------------------------------
def test_two_scheduled_runs_with_the_same_config_both_train_and_register(
    make_config: Config, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A CronJob's runs are two Jobs (two controller uids) on one checkpoint prefix: each trains all its
    steps and registers; the second never resumes the first one's final checkpoint."""
    config = parse_config(make_config(registry={"model_name": "weekly"}))
    monkeypatch.setenv(ATTEMPT_ENV, "uid-monday")
    first = train(config)
    assert record(tmp_path / "checkpoints")["status"] == "finished"
    monkeypatch.setenv(ATTEMPT_ENV, "uid-next-monday")
    second = train(config)
    assert second.resumed_from_step is None and second.final_step == first.final_step == 40
    assert second.run_id != first.run_id
    assert (first.registered_version, second.registered_version) == ("1", "2")
    run = client().get_run(str(second.run_id))
    assert run.data.tags["mlplat.attempt"] == "uid-next-monday"
    assert [m.step for m in client().get_metric_history(str(second.run_id), "val_accuracy")] == [20, 40]
    assert record(tmp_path / "checkpoints")["attempt"] == "uid-next-monday"
    assert steps_in(tmp_path / "checkpoints") == [35, 40], "the first run's checkpoints were retired"


def test_a_scheduled_run_is_refused_by_the_champion_gate_on_its_merits_not_skipped(
    make_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = parse_config(
        make_config(
            registry={"model_name": "weekly", "alias": "champion"},
            gate={"must_beat_champion": True, "min_improvement": 0.01},
        )
    )
    monkeypatch.setenv(ATTEMPT_ENV, "uid-1")
    assert train(config).registered_version == "1"
    monkeypatch.setenv(ATTEMPT_ENV, "uid-2")
    with pytest.raises(GateRejected) as caught:
        train(config)
    assert caught.value.result.resumed_from_step is None and caught.value.result.final_step == 40, "it trained"
    assert "champion v1's" in caught.value.decision.reasons[0]


def test_a_retried_pod_of_a_finished_job_does_not_train_or_register_again(
    make_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ATTEMPT_ENV, "uid-1")
    config = parse_config(make_config(registry={"model_name": "digits"}))
    first = train(config)
    again = train(config)
    assert again.resumed_from_step == first.final_step and again.run_id == first.run_id
    assert again.registered_version == "1"
    assert [str(v.version) for v in client().search_model_versions("name='digits'")] == ["1"]


# ---- changes start fresh (or fail clearly within an attempt) ----------------------------------------------
def _change_config(config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    return {**config, "optimizer": {"lr": 0.002}}


def _change_data(config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    write_blobs(tmp_path / "data.npz", seed=1)  # same config, new file contents
    return config


def _change_model(config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    monkeypatch.setenv("TEST_MODEL_WIDTH", "12")  # same config, new code
    return config


CHANGES = {"config": _change_config, "data": _change_data, "model architecture": _change_model}


def _file_config(make_config: Config, tmp_path: Path) -> dict[str, Any]:
    write_blobs(tmp_path / "data.npz", seed=0)
    return make_config(
        epochs=3,
        batch_size=16,
        data={"source": "support.training_builders:from_file", "options": {"path": str(tmp_path / "data.npz")}},
        model={"source": "support.training_builders:width_from_env"},
    )


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_starts_a_fresh_attempt_instead_of_resuming(
    change: str,
    make_config: Config,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    base = _file_config(make_config, tmp_path)
    stopped = preempt(base, at=10)
    old = record(tmp_path / "checkpoints")
    assert old["status"] == "running" and steps_in(tmp_path / "checkpoints")[-1] == stopped
    changed = CHANGES[change](base, monkeypatch, tmp_path)
    with caplog.at_level(logging.INFO, logger="mlplat.training"):
        result = train(parse_config(changed))
    assert result.resumed_from_step is None, "a changed run must not resume the old weights"
    assert f"starting a fresh attempt: the {change}" in caplog.text
    new = record(tmp_path / "checkpoints")
    assert new["attempt"] != old["attempt"] and new["status"] == "finished"
    assert result.run_id != old["mlflow_run_id"]


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_within_an_attempt_is_a_clear_error(
    change: str,
    make_config: Config,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A retried pod of the same Job that runs something else fails with exit 78 and says what changed."""
    monkeypatch.setenv(ATTEMPT_ENV, "uid-7")
    base = _file_config(make_config, tmp_path)
    preempt(base, at=10)
    changed = CHANGES[change](base, monkeypatch, tmp_path)
    with pytest.raises(LineageMismatch, match=f"attempt uid-7 was started with a different {change}"):
        train(parse_config(changed))
    assert run_training(write_config(tmp_path / "changed.yaml", changed)) == EXIT_CONFIG_INVALID
    assert "a retry of a Job must train what its first pod trained" in capsys.readouterr().err
    assert record(tmp_path / "checkpoints")["status"] == "running", "the attempt is left as it was"


# ---- corrupt checkpoints and pruning ----------------------------------------------------------------------
def test_corrupt_newest_k_then_sigterm_the_resumed_run_and_the_next_resume_continues_from_the_newest_valid_step(
    make_config: Config, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """keep_last=2 and the newest 2 checkpoints corrupt: the resume from the older valid one must not let
    them push its own new checkpoints out (they would all be pruned, and the next resume start over)."""
    monkeypatch.setenv(ATTEMPT_ENV, "uid-c")
    raw = make_config(epochs=3, checkpoint={"keep_last": 3})
    reference = train(parse_config(make_config(epochs=3, checkpoint={"uri": str(tmp_path / "reference")})))
    directory = tmp_path / "checkpoints"
    assert preempt(raw, at=30) == 30
    assert steps_in(directory) == [20, 25, 30]
    for step in (25, 30):
        corrupt(directory, step)

    raw["checkpoint"]["keep_last"] = 2  # keep_last may change between retries; it is not in the fingerprint
    assert preempt(raw, at=22) == 25  # resumed from 20, SIGTERM at the next log step
    assert steps_in(directory) == [20, 25], "the corrupt 25 and 30 were retired, the new 25 kept"
    with caplog.at_level(logging.INFO, logger="mlplat.training"):
        final = train(parse_config(raw))
    assert final.resumed_from_step == 25 and "STARTING OVER" not in caplog.text
    assert final.history == reference.history and final.test_metrics == reference.test_metrics
    expected = load_final_weights(tmp_path / "reference")
    for name, tensor in load_final_weights(directory).items():
        assert torch.equal(tensor, expected[name]), name


def test_when_every_checkpoint_is_corrupt_the_run_says_it_starts_over(
    make_config: Config, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(ATTEMPT_ENV, "uid-s")
    raw = make_config(epochs=3)
    preempt(raw, at=25)
    first_run = record(tmp_path / "checkpoints")["mlflow_run_id"]
    for step in steps_in(tmp_path / "checkpoints"):
        corrupt(tmp_path / "checkpoints", step)
    with caplog.at_level(logging.ERROR, logger="mlplat.training"):
        result = train(parse_config(raw))
    assert "STARTING OVER: every checkpoint of attempt uid-s" in caplog.text
    assert result.resumed_from_step is None and result.final_step == 60
    assert result.run_id == first_run, "the attempt keeps its MLflow run"
    run = client().get_run(first_run)
    assert run.data.metrics["checkpoint_start_over"] == 1.0 and run.data.metrics["checkpoints_corrupt"] == 2.0
    assert "mlplat.checkpoint_start_over" in run.data.tags


# ---- non-finite training ----------------------------------------------------------------------------------
def test_a_nan_loss_stops_the_run_at_once_with_its_own_exit_code(
    make_config: Config, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = make_config(
        epochs=50, model={"source": "support.training_builders:exploding"}, registry={"model_name": "nan"}
    )
    path = write_config(tmp_path / "nan.yaml", raw)
    assert run_training(path) == EXIT_DIVERGED
    assert "training loss is nan at step 5" in caplog.text
    assert steps_in(tmp_path / "checkpoints") == [], "no diverged weights were checkpointed"
    (run,) = client().search_runs([client().get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["mlplat.diverged"].startswith("step 5")
    assert client().search_registered_models() == []
    assert record(tmp_path / "checkpoints")["status"] == "failed"


def test_the_outcome_of_a_run_is_what_the_lineage_records(make_config: Config, tmp_path: Path) -> None:
    result: TrainingResult = train(parse_config(make_config(registry={"model_name": "digits"})))
    saved = record(tmp_path / "checkpoints")
    assert saved["status"] == "finished" and saved["mlflow_run_id"] == result.run_id
    assert saved["outcome"] == "registered digits version 1" and saved["attempt"].startswith("local-")
    assert saved["explicit"] is False
    manifest = json.loads((tmp_path / "checkpoints" / checkpoint_names(40)[1]).read_text())
    assert manifest["attempt"] == saved["attempt"]
