"""mlplat.training: the torch trainer with MLflow tracking and spot-safe checkpoints.

The exit codes are re-exported here for the trainer's callers; their home is :mod:`mlplat.contracts.exit_codes`
(the Pulumi components read them from there, never from this package). The trainer itself is
:func:`mlplat.training.trainer.train`; the CLI is ``mlplat train``.
"""

from __future__ import annotations

from mlplat.contracts.exit_codes import (
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
