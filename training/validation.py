"""Data validation before training: shapes, dtypes, NaN/inf, label range, class balance, leakage.

:func:`validate_data` returns a :class:`ValidationReport` with one entry per check; the trainer logs it to
MLflow and stops with :class:`DataValidationError` (its message is the rendered report) when any fails.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel

from mlplat.contracts.training_config import DataValidationConfig
from mlplat.training.data import DataSplits


class CheckResult(BaseModel):
    """The outcome of one check."""

    name: str
    passed: bool
    detail: str


class ValidationReport(BaseModel):
    """All checks run on one data set."""

    dataset: str
    checks: list[CheckResult]

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return all(check.passed for check in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        """The checks that failed."""
        return [check for check in self.checks if not check.passed]

    def render(self) -> str:
        """A readable multi-line report, failures first."""
        verdict = "passed" if self.passed else f"FAILED ({len(self.failures)} of {len(self.checks)} checks)"
        lines = [f"data validation of {self.dataset!r}: {verdict}"]
        for check in sorted(self.checks, key=lambda c: c.passed):
            lines.append(f"  [{'ok' if check.passed else 'FAIL'}] {check.name}: {check.detail}")
        return "\n".join(lines)


class DataValidationError(ValueError):
    """The data failed validation; :attr:`report` says which checks and why."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        super().__init__(report.render())


def _shapes(splits: dict[str, tuple[NDArray[Any], NDArray[Any]]]) -> CheckResult:
    problems = []
    features = set()
    for name, (x, y) in splits.items():
        if x.ndim != 2:
            problems.append(f"{name}: x must be 2-D [rows, features], got shape {x.shape}")
        else:
            features.add(x.shape[1])
        if y.ndim != 1:
            problems.append(f"{name}: y must be 1-D [rows], got shape {y.shape}")
        if len(x) != len(y):
            problems.append(f"{name}: x has {len(x)} rows but y has {len(y)}")
        if len(x) == 0:
            problems.append(f"{name}: split is empty")
    if len(features) > 1:
        problems.append(f"feature counts differ between splits: {sorted(features)}")
    if problems:
        return CheckResult(name="shapes", passed=False, detail="; ".join(problems))
    sizes = ", ".join(f"{n}={len(x)}" for n, (x, _) in splits.items())
    return CheckResult(name="shapes", passed=True, detail=f"{features.pop()} features; rows {sizes}")


def _dtypes(splits: dict[str, tuple[NDArray[Any], NDArray[Any]]]) -> CheckResult:
    problems = []
    for name, (x, y) in splits.items():
        if x.dtype.kind not in "fiu":
            problems.append(f"{name}: x must be numeric (float or int), got {x.dtype}")
        if y.dtype.kind not in "iu":
            problems.append(f"{name}: y must hold integer class labels, got {y.dtype}")
    if problems:
        return CheckResult(name="dtypes", passed=False, detail="; ".join(problems))
    return CheckResult(name="dtypes", passed=True, detail="numeric features, integer labels")


def _finite(splits: dict[str, tuple[NDArray[Any], NDArray[Any]]]) -> CheckResult:
    problems = []
    for name, (x, _) in splits.items():
        if x.dtype.kind == "f":
            nan, inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
            if nan or inf:
                rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
                problems.append(f"{name}: {nan} NaN and {inf} inf values (first rows: {rows[:5].tolist()})")
    if problems:
        return CheckResult(name="finite", passed=False, detail="; ".join(problems))
    return CheckResult(name="finite", passed=True, detail="no NaN or inf")


def _label_range(splits: dict[str, tuple[NDArray[Any], NDArray[Any]]], classes: int) -> CheckResult:
    if classes < 2:
        return CheckResult(name="label_range", passed=False, detail=f"need at least 2 classes, got {classes}")
    problems = []
    for name, (_, y) in splits.items():
        bad = (y < 0) | (y >= classes)
        if bad.any():
            values = np.unique(y[bad])[:5].tolist()
            problems.append(f"{name}: {int(bad.sum())} labels outside [0, {classes}) e.g. {values}")
    if problems:
        return CheckResult(name="label_range", passed=False, detail="; ".join(problems))
    return CheckResult(name="label_range", passed=True, detail=f"labels in [0, {classes})")


def _class_balance(y_train: NDArray[Any], classes: int, max_ratio: float) -> CheckResult:
    counts = np.bincount(y_train[(y_train >= 0) & (y_train < classes)], minlength=classes)
    missing = np.flatnonzero(counts == 0).tolist()
    if missing:
        return CheckResult(name="class_balance", passed=False, detail=f"classes {missing} have no training rows")
    ratio = float(counts.max() / counts.min())
    detail = (
        f"largest/smallest class = {counts.max()}/{counts.min()} = {ratio:.2f} "
        f"(limit {max_ratio:g}; smallest is class {int(counts.argmin())})"
    )
    return CheckResult(name="class_balance", passed=ratio <= max_ratio, detail=detail)


def _row_keys(x: NDArray[Any]) -> set[bytes]:
    rows = np.ascontiguousarray(x, dtype=np.float64)
    return {row.tobytes() for row in rows}


def _duplicates(data: DataSplits, allowed: int) -> CheckResult:
    train = _row_keys(data.x_train)
    overlaps = {name: len(train & _row_keys(x)) for name, x in (("val", data.x_val), ("test", data.x_test))}
    total = sum(overlaps.values())
    detail = (
        f"{overlaps['val']} rows shared by train and val, {overlaps['test']} by train and test "
        f"(allowed {allowed}): identical rows across splits leak labels and inflate the metrics"
        if total
        else "no rows shared between train and val/test"
    )
    return CheckResult(name="duplicates", passed=total <= allowed, detail=detail)


def validate_data(data: DataSplits, config: DataValidationConfig) -> ValidationReport:
    """Run every check (those needing sane shapes and dtypes run only once those pass)."""
    splits = {name: (np.asarray(x), np.asarray(y)) for name, (x, y) in data.splits().items()}
    checks = [_shapes(splits), _dtypes(splits)]
    if all(check.passed for check in checks):
        classes = data.classes
        checks += [
            _finite(splits),
            _label_range(splits, classes),
            _class_balance(splits["train"][1], classes, config.max_class_imbalance),
            _duplicates(data, config.max_duplicate_rows),
        ]
    return ValidationReport(dataset=data.name, checks=checks)


def validate_unsplit(x: NDArray[Any], y: NDArray[Any], dataset: str) -> ValidationReport:
    """Check that ``(x, y)`` from a custom builder can be split at all (2-D x, 1-D y, same rows)."""
    return ValidationReport(dataset=dataset, checks=[_shapes({"all": (x, y)}), _dtypes({"all": (x, y)})])
