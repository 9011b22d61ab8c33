"""Custom data and model builders, referenced from test configs as ``support.training_builders:<function>``.

They stand for a team's own ``package.module:build`` and produce deliberately broken data sets.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from torch import nn


def _blobs(rows: int = 300, classes: int = 3, features: int = 4, seed: int = 0) -> tuple[NDArray[Any], NDArray[Any]]:
    rng = np.random.default_rng(seed)
    y = np.arange(rows) % classes
    x = rng.normal(size=(rows, features)) + y[:, None] * 3.0
    return x.astype(np.float32), y.astype(np.int64)


def blobs(rows: int = 300) -> tuple[NDArray[Any], NDArray[Any]]:
    """Three well-separated Gaussian blobs: valid data."""
    return _blobs(rows)


def with_nan() -> tuple[NDArray[Any], NDArray[Any]]:
    """Valid blobs with NaN and inf in a few cells."""
    x, y = _blobs()
    x[7, 1] = np.nan
    x[11, 0] = np.inf
    return x, y


def labels_out_of_range() -> Any:
    """Blobs whose declared 3 classes are contradicted by labels 5 and -1 in the test split."""
    from mlplat.training.data import DataSplits

    x, y = _blobs()
    y_test = y[250:].copy()
    y_test[:2] = [5, -1]
    return DataSplits(x[:200], y[:200], x[200:250], y[200:250], x[250:], y_test, num_classes=3, name="bad-labels")


def leaky_splits() -> Any:
    """Validation rows copied from the training split."""
    from mlplat.training.data import DataSplits

    x, y = _blobs()
    x_val, y_val = x[:40].copy(), y[:40].copy()
    return DataSplits(x[:200], y[:200], x_val, y_val, x[250:], y[250:], name="leaky")


def imbalanced() -> tuple[NDArray[Any], NDArray[Any]]:
    """Class 2 is 30 times rarer than class 0."""
    rng = np.random.default_rng(1)
    y = np.array([0] * 600 + [1] * 300 + [2] * 20)
    return (rng.normal(size=(len(y), 4)) + y[:, None]).astype(np.float32), y


def wrong_shapes() -> tuple[NDArray[Any], NDArray[Any]]:
    """1-D features and one label short."""
    return np.zeros(100, dtype=np.float32), np.zeros(99, dtype=np.int64)


def float_labels() -> tuple[NDArray[Any], NDArray[Any]]:
    """Labels stored as floats."""
    x, y = _blobs()
    return x, y.astype(np.float32)


def tiny_linear(input_dim: int, num_classes: int, scale: float = 1.0) -> nn.Module:
    """A team's own model: a single linear layer."""
    layer = nn.Linear(input_dim, num_classes)
    with_scale = nn.Sequential(layer)
    with_scale[0].weight.data.mul_(scale)
    return with_scale


class _DataDependent(nn.Module):
    """Branches in Python on a tensor's value, which torch.export cannot trace."""

    def __init__(self, input_dim: int, num_classes: int) -> None:
        super().__init__()
        self.small = nn.Linear(input_dim, num_classes)
        self.large = nn.Linear(input_dim, num_classes)

    def forward(self, x: Any) -> Any:
        if x.sum() > 0:
            return self.large(x)
        return self.small(x)


def data_dependent(input_dim: int, num_classes: int) -> nn.Module:
    """A team's model that only registers as a pickle."""
    return _DataDependent(input_dim, num_classes)


def from_file(path: str) -> tuple[NDArray[Any], NDArray[Any]]:
    """A team's data read from a file whose contents change between runs (same config, new data)."""
    loaded = np.load(path)
    return loaded["x"], loaded["y"]


def write_blobs(path: Any, rows: int = 300, seed: int = 0) -> None:
    """Write blobs for :func:`from_file`."""
    x, y = _blobs(rows, seed=seed)
    np.savez(path, x=x, y=y)


def width_from_env(input_dim: int, num_classes: int) -> nn.Module:
    """A team's model whose architecture changed in code (a new image) while the config stayed the same."""
    import os

    width = int(os.environ.get("TEST_MODEL_WIDTH", "8"))
    return nn.Sequential(nn.Linear(input_dim, width), nn.ReLU(), nn.Linear(width, num_classes))


def exploding(input_dim: int, num_classes: int) -> nn.Module:
    """A model whose logits overflow float32 at once: the loss is NaN from the first step."""
    layer = nn.Linear(input_dim, num_classes)
    layer.weight.data.fill_(3e38)
    return nn.Sequential(layer)
