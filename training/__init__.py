"""mlplat.training: the torch trainer with MLflow tracking and spot-safe checkpoints.

This module stays light (no torch, no mlflow) so that the Pulumi components can import the exit-code
contract, e.g. ``from mlplat.training import EXIT_PREEMPTED`` for the TrainingJob's podFailurePolicy.
The trainer itself is :func:`mlplat.training.trainer.train`; the CLI is ``mlplat train``.
"""

from __future__ import annotations

from mlplat.training.exit_codes import (
    EXIT_CONFIG_INVALID,
    EXIT_DATA_INVALID,
    EXIT_DIVERGED,
    EXIT_GATE_REJECTED,
    EXIT_OK,
    EXIT_PREEMPTED,
    RETRYABLE_EXIT_CODES,
)

__all__ = [
    "EXIT_CONFIG_INVALID",
    "EXIT_DATA_INVALID",
    "EXIT_DIVERGED",
    "EXIT_GATE_REJECTED",
    "EXIT_OK",
    "EXIT_PREEMPTED",
    "RETRYABLE_EXIT_CODES",
]
