"""Run lineage: which training attempt a checkpoint belongs to, and when a run may resume from it.

An **attempt** is one Kubernetes Job run and every retry of its pods (a spot preemption, an eviction, a
node failure). Kubernetes gives all of them the Job's ``controller-uid`` label, which the TrainingJob passes
in as ``MLPLAT_ATTEMPT_ID``; a CronJob's next scheduled run is a new Job, so a new attempt. Without the
variable (a laptop, CI), a run continues the prefix's unfinished attempt when its fingerprint matches and
starts a new one (``local-<time>-<random>``) otherwise.

The checkpoint prefix (``checkpoint.uri``) is one job's lineage. It holds ``attempt.json`` (the current
attempt: id, status ``running``/``finished``/``failed``, fingerprint, MLflow run id) and that attempt's
``ckpt-<step>.{pt,json}``; every manifest names its attempt. Starting a new attempt first commits a new
``attempt.json``, then deletes the previous attempt's checkpoints, so a new attempt never resumes old weights
and a crash in between leaves nothing a later run could mistake for its own.

The **fingerprint** is what determines the trained weights: the config's (seed, epochs, batch size, data,
model, optimizer, schedule), the SHA-256 of the data as loaded (every split's bytes, shapes and dtypes) and
the model's architecture (module type, parameter and buffer names, shapes and dtypes). Within an attempt a
different fingerprint is an error (:class:`LineageMismatch`, exit 78), never a silent resume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from mlplat.contracts.training_config import ConfigError
from mlplat.contracts.training_env import ATTEMPT_ENV, JOB_NAME_ENV
from mlplat.training.faults import RetryPolicy, retry_call
from mlplat.training.storage import ByteStore, ObjectMissing

log = logging.getLogger("mlplat.training")

RECORD_NAME = "attempt.json"
RECORD_FORMAT = 1
Status = Literal["running", "finished", "failed"]


@dataclass(frozen=True)
class Fingerprint:
    """What determines the trained weights."""

    config: str
    data: str
    model: str

    def differences(self, other: Fingerprint) -> list[str]:
        """Readable lines naming each part of ``other`` (now) that differs from ``self`` (recorded)."""
        labels = {"config": "config", "data": "data (SHA-256 of what was loaded)", "model": "model architecture"}
        return [
            f"{labels[name]}: {getattr(self, name)[:16]} then, {getattr(other, name)[:16]} now"
            for name in ("config", "data", "model")
            if getattr(self, name) != getattr(other, name)
        ]


@dataclass(frozen=True)
class AttemptRecord:
    """The content of ``attempt.json``."""

    attempt: str
    status: Status
    fingerprint: Fingerprint
    explicit: bool
    """Whether the id came from the scheduler (``MLPLAT_ATTEMPT_ID``) rather than being made up locally."""
    started_at: float
    updated_at: float
    mlflow_run_id: str | None = None
    job_name: str | None = None
    outcome: str | None = None

    def to_json(self) -> bytes:
        """The record as ``attempt.json`` stores it."""
        return json.dumps({"format": RECORD_FORMAT, **asdict(self)}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> AttemptRecord:
        """Parse ``attempt.json``; raise ValueError when it is not a record this trainer understands."""
        raw = json.loads(data)
        if not isinstance(raw, dict) or raw.pop("format", None) != RECORD_FORMAT:
            raise ValueError("not an attempt record of format 1")
        raw["fingerprint"] = Fingerprint(**raw["fingerprint"])
        return cls(**raw)


class LineageMismatch(ConfigError):
    """A retry of an attempt runs a different config, data or model than the attempt started with."""


@dataclass(frozen=True)
class AttemptPlan:
    """What this run does with the lineage: continue an attempt or start a new one."""

    attempt: str
    resume: bool
    """Continue ``attempt`` (its newest valid checkpoint, its MLflow run)."""
    record: AttemptRecord
    reason: str
    retired: str | None = None
    """The previous attempt whose checkpoints a new attempt replaces."""
    notes: list[str] = field(default_factory=list)


def model_fingerprint(model: Any) -> str:
    """SHA-256 of a module's architecture: its type and every parameter's and buffer's name, shape and dtype."""
    parts = [f"{type(model).__module__}.{type(model).__qualname__}"]
    parts += [f"{name}:{tuple(tensor.shape)}:{tensor.dtype}" for name, tensor in model.state_dict().items()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def new_attempt_id() -> str:
    """A locally made attempt id (no scheduler gave one): sortable by time, unique by a random suffix."""
    return f"local-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"


def read_record(store: ByteStore, policy: RetryPolicy) -> AttemptRecord | None:
    """The prefix's ``attempt.json``; None when there is none or it cannot be read (logged)."""
    try:
        data = retry_call(lambda: store.get(RECORD_NAME), f"reading {store.uri}/{RECORD_NAME}", policy)
    except ObjectMissing:
        return None
    try:
        return AttemptRecord.from_json(data)
    except (ValueError, TypeError, KeyError) as error:
        log.error(
            "%s/%s is unreadable (%s): its checkpoints cannot be trusted; starting a new attempt",
            store.uri,
            RECORD_NAME,
            error,
        )
        return None


def write_record(store: ByteStore, record: AttemptRecord, policy: RetryPolicy) -> AttemptRecord:
    """Commit ``record`` as the prefix's ``attempt.json`` (atomic in both stores); return it."""
    record = replace(record, updated_at=time.time())
    retry_call(lambda: store.put(RECORD_NAME, record.to_json()), f"writing {store.uri}/{RECORD_NAME}", policy)
    return record


def plan_attempt(
    record: AttemptRecord | None,
    fingerprint: Fingerprint,
    *,
    uri: str,
    resume: bool = True,
    requested: str | None = None,
    job_name: str | None = None,
) -> AttemptPlan:
    """Decide whether this run continues ``record``'s attempt or starts a new one.

    ``requested`` is the scheduler's attempt id (``MLPLAT_ATTEMPT_ID``; read from the environment when
    None). Raise :class:`LineageMismatch` when it names the recorded attempt but the fingerprint differs.
    """
    if requested is None:
        requested = os.environ.get(ATTEMPT_ENV) or None
    if job_name is None:
        job_name = os.environ.get(JOB_NAME_ENV) or None
    now = time.time()

    def fresh(reason: str) -> AttemptPlan:
        attempt = requested or new_attempt_id()
        new = AttemptRecord(
            attempt=attempt,
            status="running",
            fingerprint=fingerprint,
            explicit=bool(requested),
            started_at=now,
            updated_at=now,
            job_name=job_name,
        )
        retired = record.attempt if record is not None and record.attempt != attempt else None
        return AttemptPlan(attempt=attempt, resume=False, record=new, reason=reason, retired=retired)

    if record is None:
        return fresh(f"no attempt recorded in {uri}")
    if not resume:
        return fresh("checkpoint.resume is false")
    if requested is not None:
        if requested != record.attempt:
            return fresh(f"attempt {requested} is new (the last one in {uri} was {record.attempt}, {record.status})")
        differences = record.fingerprint.differences(fingerprint)
        if differences:
            raise LineageMismatch(
                f"{uri}/{RECORD_NAME}",
                [f"attempt {requested} was started with a different {d}" for d in differences]
                + [
                    "a retry of a Job must train what its first pod trained; run a new Job (a new attempt) to "
                    "train the changed config, data or model"
                ],
            )
        return AttemptPlan(
            attempt=record.attempt,
            resume=True,
            record=record,
            reason=f"continuing attempt {record.attempt} ({record.status})",
        )
    if record.status != "running":
        return fresh(f"the last attempt in {uri}, {record.attempt}, is {record.status}")
    differences = record.fingerprint.differences(fingerprint)
    if differences:
        plan = fresh(f"the unfinished attempt {record.attempt} in {uri} trained something else")
        plan.notes.extend(differences)
        return plan
    return AttemptPlan(
        attempt=record.attempt, resume=True, record=record, reason=f"continuing the unfinished attempt {record.attempt}"
    )
