"""End to end against real MLflow (SQLite in a temp dir): train, track, gate, register, promote."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pytorch
import numpy as np
import pytest
import torch
import yaml
from mlflow.models import Model
from support.training_helpers import write_config
from typer.testing import CliRunner

from mlplat.cli.app import app
from mlplat.contracts.reference_stats import ReferenceStats
from mlplat.contracts.training_config import parse_config
from mlplat.training import EXIT_GATE_REJECTED
from mlplat.training.data import load_data
from mlplat.training.gate import GateDecision
from mlplat.training.loop import NonFiniteLoss, Preempted
from mlplat.training.progress import NullProgress
from mlplat.training.runner import run_training
from mlplat.training.tracking import NullTracker
from mlplat.training.trainer import GateRejected, _closes_run, train


def client() -> mlflow.MlflowClient:
    return mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    """Where a test's artifact downloads go: MLflow's default is a temp folder it never removes."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


def registered_versions(name: str) -> list[str]:
    return sorted(str(v.version) for v in client().search_model_versions(f"name='{name}'"))


def test_tiny_config_trains_tracks_and_registers(make_config: Callable[..., dict[str, Any]], downloads: Path) -> None:
    config = parse_config(
        make_config(registry={"model_name": "digits"}, gate={"min_accuracy": 0.5, "min_macro_f1": 0.5})
    )
    result = train(config)

    assert result.registered_version == "1"
    assert result.gate is not None and result.gate.passed
    assert result.test_metrics is not None and result.test_metrics["accuracy"] >= 0.5
    assert len(result.history) == 2 and result.history[-1]["val_accuracy"] > result.history[0]["val_accuracy"] - 0.2

    run = client().get_run(str(result.run_id))
    assert run.info.status == "FINISHED"
    assert run.data.params["optimizer.lr"] == "0.001" and run.data.params["seed"] == "3"
    assert run.data.tags["mlplat.data_sha256"] == load_data(config.data, config.seed).fingerprint()
    assert len(run.data.tags["mlflow.source.git.commit"]) >= 7
    assert run.data.tags["mlplat.gate"] == "passed" and run.data.tags["mlplat.registered_version"] == "1"
    losses = client().get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in losses] == list(range(5, result.final_step + 1, 5))
    assert [m.step for m in client().get_metric_history(run.info.run_id, "val_accuracy")] == [20, 40]
    assert run.data.metrics["test_accuracy"] == result.test_metrics["accuracy"]
    artifacts = {a.path for a in client().list_artifacts(run.info.run_id)}
    assert {"training_config.yaml", "data_validation.json", "gate.json"} <= artifacts
    logged = Path(client().download_artifacts(run.info.run_id, "training_config.yaml", str(downloads)))
    logged_config = yaml.safe_load(logged.read_text())
    assert logged_config["registry"]["model_name"] == "digits"

    version = client().get_model_version_by_alias("digits", "staging")
    assert str(version.version) == "1" and version.tags["mlplat.run_id"] == result.run_id
    model_dir = Path(mlflow.artifacts.download_artifacts("models:/digits@staging", dst_path=str(downloads)))
    stats = ReferenceStats.model_validate_json((model_dir / "reference_stats.json").read_text())
    assert stats.n_samples == 1257 and len(stats.features) == 64 and stats.features[0].name == "pixel_0_0"
    assert (model_dir / "data" / "model.pt2").is_file(), "registered as a torch.export program"
    assert not (model_dir / "data" / "model.pth").exists(), "no pickle for the model server to trust"
    mlmodel = Model.load(str(model_dir))
    assert mlmodel.signature is not None
    (spec,) = mlmodel.signature.inputs.inputs
    assert spec.type == np.dtype(np.float32) and spec.shape == (-1, 64)
    example = json.loads((model_dir / "input_example.json").read_text())
    assert np.asarray(example["inputs"] if isinstance(example, dict) else example).shape == (5, 64)
    requirements = (model_dir / "requirements.txt").read_text()
    assert "mlflow==3.17.2" in requirements and "torch==" in requirements

    served = mlflow.pytorch.load_model("models:/digits@staging")
    data = load_data(config.data, config.seed).as_float32()
    with torch.no_grad():
        predicted = served(torch.from_numpy(data.x_test)).argmax(dim=1).numpy()
    assert float((predicted == data.y_test).mean()) == pytest.approx(result.test_metrics["accuracy"])


