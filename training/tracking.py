"""MLflow tracking for the trainer: one run per training attempt, resumed after a restart.

Only rank 0 tracks (:class:`MlflowTracker`); other ranks get a :class:`NullTracker`. Per-step metrics are
buffered and sent in batches by a background thread, so a slow or absent tracking server does not stall
the training loop: while it is away the metrics stay in the buffer (and travel in checkpoints), and they
are sent when it is back. Every other call is retried with backoff (:mod:`mlplat.training.faults`); an
outage longer than the retry budget sets :attr:`MlflowTracker.fault`, and the loop stops with a checkpoint
and exit 75.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from mlplat.contracts.training_config import TrackingConfig
from mlplat.training.faults import RetryPolicy, TransientFault, is_transient, retry_call

log = logging.getLogger("mlplat.training")
T = TypeVar("T")

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
FLUSH_METRICS = 1000
MAX_BUFFERED_METRICS = 1_000_000
"""Metric values kept while the tracking server is away; beyond this the oldest are dropped (with a warning)."""
PendingMetric = tuple[str, float, int, int]
"""(key, value, timestamp in ms, step): a metric value not yet sent, as it travels in a checkpoint."""


def resolve_tracking_uri(configured: str | None) -> str:
    """The config's URI, else ``MLFLOW_TRACKING_URI``, else a local SQLite file in the working directory."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


class Tracker(Protocol):
    """What the trainer logs to."""

    run_id: str | None

    def start(self, run_id: str | None) -> str | None:
        """Start a new run, or reopen ``run_id`` after a restart; return the run's id."""

    def log_params(self, params: dict[str, str]) -> None:
        """Log parameters (once per run)."""

    def log_metrics(self, metrics: dict[str, float], step: int, wait: bool = False) -> None:
        """Log metrics at ``step`` (asynchronously unless ``wait``)."""

    def set_tags(self, tags: dict[str, str]) -> None:
        """Set run tags."""

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None:
        """Store a JSON or YAML artifact."""

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store a text artifact."""

    def tags(self) -> dict[str, str]:
        """The run's current tags (those set before a restart included)."""

    def end(self, status: str, must_succeed: bool = False) -> None:
        """Flush pending logs and close the run with ``FINISHED``, ``FAILED`` or ``KILLED``.

        Best effort unless ``must_succeed`` (then a tracking outage past the budget raises TransientFault)."""

    @property
    def fault(self) -> TransientFault | None:
        """An outage that outlasted the retry budget, if one did."""

    def unsent_metrics(self) -> list[PendingMetric]:
        """Metric values the server has not confirmed while it is away (saved in checkpoints); else none."""

    def requeue(self, metrics: list[PendingMetric]) -> None:
        """Queue metric values a checkpoint carried over from before a restart."""


class NullTracker:
    """Tracks nothing: what non-zero ranks use."""

    run_id: str | None = None

    def start(self, run_id: str | None) -> str | None:
        """Remember the id only."""
        self.run_id = run_id
        return run_id

    def log_params(self, params: dict[str, str]) -> None:
        """No-op."""

    def log_metrics(self, metrics: dict[str, float], step: int, wait: bool = False) -> None:
        """No-op."""

    def set_tags(self, tags: dict[str, str]) -> None:
        """No-op."""

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None:
        """No-op."""

    def log_text(self, text: str, artifact_file: str) -> None:
        """No-op."""

    def tags(self) -> dict[str, str]:
        """None."""
        return {}

    def end(self, status: str, must_succeed: bool = False) -> None:
        """No-op."""

    @property
    def fault(self) -> TransientFault | None:
        """Never."""
        return None

    def unsent_metrics(self) -> list[PendingMetric]:
        """None."""
        return []

    def requeue(self, metrics: list[PendingMetric]) -> None:
        """No-op."""


