"""The environment a TrainingJob's pods give the trainer, beyond its config file."""

from __future__ import annotations

from typing import Final

ATTEMPT_ENV: Final = "MLPLAT_ATTEMPT_ID"
"""The attempt id: the TrainingJob sets it from the pod's ``batch.kubernetes.io/controller-uid`` label, so retries
of one Job run share it (they resume one attempt) and a new run starts a new one."""

JOB_NAME_ENV: Final = "MLPLAT_JOB_NAME"
"""The Job's name (``batch.kubernetes.io/job-name``), logged as a tag for people; the id decides."""
