"""Spot interruptions: SIGTERM and kill -9 mid-run, then resume, equal an uninterrupted run bit for bit.

The interrupted runs are real trainer subprocesses (``python -m mlplat.training``); the resumes and the
reference run are in-process. All use one CPU thread and deterministic algorithms, so equality is exact.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
from support.training_helpers import (
    load_final_weights,
    resume_config,
    start_trainer,
    stop,
    wait_for_checkpoint,
    write_config,
)

from mlplat.contracts.training_config import parse_config
from mlplat.training import EXIT_PREEMPTED
from mlplat.training.checkpoint import checkpoint_names
from mlplat.training.trainer import TrainingResult, train


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TrainingResult, dict[str, torch.Tensor]]]:
    """The uninterrupted run every interrupted one must match."""
    root = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
        try:
            result = train(parse_config(resume_config(root, "reference")))
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic)
    yield result, load_final_weights(root / "reference")


def assert_same_run(
    resumed: TrainingResult, reference: tuple[TrainingResult, dict[str, torch.Tensor]], checkpoints: Path
) -> None:
    expected, expected_weights = reference
    assert resumed.final_step == expected.final_step
    assert resumed.history == expected.history, "per-epoch metrics differ from the uninterrupted run"
    assert resumed.test_metrics == expected.test_metrics
    weights = load_final_weights(checkpoints)
    assert weights.keys() == expected_weights.keys()
    for name, tensor in expected_weights.items():
        assert torch.equal(weights[name], tensor), f"{name} differs from the uninterrupted run"


def interrupted_run(tmp_path: Path, sig: signal.Signals) -> tuple[dict[str, Any], int, int]:
    """Start a trainer subprocess, wait for a mid-run checkpoint, send ``sig``; return config, exit code and
    the step of the checkpoint seen before the signal."""
    config = resume_config(tmp_path, "checkpoints")
    path = write_config(tmp_path / "training.yaml", config)
    process = start_trainer(["mlplat.training", "--config", str(path)], tmp_path / "trainer.log")
    try:
        seen = wait_for_checkpoint(tmp_path / "checkpoints", process, min_step=50)
        code = stop(process, sig)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return config, code, seen


def test_sigterm_finishes_the_step_checkpoints_exits_75_and_resumes_identically(
    tmp_path: Path, reference: tuple[TrainingResult, dict[str, torch.Tensor]], caplog: pytest.LogCaptureFixture
) -> None:
    config, code, seen = interrupted_run(tmp_path, signal.SIGTERM)
    log = (tmp_path / "trainer.log").read_text()
    assert code == EXIT_PREEMPTED, log
    assert "SIGTERM received: checkpointing at step" in log
    stopped_at = int(log.split("SIGTERM received: checkpointing at step ")[1].split()[0])
    assert seen <= stopped_at < reference[0].final_step, "the signal landed mid-run"
    steps = sorted(int(p.name[5:17]) for p in (tmp_path / "checkpoints").glob("ckpt-*.json"))
    assert steps[-1] == stopped_at, "the newest checkpoint is the step SIGTERM interrupted"

    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    (killed,) = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    assert killed.info.status == "KILLED"

    with caplog.at_level(logging.INFO, logger="mlplat.training"):
        resumed = train(parse_config(config))
    assert resumed.resumed_from_step == stopped_at
    assert f"resuming from checkpoint step {stopped_at}" in caplog.text
    assert_same_run(resumed, reference, tmp_path / "checkpoints")
    run = client.get_run(str(resumed.run_id))
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"


def test_kill_9_loses_only_the_steps_since_the_last_checkpoint_and_resumes_identically(
    tmp_path: Path, reference: tuple[TrainingResult, dict[str, torch.Tensor]]
) -> None:
    config, code, seen = interrupted_run(tmp_path, signal.SIGKILL)
    assert code == -signal.SIGKILL
    resumed = train(parse_config(config))
    assert resumed.resumed_from_step is not None
    assert seen <= resumed.resumed_from_step < reference[0].final_step
    assert_same_run(resumed, reference, tmp_path / "checkpoints")


def test_a_corrupt_newest_checkpoint_is_skipped_and_the_run_still_matches(
    tmp_path: Path,
    reference: tuple[TrainingResult, dict[str, torch.Tensor]],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Damage the newest checkpoints of a finished attempt: a retried pod of the same Job resumes from an older
    one, retrains the missing steps, and lands on the same weights."""
    monkeypatch.setenv("MLPLAT_ATTEMPT_ID", "job-uid-corrupt")
    config = resume_config(tmp_path, "checkpoints")
    final = train(parse_config(config)).final_step
    directory = tmp_path / "checkpoints"
    steps = sorted(int(p.name[5:17]) for p in directory.glob("ckpt-*.json"))
    assert steps[-1] == final and len(steps) == 3
    for step in steps[-2:]:
        payload = directory / checkpoint_names(step)[0]
        data = bytearray(payload.read_bytes())
        data[-20] ^= 0x01
        payload.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="mlplat.training.checkpoint"):
        resumed = train(parse_config(config))
    assert resumed.resumed_from_step == steps[0]
    assert f"checkpoint step {steps[-1]} in {directory} is corrupt" in caplog.text
    assert f"checkpoint step {steps[-2]} in {directory} is corrupt" in caplog.text
    assert_same_run(resumed, reference, directory)
