"""Seeds, deterministic algorithms, RNG snapshots for checkpoints, and the code version of a run."""

from __future__ import annotations

import os
import random
import subprocess
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's (CPU and every CUDA device's) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool, num_threads: int | None) -> None:
    """Ask torch for deterministic kernels where it has them, and fix the CPU thread count if given.

    ``warn_only``: an op without a deterministic kernel warns instead of aborting a long run.
    """
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    if deterministic:
        # cuBLAS needs this set before its first use to be deterministic (see torch's reproducibility notes).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def capture_rng_state() -> dict[str, Any]:
    """This process's generator states as plain Python values (bytes, ints, floats, strings).

    Plain values travel through ``all_gather_object`` (torch 2.13 cannot unpickle tensors sent that way)
    and load with ``torch.load(weights_only=True)``. The Mersenne Twister words (625 for Python's
    generator, 624 for numpy's) are packed as little-endian uint32 bytes: pickled one int at a time
    they made up most of a small model's checkpoint serialization time.
    """
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": (version, _pack_words(internal), gauss),
        "numpy": (str(kind), _pack_words(keys), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state().numpy().tobytes(),
        "cuda": [s.numpy().tobytes() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }


def _pack_words(words: Any) -> bytes:
    return np.asarray(words, dtype="<u4").tobytes()


def _unpack_words(data: bytes) -> NDArray[np.uint32]:
    return np.frombuffer(data, dtype="<u4").astype(np.uint32)


def _byte_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore generator states captured by :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(int(word) for word in _unpack_words(internal)), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, _unpack_words(keys), pos, has_gauss, cached))
    torch.set_rng_state(_byte_tensor(state["torch"]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_byte_tensor(s) for s in state["cuda"]])


def git_commit(cwd: str | None = None) -> str:
    """The code version: ``MLPLAT_GIT_COMMIT``/``GIT_COMMIT`` (set at image build), else ``git rev-parse``."""
    for name in ("MLPLAT_GIT_COMMIT", "GIT_COMMIT"):
        if os.environ.get(name):
            return os.environ[name]
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"
