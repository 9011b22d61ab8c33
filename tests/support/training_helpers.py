"""Helpers for the trainer's tests: tiny configs, subprocess runs of the trainer, checkpoint reading."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from support import TESTS_DIR


def tiny_config(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """A config that trains digits in well under a second (sections override, merged one level deep)."""
    config: dict[str, Any] = {
        "seed": 3,
        "epochs": 2,
        "batch_size": 64,
        "model": {"hidden_sizes": [32]},
        "checkpoint": {"uri": str(tmp_path / "checkpoints"), "every_n_steps": 5, "keep_last": 2},
        "tracking": {"experiment": "tests", "log_every_n_steps": 5},
        "runtime": {"device": "cpu", "num_threads": 1},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def resume_config(tmp_path: Path, name: str) -> dict[str, Any]:
    """A run long enough (about a second of training, ~1,500 steps) to be interrupted part-way.

    Dropout makes the result depend on the RNG states that checkpoints must carry.
    """
    return tiny_config(
        tmp_path,
        epochs=12,
        batch_size=8,
        model={"hidden_sizes": [48], "dropout": 0.2},
        schedule={"name": "cosine", "warmup_steps": 20},
        checkpoint={"uri": str(tmp_path / name), "every_n_steps": 25, "keep_last": 3},
        tracking={"experiment": "resume", "log_every_n_steps": 50},
    )


def write_config(path: Path, config: dict[str, Any]) -> Path:
    """Write ``config`` as YAML and return the path."""
    path.write_text(yaml.safe_dump(config))
    return path


def trainer_env() -> dict[str, str]:
    """The environment for a trainer subprocess (inherits the test's MLflow URI and CI setting)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    return env


def start_trainer(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m mlplat.training <args>`` (or torchrun when args start with it) with logs to a file."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=trainer_env(),
            start_new_session=True,
        )


def wait_for_checkpoint(
    directory: Path, process: subprocess.Popen[bytes], min_step: int = 1, timeout: float = 120.0
) -> int:
    """Poll until a committed checkpoint (a manifest) at ``min_step`` or later exists; return its step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = [int(p.stem.split("-")[1]) for p in directory.glob("ckpt-*.json")] if directory.is_dir() else []
        if steps and max(steps) >= min_step:
            return max(steps)
        if process.poll() is not None:
            raise AssertionError(f"trainer exited with {process.returncode} before a checkpoint appeared")
        time.sleep(0.005)
    raise AssertionError(f"no checkpoint in {directory} within {timeout}s")


def stop(process: subprocess.Popen[bytes], sig: signal.Signals, timeout: float = 120.0) -> int:
    """Send ``sig`` and wait for the exit code."""
    process.send_signal(sig)
    return process.wait(timeout=timeout)


def load_final_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The model weights in the newest checkpoint of a finished run."""
    from mlplat.training.checkpoint import CheckpointManager
    from mlplat.training.storage import LocalStore

    manager = CheckpointManager(LocalStore(directory))
    try:
        loaded = manager.load_latest()
    finally:
        manager.close()
    assert loaded is not None, f"no checkpoint in {directory}"
    weights: dict[str, torch.Tensor] = loaded.state["model"]
    return weights