def test_promote_moves_the_alias_and_the_champion_gate_uses_it(make_config: Callable[..., dict[str, Any]]) -> None:
    strong = parse_config(make_config(epochs=4, registry={"model_name": "digits"}))
    assert train(strong).registered_version == "1"

    cli = CliRunner()
    result = cli.invoke(app, ["promote", "digits", "--from", "staging", "--to", "champion"])
    assert result.exit_code == 0, result.output
    assert "digits@champion -> version 1" in result.output
    assert str(client().get_model_version_by_alias("digits", "champion").version) == "1"
    missing = cli.invoke(app, ["promote", "digits", "--from", "canary", "--to", "champion"])
    assert missing.exit_code == 1 and "model 'digits' has no version with alias 'canary'" in missing.output

    weak = parse_config(
        make_config(
            epochs=1,
            optimizer={"lr": 1e-4},
            checkpoint={"uri": "weak-ckpt"},
            registry={"model_name": "digits"},
            gate={"must_beat_champion": True},
        )
    )
    with pytest.raises(GateRejected) as caught:
        train(weak)
    reasons = caught.value.decision.reasons
    assert reasons[0].startswith("accuracy ") and "< champion v1's" in reasons[0]
    assert registered_versions("digits") == ["1"], "a rejected candidate must not be registered"
    assert str(client().get_model_version_by_alias("digits", "staging").version) == "1"


def test_gate_rejects_a_poor_model_registers_nothing_and_says_why(
    tmp_path: Path, make_config: Callable[..., dict[str, Any]], caplog: pytest.LogCaptureFixture, downloads: Path
) -> None:
    raw = make_config(
        epochs=1,
        optimizer={"lr": 1e-5},
        registry={"model_name": "poor"},
        gate={"min_accuracy": 0.9, "min_macro_f1": 0.9},
    )
    assert run_training(write_config(tmp_path / "poor.yaml", raw)) == EXIT_GATE_REJECTED
    assert "gate REJECTED the model" in caplog.text
    assert "accuracy 0." in caplog.text and "< min_accuracy 0.9000" in caplog.text
    assert "< min_macro_f1 0.9000" in caplog.text
    assert client().search_registered_models() == []
    (run,) = client().search_runs([client().get_experiment_by_name("tests").experiment_id])
    assert run.data.tags["mlplat.gate"] == "rejected"
    assert run.info.status == "FINISHED", "the run succeeded; the model it produced was rejected"
    assert "mlplat.registered_version" not in run.data.tags
    gate = json.loads(Path(client().download_artifacts(run.info.run_id, "gate.json", str(downloads))).read_text())
    assert gate["passed"] is False and gate["metrics"]["accuracy"] < 0.9


def test_a_model_torch_export_cannot_trace_can_be_registered_as_a_pickle(
    make_config: Callable[..., dict[str, Any]], downloads: Path
) -> None:
    config = parse_config(
        make_config(
            model={"source": "support.training_builders:data_dependent"},
            registry={"model_name": "branchy", "serialization_format": "pickle"},
        )
    )
    result = train(config)
    assert result.registered_version == "1"
    model_dir = Path(mlflow.artifacts.download_artifacts("models:/branchy@staging", dst_path=str(downloads)))
    assert (model_dir / "data" / "model.pth").is_file() and not (model_dir / "data" / "model.pt2").exists()


