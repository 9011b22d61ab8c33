"""MLflow tracking for the trainer: one run per training job, resumed after a restart.

Only rank 0 tracks (:class:`MlflowTracker`); other ranks get a :class:`NullTracker`. Per-step metrics go
through MLflow's asynchronous logging so a slow tracking server does not stall the training loop.
"""

from __future__ import annotations

import os
import time
from typing import Any, Protocol

from mlplat.training.config import TrackingConfig

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
FLUSH_SECONDS = 5.0
FLUSH_METRICS = 1000


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

    def end(self, status: str) -> None:
        """Flush pending logs and close the run with ``FINISHED``, ``FAILED`` or ``KILLED``."""


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

    def end(self, status: str) -> None:
        """No-op."""


class MlflowTracker:
    """Logs to MLflow (any tracking server; SQLite by default)."""

    def __init__(self, config: TrackingConfig) -> None:
        self.config = config
        self.tracking_uri = resolve_tracking_uri(config.tracking_uri)
        self.run_id: str | None = None
        self._client: Any = None
        self._buffer: list[Any] = []
        self._flushed_at = 0.0

    def start(self, run_id: str | None) -> str:
        """Set the tracking URI and experiment, then start (or reopen) the run."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        experiment = mlflow.set_experiment(self.config.experiment)
        run = mlflow.start_run(run_id=run_id, experiment_id=experiment.experiment_id,
                               run_name=None if run_id else self.config.run_name)
        self.run_id = run.info.run_id
        self._flushed_at = time.time()  # the first batch of per-step metrics goes out FLUSH_SECONDS from now
        return self.run_id

    def log_params(self, params: dict[str, str]) -> None:
        """Log parameters in one batch (MLflow caps values at 6000 characters; ours are short)."""
        import mlflow

        mlflow.log_params(params, run_id=self.run_id)

    def log_metrics(self, metrics: dict[str, float], step: int, wait: bool = False) -> None:
        """Buffer metrics and send them in batches on MLflow's async logger (``wait``: send all now).

        Each MLflow call has a fixed cost (and on a small machine its background thread competes with
        the training loop for the GIL), so per-step metrics go out as one ``log_batch`` every
        :data:`FLUSH_SECONDS` or :data:`FLUSH_METRICS` values, whichever comes first.
        """
        from mlflow.entities import Metric

        now = time.time()
        self._buffer += [Metric(key, float(value), int(now * 1000), step) for key, value in metrics.items()]
        if wait or len(self._buffer) >= FLUSH_METRICS or now - self._flushed_at >= FLUSH_SECONDS:
            self.flush(wait=wait)

    def flush(self, wait: bool = False) -> None:
        """Send the buffered metrics (``wait``: synchronously)."""
        import mlflow

        if self._client is None:
            self._client = mlflow.MlflowClient(self.tracking_uri)
        batch, self._buffer = self._buffer, []
        self._flushed_at = time.time()
        for start in range(0, len(batch), FLUSH_METRICS):  # MLflow accepts at most 1000 per call
            self._client.log_batch(str(self.run_id), metrics=batch[start:start + FLUSH_METRICS],
                                   synchronous=wait)

    def set_tags(self, tags: dict[str, str]) -> None:
        """Set tags on the run."""
        import mlflow

        mlflow.set_tags(tags)

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None:
        """Store ``data`` as a JSON/YAML artifact (format from the file's extension)."""
        import mlflow

        mlflow.log_dict(data, artifact_file, run_id=self.run_id)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store a text artifact."""
        import mlflow

        mlflow.log_text(text, artifact_file, run_id=self.run_id)

    def tags(self) -> dict[str, str]:
        """Read the run's tags from the tracking store."""
        import mlflow

        tags: dict[str, str] = mlflow.MlflowClient(self.tracking_uri).get_run(str(self.run_id)).data.tags
        return tags

    def end(self, status: str) -> None:
        """Flush the async queue, then end the run."""
        import mlflow

        if self.run_id is not None:
            self.flush(wait=True)
        mlflow.flush_async_logging()
        if mlflow.active_run() is not None:
            mlflow.end_run(status=status)
