"""Waiting for the model: the retry schedule, what the server reports while it waits, and the loader thread.

On a first deploy the server is started before its model exists (nothing registered under
``models:/digits@champion`` yet, MLflow perhaps not up either). The server then starts unready and retries the
load in the background (:meth:`mlplat.serving.app.ServingApp.load_until_ready`) on the schedule of
:func:`backoff_delay`; :class:`LoadStatus` is what readiness, inference refusals and the logs say about it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from mlplat.serving.model import ModelLoadError, ModelRefused
from mlplat.serving.redaction import redact

T = TypeVar("T")
Outcome = Literal["success", "unavailable", "refused", "error"]
RETRY_AFTER_MAX_S = 60  # the Retry-After hint given while waiting: the time to the next attempt, at most this


def backoff_delay(
    failures: int, initial: float, maximum: float, jitter: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after the `failures`-th failed attempt in a row (1, 2, ...).

    Exponential (`initial`, then twice as long each time), capped at `maximum`, then shortened by a random
    fraction of up to `jitter` of itself, so replicas started together do not hit MLflow in lockstep; the result
    always lies in ``[(1 - jitter) * base, base]`` with ``base = min(maximum, initial * 2 ** (failures - 1))``.
    """
    base = min(maximum, initial * 2.0 ** min(max(failures, 1) - 1, 64))
    return base * (1.0 - jitter * rand())


def classify(error: BaseException) -> Outcome:
    """The `outcome` label of a failed attempt."""
    if isinstance(error, ModelRefused):
        return "refused"
    if isinstance(error, ModelLoadError):
        return "unavailable"
    return "error"


def describe(error: BaseException) -> str:
    """Why an attempt failed, in one line, credentials removed."""
    text = str(error) if isinstance(error, ModelLoadError) else f"{type(error).__name__}: {error}"
    return redact(" ".join(text.split()))


@dataclass
class LoadStatus:
    """Where the background load stands; every text in it is already redacted."""

    uri: str
    tracking_uri: str | None = None
    attempts: int = 0
    loading: bool = False
    outcome: Outcome | None = None
    error: str | None = None
    next_attempt_at: float | None = None  # time.monotonic()

    def next_attempt_in(self) -> float | None:
        """Seconds until the next attempt starts (None while one runs or when none is planned)."""
        if self.next_attempt_at is None:
            return None
        return max(0.0, self.next_attempt_at - time.monotonic())

    def retry_after(self) -> int:
        """Retry-After for refused requests: whole seconds to the next attempt, 1 to RETRY_AFTER_MAX_S."""
        wait = self.next_attempt_in()
        return 1 if wait is None else min(RETRY_AFTER_MAX_S, max(1, math.ceil(wait)))

    def reason(self) -> str:
        """One sentence: what the server waits for and why."""
        if self.error is None:
            return f"loading the model from {self.uri} (attempt {max(self.attempts, 1)})"
        what = "was refused" if self.outcome == "refused" else "could not be loaded"
        return f"waiting for the model {self.uri}: it {what} ({self.attempts} attempts so far): {self.error}"

    def body(self) -> dict[str, Any]:
        """The readiness answer's fields (besides `ready`)."""
        body: dict[str, Any] = {"reason": self.reason(), "waiting_for": self.uri, "attempts": self.attempts}
        if self.tracking_uri:
            body["tracking_uri"] = self.tracking_uri
        if self.error is not None:
            body["last_error"] = self.error
            body["refused"] = self.outcome == "refused"
        wait = self.next_attempt_in()
        if wait is not None:
            body["next_attempt_in_s"] = round(wait, 3)
        return body


def in_daemon_thread(function: Callable[[], T]) -> asyncio.Future[T]:
    """Run `function` in a new daemon thread; the future completes with its result on the running loop.

    Not `asyncio.to_thread`: its executor's threads are joined when the interpreter exits, so a load stuck on
    an unanswering MLflow would hold the process long after SIGTERM. A daemon thread ends with the process;
    cancelling the future abandons the thread's result.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        try:
            result, error = function(), None
        except BaseException as exc:
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # RuntimeError: the loop is closed, nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=target, name="mlplat-model-load", daemon=True).start()
    return future
