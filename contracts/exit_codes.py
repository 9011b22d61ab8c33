"""Process exit codes of the trainer, shared with the Kubernetes `TrainingJob` component.

The TrainingJob's `podFailurePolicy` retries a pod on exactly :data:`EXIT_PREEMPTED` and fails fast on
every other non-zero code, so the codes here are part of the platform's contract: change them only
together with that component. They follow BSD `sysexits.h` where a matching code exists.
"""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0
"""Training finished; the model passed the gate (and was registered, if a registry name is set)."""

EXIT_GATE_REJECTED: Final = 3
"""Training finished but the evaluation gate rejected the model; nothing was registered."""

EXIT_DIVERGED: Final = 4
"""Training stopped because the loss became NaN or infinite; nothing was registered. Not retried: the same
config diverges again (lower the learning rate, clip gradients, check the data)."""

EXIT_DATA_INVALID: Final = 65
"""Data validation failed before training (sysexits `EX_DATAERR`); the report names each failed check."""

EXIT_PREEMPTED: Final = 75
"""SIGTERM (spot interruption), or a transient fault (tracking server, checkpoint store) that outlasted its
retry budget: the current step finished and a checkpoint was written (sysexits `EX_TEMPFAIL`, "try again
later"). A retried pod of the same Job resumes from that checkpoint."""

EXIT_CONFIG_INVALID: Final = 78
"""The config file is missing or invalid (sysexits `EX_CONFIG`); the message names the field. Also: a retry
of a training attempt whose config, data or model differs from what the attempt started with."""

RETRYABLE_EXIT_CODES: Final = frozenset({EXIT_PREEMPTED})
"""Exit codes a scheduler should retry; everything else non-zero is a permanent failure."""
