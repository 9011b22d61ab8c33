"""The evaluation gate: accuracy and macro F1 on the held-out split, against thresholds and the champion."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel
from torch import nn

from mlplat.contracts.training_config import GateConfig

GATE_METRICS = ("accuracy", "macro_f1")


class GateDecision(BaseModel):
    """Whether the candidate may be registered, and why."""

    passed: bool
    reasons: list[str]
    """One line per check; for a rejection, the failing ones first."""
    metrics: dict[str, float]
    champion_metrics: dict[str, float] | None = None
    champion_version: str | None = None

    def render(self) -> str:
        """A readable summary."""
        head = "gate passed" if self.passed else "gate REJECTED the model"
        return "\n".join([head, *(f"  - {reason}" for reason in self.reasons)])


def _set_mode(model: nn.Module, *, training: bool) -> None:
    # A torch.export (pt2) program, e.g. a registered champion, refuses: its mode was fixed (eval) at export.
    with contextlib.suppress(NotImplementedError):
        model.train(training)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: NDArray[Any],
    y: NDArray[Any],
    num_classes: int,
    device: torch.device,
    batch_size: int = 4096,
) -> dict[str, float]:
    """Mean cross-entropy loss, accuracy and macro F1 of ``model`` on ``(x, y)``."""
    was_training = model.training
    _set_mode(model, training=False)
    try:
        features = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
        labels = torch.as_tensor(np.ascontiguousarray(y, dtype=np.int64))
        loss_sum, predictions = 0.0, []
        for xb, yb in zip(features.split(batch_size), labels.split(batch_size), strict=True):
            logits = model(xb.to(device))
            loss_sum += float(nn.functional.cross_entropy(logits, yb.to(device), reduction="sum"))
            predictions.append(logits.argmax(dim=1).cpu())
    finally:
        _set_mode(model, training=was_training)
    predicted = torch.cat(predictions).numpy()
    return {"loss": loss_sum / max(len(labels), 1), **classification_metrics(labels.numpy(), predicted, num_classes)}


def classification_metrics(y_true: NDArray[Any], y_pred: NDArray[Any], num_classes: int) -> dict[str, float]:
    """Accuracy and macro-averaged F1 (every class weighs the same, however rare)."""
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=list(range(num_classes)), average="macro", zero_division=0)),
    }


def decide(
    metrics: dict[str, float],
    config: GateConfig,
    champion_metrics: dict[str, float] | None = None,
    champion_version: str | None = None,
) -> GateDecision:
    """Apply the thresholds, and the champion comparison when configured."""
    failed: list[str] = []
    passed: list[str] = []
    # A model whose metrics are NaN or infinite (a diverged one) is never registered, whatever the thresholds.
    for name, value in metrics.items():
        if not math.isfinite(value):
            failed.append(f"{name} is {value}: not a finite number, the model cannot be trusted")
    thresholds = {"accuracy": config.min_accuracy, "macro_f1": config.min_macro_f1}
    for name in GATE_METRICS:
        value, limit = metrics[name], thresholds[name]
        ok = math.isfinite(value) and value >= limit
        line = f"{name} {value:.4f} {'>=' if ok else '<'} min_{name} {limit:.4f}"
        (passed if ok else failed).append(line)
    if config.must_beat_champion:
        if champion_metrics is None:
            passed.append(f"no model has alias {config.champion_alias!r} yet: nothing to beat")
        else:
            for name in GATE_METRICS:
                value, target = metrics[name], champion_metrics[name] + config.min_improvement
                ok = math.isfinite(value) and value >= target
                line = (
                    f"{name} {value:.4f} {'>=' if ok else '<'} champion v{champion_version}'s "
                    f"{champion_metrics[name]:.4f} + min_improvement {config.min_improvement:.4f}"
                )
                (passed if ok else failed).append(line)
    return GateDecision(
        passed=not failed,
        reasons=failed + passed,
        metrics=metrics,
        champion_metrics=champion_metrics,
        champion_version=champion_version,
    )
