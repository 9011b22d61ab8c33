"""Transient faults (a tracking server or checkpoint store that is briefly away): retry with backoff, in a budget.

A call that fails with a transient error (connection refused or reset, a timeout, HTTP 5xx or throttling,
MLflow's "API request ... failed with exception") is retried with exponential backoff and full jitter
until :attr:`RetryPolicy.budget_seconds` have passed since the first failure; then :class:`TransientFault`
is raised, which the trainer turns into a final checkpoint and exit 75 (the Job's failure policy retries
it, and the retried pod resumes). Anything else (a permission error, a bad request, a bug) is permanent and
raised at once: it will not fix itself, and retrying it forever would only hide it.
"""

from __future__ import annotations

import logging
import random
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger("mlplat.training")
T = TypeVar("T")

# Not INTERNAL_ERROR: it is MlflowException's default, bugs included; a 5xx response is recognised by its message.
_MLFLOW_TRANSIENT_CODES = frozenset({"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"})
_HTTP_5XX = re.compile(r"failed with error code 50[0234]\b|too many 50[0234] error responses")
_S3_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "500",
        "502",
        "503",
        "504",
    }
)


class TransientFault(Exception):
    """A transient error outlasted its retry budget; :attr:`what` names the operation."""

    def __init__(self, what: str, seconds: float, cause: BaseException) -> None:
        self.what = what
        self.seconds = seconds
        self.cause = cause
        super().__init__(
            f"{what} kept failing for {seconds:.1f} s ({type(cause).__name__}: "
            f"{_first_line(cause)}); giving up for now, retry to resume"
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often to retry a transient fault."""

    budget_seconds: float = 600.0
    initial_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 30.0

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff for retry number ``attempt`` (0-based)."""
        ceiling = min(self.max_backoff_seconds, self.initial_backoff_seconds * 2 ** min(attempt, 30))
        return random.SystemRandom().uniform(ceiling / 2, ceiling)  # not the training RNGs: resume stays exact


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` may go away by itself (network, timeouts, 5xx, throttling)."""
    # An MlflowException exists only once MLflow is imported: no import here (a run without MLflow, such as
    # checkpoint I/O on a GPU box that has only torch, must not need it).
    mlflow_exceptions = sys.modules.get("mlflow.exceptions")
    if mlflow_exceptions is not None and isinstance(error, mlflow_exceptions.MlflowException):
        message = str(error)
        code = str(getattr(error, "error_code", ""))
        return (
            code in _MLFLOW_TRANSIENT_CODES
            or bool(_HTTP_5XX.search(message))
            or (
                message.startswith("API request to")
                and ("failed with exception" in message or "failed with timeout exception" in message)
            )
        )
    try:
        from botocore.exceptions import BotoCoreError, ClientError
        from botocore.exceptions import ConnectionError as BotoConnectionError
    except ImportError:  # pragma: no cover - boto3 is a dependency
        pass
    else:
        if isinstance(error, ClientError):
            return str(error.response.get("Error", {}).get("Code", "")) in _S3_TRANSIENT_CODES
        if isinstance(error, BotoConnectionError):
            return True
        if isinstance(error, BotoCoreError):
            return "timeout" in type(error).__name__.lower()
    try:
        import requests
    except ImportError:  # pragma: no cover
        pass
    else:
        if isinstance(error, requests.exceptions.HTTPError):
            status = error.response.status_code if error.response is not None else 0
            return status >= 500 or status == 429
        if isinstance(error, requests.RequestException):
            return True
    # ConnectionError, TimeoutError and the like; also a full or flaky local disk.
    return isinstance(error, OSError) and not isinstance(error, FileNotFoundError | PermissionError)


def retry_call(fn: Callable[[], T], what: str, policy: RetryPolicy, sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``fn``; retry transient errors with backoff until the budget is spent, then raise TransientFault."""
    first_failure: float | None = None
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as error:
            if not is_transient(error):
                raise
            now = time.monotonic()
            first_failure = now if first_failure is None else first_failure
            spent = now - first_failure
            if spent >= policy.budget_seconds:
                raise TransientFault(what, spent, error) from error
            delay = min(policy.backoff(attempt), max(policy.budget_seconds - spent, 0.0))
            log.warning(
                "%s failed (%s: %s); retry %d in %.1f s (%.1f of %.1f s budget spent)",
                what,
                type(error).__name__,
                _first_line(error),
                attempt + 1,
                delay,
                spent,
                policy.budget_seconds,
            )
            attempt += 1
            sleep(delay)
