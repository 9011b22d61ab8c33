"""The CUDA paths of the trainer and the model server, on a real GPU.

CI machines have no GPU, so there these tests are skipped with that reason; ``scripts/gpu-check.sh`` runs them
on a machine with one (the project's device check), and docs/benchmarks.md records the last result. They need
only torch, numpy, pydantic, pydantic-settings, PyYAML and scikit-learn: MLflow is replaced by the trainer's
NullTracker, because what is checked here is the device code, not tracking.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from support.training_helpers import load_final_weights, resume_config

from mlplat.contracts.training_config import parse_config
from mlplat.serving.model import load_model
from mlplat.serving.settings import ServingSettings
from mlplat.training import trainer
from mlplat.training.loop import Preempted
from mlplat.training.progress import NullProgress
from mlplat.training.tracking import NullTracker

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run scripts/gpu-check.sh)")


@pytest.fixture(autouse=True)
def _no_mlflow(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(trainer, "MlflowTracker", lambda *args, **kwargs: NullTracker())
    monkeypatch.chdir(tmp_path)


def _cuda_config(tmp_path: Path, name: str, device: str = "cuda") -> dict[str, Any]:
    config = resume_config(tmp_path, name)
    config["runtime"] = {"device": device, "num_threads": 1, "deterministic": True}
    config["gate"] = {"min_accuracy": 0.0, "min_macro_f1": 0.0}
    return config


class _SigtermAt(NullProgress):
    """Sends this process SIGTERM at the first report at or after ``step``, as a spot reclaim would."""

    def __init__(self, step: int) -> None:
        self.step, self.sent = step, False

    def update(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        if step >= self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


def test_training_on_cuda_is_deterministic_and_resumes_after_sigterm_bit_for_bit(tmp_path: Path) -> None:
    reference = trainer.train(parse_config(_cuda_config(tmp_path, "reference")))
    assert reference.gate is not None and reference.gate.passed
    reference_weights = load_final_weights(tmp_path / "reference")

    config = parse_config(_cuda_config(tmp_path, "interrupted"))
    with pytest.raises(Preempted) as stopped:
        trainer.train(config, progress=_SigtermAt(300))
    assert 300 <= stopped.value.step < reference.final_step
    resumed = trainer.train(config)

    assert resumed.resumed_from_step == stopped.value.step
    assert resumed.final_step == reference.final_step
    assert resumed.history == reference.history, "per-epoch metrics differ from the uninterrupted CUDA run"
    weights = load_final_weights(tmp_path / "interrupted")
    for name, tensor in reference_weights.items():
        assert torch.equal(weights[name], tensor), f"{name} differs from the uninterrupted CUDA run"


def test_a_checkpoint_written_on_the_gpu_resumes_on_the_cpu(tmp_path: Path) -> None:
    gpu = parse_config(_cuda_config(tmp_path, "moved"))
    with pytest.raises(Preempted) as stopped:
        trainer.train(gpu, progress=_SigtermAt(200))
    # The same attempt continues on a node without a GPU: checkpoints load with map_location="cpu".
    cpu = trainer.train(parse_config(_cuda_config(tmp_path, "moved", device="cpu")))
    assert cpu.resumed_from_step == stopped.value.step
    assert cpu.final_step > stopped.value.step and len(cpu.history) == gpu.epochs


def test_the_server_runs_a_model_on_cuda_like_on_the_cpu(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    path = tmp_path / "mlp.pt"
    torch.jit.script(module).save(str(path))

    on_gpu = load_model(ServingSettings(model_uri=str(path), device="cuda", max_batch_size=64))
    on_cpu = load_model(ServingSettings(model_uri=str(path), device="cpu", max_batch_size=64))
    rows = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)
    gpu_out, cpu_out = on_gpu.predict(rows), on_cpu.predict(rows)
    assert isinstance(gpu_out, np.ndarray) and gpu_out.shape == (64, 10)
    np.testing.assert_allclose(gpu_out, cpu_out, rtol=1e-4, atol=1e-4)
    assert on_gpu.predict(rows[:1]).shape == (1, 10), "a batch of one after warm-up"
