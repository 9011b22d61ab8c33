"""Training data: the built-in digits task and the extension point for a team's own data.

Data is held in memory as numpy arrays split into train / validation / test. A custom source is an
import path ``package.module:build``: ``build(**options)`` returns ``(x, y)`` (split here, stratified and
seeded) or a ready :class:`DataSplits`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mlplat.contracts.training_config import ConfigError, DataConfig, load_callable


@dataclass(frozen=True)
class DataSplits:
    """Features ``x_*`` ([rows, features]) and integer labels ``y_*`` ([rows]) for each split."""

    x_train: NDArray[Any]
    y_train: NDArray[Any]
    x_val: NDArray[Any]
    y_val: NDArray[Any]
    x_test: NDArray[Any]
    y_test: NDArray[Any]
    num_classes: int | None = None
    """Number of classes; unset: inferred as the largest training label + 1."""
    name: str = "custom"
    feature_names: tuple[str, ...] | None = None
    """Column names (used in the drift statistics served with the model); unset: ``feature_<i>``."""

    def splits(self) -> dict[str, tuple[NDArray[Any], NDArray[Any]]]:
        """The three splits by name, in a fixed order."""
        return {
            "train": (self.x_train, self.y_train),
            "val": (self.x_val, self.y_val),
            "test": (self.x_test, self.y_test),
        }

    @property
    def classes(self) -> int:
        """Number of classes (declared, or inferred from the training labels)."""
        if self.num_classes is not None:
            return self.num_classes
        return int(np.max(self.y_train)) + 1 if len(self.y_train) else 0

    def as_float32(self) -> DataSplits:
        """The same splits with float32 features and int64 labels, as the model consumes them."""
        return DataSplits(
            x_train=np.ascontiguousarray(self.x_train, dtype=np.float32),
            y_train=np.ascontiguousarray(self.y_train, dtype=np.int64),
            x_val=np.ascontiguousarray(self.x_val, dtype=np.float32),
            y_val=np.ascontiguousarray(self.y_val, dtype=np.int64),
            x_test=np.ascontiguousarray(self.x_test, dtype=np.float32),
            y_test=np.ascontiguousarray(self.y_test, dtype=np.int64),
            num_classes=self.classes,
            name=self.name,
            feature_names=self.feature_names,
        )

    def fingerprint(self) -> str:
        """SHA-256 over every split's shape, dtype and bytes: the data hash logged with each run."""
        digest = hashlib.sha256()
        for split, (x, y) in self.splits().items():
            for label, array in (("x", x), ("y", y)):
                array = np.ascontiguousarray(array)
                digest.update(f"{split}.{label}:{array.dtype.str}:{array.shape}".encode())
                digest.update(array.tobytes())
        return digest.hexdigest()


def split_arrays(
    x: NDArray[Any], y: NDArray[Any], val_fraction: float, test_fraction: float, seed: int, name: str
) -> DataSplits:
    """Split ``(x, y)`` into train / val / test, stratified by label when every class has 2+ rows."""
    from sklearn.model_selection import train_test_split

    def stratify(labels: NDArray[Any]) -> NDArray[Any] | None:
        """Stratify by label only when every class can appear on both sides of the split."""
        counts = np.unique(labels, return_counts=True)[1]
        return labels if counts.min(initial=0) >= 2 else None

    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=stratify(y)
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest,
        y_rest,
        test_size=val_fraction / (1.0 - test_fraction),
        random_state=seed,
        stratify=stratify(y_rest),
    )
    return DataSplits(x_train, y_train, x_val, y_val, x_test, y_test, name=name)


def _digits() -> tuple[NDArray[Any], NDArray[Any], tuple[str, ...]]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel intensities are 0..16; scale to [0, 1] so the default learning rate suits them.
    return (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64), tuple(bunch.feature_names)


def load_data(config: DataConfig, seed: int) -> DataSplits:
    """Build the splits named by ``config.source`` (the split is seeded, so every rank gets the same)."""
    if config.source == "digits":
        x, y, names = _digits()
        splits = split_arrays(x, y, config.val_fraction, config.test_fraction, seed, "digits")
        return dataclasses.replace(splits, num_classes=10, feature_names=names)
    build = load_callable(config.source, "data.source")
    try:
        built = build(**config.options)
    except TypeError as error:
        raise ConfigError("data.options", [f"data.options: {config.source} rejected them: {error}"]) from None
    if isinstance(built, DataSplits):
        return built
    if isinstance(built, tuple) and len(built) == 2:
        from mlplat.training.validation import DataValidationError, validate_unsplit

        x, y = (np.asarray(part) for part in built)
        report = validate_unsplit(x, y, config.source)
        if not report.passed:
            raise DataValidationError(report)
        return split_arrays(x, y, config.val_fraction, config.test_fraction, seed, config.source)
    raise ConfigError(
        "data.source",
        [f"data.source: {config.source} returned {type(built).__name__}; expected (x, y) or DataSplits"],
    )