def test_a_model_torch_export_cannot_trace_fails_before_training_when_pt2_is_asked_for(
    make_config: Callable[..., dict[str, Any]],
) -> None:
    from mlplat.contracts.training_config import ConfigError

    config = parse_config(
        make_config(model={"source": "support.training_builders:data_dependent"}, registry={"model_name": "branchy"})
    )
    with pytest.raises(
        ConfigError,
        match=r"registry.serialization_format: 'pt2' .* cannot trace this "
        r"_DataDependent \(.*data-dependent.*\); use 'pickle'",
    ):
        train(config)
    assert not Path(config.checkpoint.uri).exists(), "it failed before the first step"
    (run,) = client().search_runs([client().get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FAILED"


def test_a_teams_own_data_and_model_builders_are_used(make_config: Callable[..., dict[str, Any]]) -> None:
    config = parse_config(
        make_config(
            epochs=10,
            batch_size=16,
            optimizer={"lr": 0.05},
            data={"source": "support.training_builders:blobs", "options": {"rows": 240}},
            model={"source": "support.training_builders:tiny_linear", "options": {"scale": 0.5}},
            gate={"min_accuracy": 0.9},
        )
    )
    result = train(config)
    assert result.test_metrics is not None and result.test_metrics["accuracy"] >= 0.9
    weights = {
        k
        for k, _ in torch.load(Path(config.checkpoint.uri) / f"ckpt-{result.final_step:012d}.pt", weights_only=True)[
            "model"
        ].items()
    }
    assert weights == {"0.weight", "0.bias"}, "the custom single-layer model was trained"


class RecordingProgress(NullProgress):
    """A caller's own progress sink: records what the trainer reports."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def start(self, total_steps: int, initial_step: int) -> None:
        self.calls.append(("start", total_steps, initial_step))

    def update(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        self.calls.append(("update", step, epoch, sorted(metrics)))

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.calls.append(("epoch_end", epoch, metrics["val_accuracy"]))

    def close(self) -> None:
        self.calls.append(("close",))


def test_a_callers_progress_receives_every_step_report_and_epoch_end(
    make_config: Callable[..., dict[str, Any]],
) -> None:
    progress = RecordingProgress()
    result = train(parse_config(make_config()), progress=progress)
    assert progress.calls[0] == ("start", result.final_step, 0) and progress.calls[-1] == ("close",)
    updates = [call for call in progress.calls if call[0] == "update"]
    assert [call[1] for call in updates] == list(range(5, result.final_step + 1, 5))
    assert {tuple(call[3]) for call in updates} == {("lr", "samples_per_second", "train_loss")}
    ends = [call for call in progress.calls if call[0] == "epoch_end"]
    assert [(call[1], call[2]) for call in ends] == [(i, h["val_accuracy"]) for i, h in enumerate(result.history)]


def test_rerunning_a_finished_job_trains_a_fresh_attempt_and_registers_again(
    make_config: Callable[..., dict[str, Any]],
) -> None:
    """No scheduler-given attempt id (a laptop, CI): a finished attempt is never resumed; the rerun trains."""
    config = parse_config(make_config(registry={"model_name": "digits"}))
    first = train(config)
    again = train(config)
    assert again.resumed_from_step is None and again.final_step == first.final_step
    assert again.run_id != first.run_id
    assert again.history == first.history and again.test_metrics == first.test_metrics
    assert (first.registered_version, again.registered_version) == ("1", "2")
    assert registered_versions("digits") == ["1", "2"]


def test_a_model_builder_rejecting_its_options_is_a_config_error_and_fails_the_run(
    make_config: Callable[..., dict[str, Any]],
) -> None:
    from mlplat.contracts.training_config import ConfigError

    config = parse_config(
        make_config(model={"source": "support.training_builders:tiny_linear", "options": {"width": 3}})
    )
    with pytest.raises(
        ConfigError, match=r"model.options: support\.training_builders:tiny_linear rejected them: .*width"
    ):
        train(config)
    assert mlflow.active_run() is None
    (run,) = client().search_runs([client().get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FAILED"


class _RecordingTracker(NullTracker):
    def __init__(self) -> None:
        self.ended: list[tuple[str, bool]] = []

    def end(self, status: str, must_succeed: bool = False) -> None:
        self.ended.append((status, must_succeed))


@pytest.mark.parametrize(
    ("raised", "status"),
    [
        (None, ("FINISHED", True)),
        (GateRejected(GateDecision(passed=False, metrics={}, reasons=["x"]), None), ("FINISHED", True)),  # type: ignore[arg-type]
        (Preempted(7), ("KILLED", False)),
        (NonFiniteLoss(3, float("nan")), ("FAILED", False)),
        (KeyboardInterrupt(), ("FAILED", False)),
    ],
)
def test_the_run_is_closed_once_with_the_status_its_way_out_implies(
    raised: BaseException | None, status: tuple[str, bool]
) -> None:
    tracker = _RecordingTracker()
    with contextlib.suppress(BaseException), _closes_run(tracker):
        if raised is not None:
            raise raised
    assert tracker.ended == [status]