class MlflowTracker:
    """Logs to MLflow (any tracking server; SQLite by default), riding out outages within a retry budget."""

    def __init__(self, config: TrackingConfig, retry: RetryPolicy | None = None) -> None:
        self.config = config
        self.retry = retry or RetryPolicy()
        self.tracking_uri = resolve_tracking_uri(config.tracking_uri)
        self.run_id: str | None = None
        self._client: Any = None
        self._buffer: list[Any] = []
        self._flushed_at = 0.0
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics-sender")
        self._inflight: Future[tuple[int, BaseException | None]] | None = None
        self._inflight_batch: list[Any] = []
        self._down_since: float | None = None
        self._next_try = 0.0
        self._failures = 0
        self._dropped = 0
        self._fault: TransientFault | None = None
        self._last_error: BaseException | None = None

    # ---- plumbing -----------------------------------------------------------------------------------
    def _mlflow_client(self) -> Any:
        import mlflow

        if self._client is None:
            self._client = mlflow.MlflowClient(self.tracking_uri)
        return self._client

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return retry_call(fn, f"MLflow at {self.tracking_uri}: {what}", self.retry)
        except TransientFault as fault:
            self._fault = self._fault or fault
            raise

    @property
    def fault(self) -> TransientFault | None:
        """Set once the tracking server has been unreachable for longer than the retry budget."""
        return self._fault

    # ---- the run ------------------------------------------------------------------------------------
    def start(self, run_id: str | None) -> str:
        """Set the tracking URI and experiment, then start (or reopen) the run."""
        import mlflow

        def start() -> str:
            mlflow.set_tracking_uri(self.tracking_uri)
            experiment = mlflow.set_experiment(self.config.experiment)
            if mlflow.active_run() is not None and mlflow.active_run().info.run_id == run_id:  # type: ignore[union-attr]
                return run_id  # type: ignore[return-value]
            run = mlflow.start_run(
                run_id=run_id, experiment_id=experiment.experiment_id, run_name=None if run_id else self.config.run_name
            )
            return str(run.info.run_id)

        self.run_id = self._call("starting the run", start)
        self._flushed_at = time.time()  # the first batch of per-step metrics goes out flush_seconds from now
        return self.run_id

    def log_params(self, params: dict[str, str]) -> None:
        """Log parameters in one batch (MLflow caps values at 6000 characters; ours are short).

        A run reopened from the start of its attempt has them already; a value that changed (the world size
        after a restart on fewer nodes) cannot be logged again and is reported instead.
        """
        import mlflow
        from mlflow.exceptions import MlflowException

        try:
            self._call("logging params", lambda: mlflow.log_params(params, run_id=self.run_id))
        except MlflowException as error:
            log.warning("params not logged again to run %s: %s", self.run_id, str(error).splitlines()[0])

    # ---- metrics ------------------------------------------------------------------------------------
    def log_metrics(self, metrics: dict[str, float], step: int, wait: bool = False) -> None:
        """Buffer metrics and send them in batches from a background thread (``wait``: send all now).

        Each MLflow call has a fixed cost (and on a small machine a background thread competes with the
        training loop for the GIL), so per-step metrics go out as one ``log_batch`` every
        ``tracking.flush_seconds`` or :data:`FLUSH_METRICS` values, whichever comes first. While the server is
        away they stay buffered and sends are retried with backoff; past the budget :attr:`fault` is set (the
        loop then stops with a checkpoint). ``wait`` retries within the budget and raises TransientFault after.
        """
        from mlflow.entities import Metric

        now = time.time()
        self._buffer += [Metric(key, float(value), int(now * 1000), step) for key, value in metrics.items()]
        if len(self._buffer) > MAX_BUFFERED_METRICS:
            drop = len(self._buffer) - MAX_BUFFERED_METRICS
            del self._buffer[:drop]
            self._dropped += drop
            log.warning("tracking server away: dropped the %d oldest buffered metric values", self._dropped)
        if wait:
            self.flush(wait=True)
            return
        away = self._down_since is not None
        if (
            len(self._buffer) >= FLUSH_METRICS
            or now - self._flushed_at >= self.config.flush_seconds
            or (away and time.monotonic() >= self._next_try)
        ):
            self.flush()
        if self._down_since is not None and self._fault is None:
            outage = time.monotonic() - self._down_since
            if outage >= self.retry.budget_seconds:
                self._fault = TransientFault(
                    f"sending metrics to MLflow at {self.tracking_uri}",
                    outage,
                    self._last_error or ConnectionError("unreachable"),
                )
                log.error("%s", self._fault)

    def _send(self, batch: list[Any]) -> tuple[int, BaseException | None]:
        """Send ``batch`` in chunks of 1000; return how many went out and the error that stopped it, if any."""
        sent = 0
        try:
            for start in range(0, len(batch), FLUSH_METRICS):  # MLflow accepts at most 1000 per call
                chunk = batch[start : start + FLUSH_METRICS]
                self._mlflow_client().log_batch(str(self.run_id), metrics=chunk, synchronous=True)
                sent += len(chunk)
        except Exception as error:
            return sent, error
        return sent, None

    def _collect(self, block: bool = False) -> None:
        """Take in the outcome of the batch in flight, if it is done (``block``: wait for it)."""
        if self._inflight is None or (not block and not self._inflight.done()):
            return
        future, batch = self._inflight, self._inflight_batch
        self._inflight, self._inflight_batch = None, []
        sent, error = future.result()
        if error is None:
            self._recovered()
            return
        self._buffer[:0] = batch[sent:]  # unsent values go back to the front, in order
        if not is_transient(error):
            raise error
        self._failed(error)

    def _recovered(self) -> None:
        if self._down_since is not None:
            log.warning(
                "tracking server %s is back after %.0f s; buffered metrics sent",
                self.tracking_uri,
                time.monotonic() - self._down_since,
            )
        self._down_since, self._failures = None, 0

    def _failed(self, error: BaseException) -> None:
        self._last_error = error
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            log.warning(
                "tracking server %s unreachable (%s); buffering metrics for up to %.0f s",
                self.tracking_uri,
                str(error).splitlines()[0][:200] if str(error) else type(error).__name__,
                self.retry.budget_seconds,
            )
        self._next_try = now + self.retry.backoff(self._failures)
        self._failures += 1
        if now - self._down_since >= self.retry.budget_seconds and self._fault is None:
            self._fault = TransientFault(
                f"sending metrics to MLflow at {self.tracking_uri}", now - self._down_since, error
            )
            log.error("%s", self._fault)

    def flush(self, wait: bool = False) -> None:
        """Send the buffered metrics: in the background, or (``wait``) now, retrying within the budget."""
        self._flushed_at = time.time()
        if wait:
            self._collect(block=True)
            while self._buffer:
                batch, self._buffer = self._buffer, []
                sent, error = self._send(batch)
                if error is None:
                    self._recovered()
                    continue
                self._buffer[:0] = batch[sent:]
                if not is_transient(error):
                    raise error
                self._failed(error)
                if self._fault is not None:
                    raise self._fault
                time.sleep(max(self._next_try - time.monotonic(), 0.0))
            return
        self._collect()
        if self._inflight is not None or not self._buffer or time.monotonic() < self._next_try:
            return
        self._inflight_batch, self._buffer = self._buffer, []
        self._inflight = self._sender.submit(self._send, self._inflight_batch)

    def unsent_metrics(self) -> list[PendingMetric]:
        """While the server is away: every value it has not confirmed (they go into the checkpoint)."""
        if self._down_since is None and self._fault is None:
            return []
        return [(m.key, m.value, m.timestamp, m.step) for m in [*self._inflight_batch, *self._buffer]]

    def requeue(self, metrics: list[PendingMetric]) -> None:
        """Queue values a checkpoint carried over; they go out with the next batch."""
        from mlflow.entities import Metric

        self._buffer[:0] = [
            Metric(key, float(value), int(timestamp), int(step)) for key, value, timestamp, step in metrics
        ]
        if metrics:
            log.info(
                "re-sending %d metric values the tracking server had not received before the restart", len(metrics)
            )

    # ---- tags and artifacts -------------------------------------------------------------------------
    def set_tags(self, tags: dict[str, str]) -> None:
        """Set tags on the run."""
        from mlflow.entities import RunTag

        self._call(
            "setting tags",
            lambda: self._mlflow_client().log_batch(
                str(self.run_id), tags=[RunTag(k, str(v)) for k, v in tags.items()]
            ),
        )

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None:
        """Store ``data`` as a JSON/YAML artifact (format from the file's extension)."""
        import mlflow

        self._call(f"storing {artifact_file}", lambda: mlflow.log_dict(data, artifact_file, run_id=self.run_id))

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store a text artifact."""
        import mlflow

        self._call(f"storing {artifact_file}", lambda: mlflow.log_text(text, artifact_file, run_id=self.run_id))

    def tags(self) -> dict[str, str]:
        """Read the run's tags from the tracking store."""
        tags: dict[str, str] = self._call(
            "reading tags", lambda: self._mlflow_client().get_run(str(self.run_id)).data.tags
        )
        return tags

    def end(self, status: str, must_succeed: bool = False) -> None:
        """Flush the buffered metrics, then end the run.

        While the server is away (or past the budget) this is one best-effort try: the metrics it has not
        received are in the checkpoint. Without ``must_succeed`` a failure is logged, not raised, so ending
        a run that failed for another reason never hides that reason.
        """

        try:
            if self.run_id is not None:
                if self._down_since is None and self._fault is None:
                    self.flush(wait=True)
                    self._call("ending the run", lambda: self._mlflow_client().set_terminated(str(self.run_id), status))
                else:
                    self._collect()
                    self._mlflow_client().set_terminated(str(self.run_id), status)
        except Exception as error:
            if must_succeed and isinstance(error, TransientFault):
                raise
            log.warning(
                "could not close MLflow run %s as %s: %s",
                self.run_id,
                status,
                str(error).splitlines()[0] if str(error) else type(error).__name__,
            )
        finally:
            _forget_active_run(status)
            self._sender.shutdown(wait=False)


def _forget_active_run(status: str) -> None:
    """Drop MLflow's active run without another call to the server (the run was closed, or could not be).

    ``mlflow.end_run`` would call the server again, and at exit MLflow ends a run still active, retrying an
    absent server for minutes; the run is closed (or left for the retry to close) through the client.
    """
    import mlflow

    if mlflow.active_run() is None:
        return
    try:
        from mlflow.environment_variables import MLFLOW_RUN_ID
        from mlflow.tracking import fluent

        MLFLOW_RUN_ID.unset()
        fluent._active_run_stack.get().pop()
    except Exception:  # pragma: no cover - MLflow's internals moved: end it the public way
        with contextlib.suppress(Exception):
            mlflow.end_run(status=status)
