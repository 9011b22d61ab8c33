"""Progress display: a rich progress bar on a terminal, plain log lines in CI and in pods."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Protocol

log = logging.getLogger("mlplat.training")


def _format(metrics: dict[str, float]) -> str:
    return " ".join(f"{key} {value:.4g}" for key, value in metrics.items() if key != "epoch")


class Progress(Protocol):
    """Receives the loop's position and latest metrics."""

    def start(self, total_steps: int, initial_step: int) -> None:
        """The run has ``total_steps`` steps, of which ``initial_step`` are done (resume)."""

    def update(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        """Periodic per-step report."""

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """An epoch finished with these validation metrics."""

    def close(self) -> None:
        """The loop is over."""


class NullProgress:
    """Shows nothing (non-zero ranks)."""

    def start(self, total_steps: int, initial_step: int) -> None:
        """No-op."""

    def update(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        """No-op."""

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """No-op."""

    def close(self) -> None:
        """No-op."""


class LogProgress:
    """Plain log lines, readable in CI logs and ``kubectl logs``: every epoch end, and a step line at most
    every ``min_interval`` seconds (a line per logging step would flood a fast job's log)."""

    def __init__(self, min_interval: float = 10.0) -> None:
        self.total = 0
        self.min_interval = min_interval
        self._last = -math.inf

    def start(self, total_steps: int, initial_step: int) -> None:
        """Log where the run starts."""
        self.total = total_steps
        log.info("training: step %d of %d", initial_step, total_steps)

    def update(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        """Log the step's metrics, unless a step line went out less than ``min_interval`` ago."""
        now = time.monotonic()
        if now - self._last >= self.min_interval:
            self._last = now
            log.info("step %d/%d epoch %d %s", step, self.total, epoch + 1, _format(metrics))

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """Log the epoch's validation metrics."""
        log.info("epoch %d done: %s", epoch + 1, _format(metrics))

    def close(self) -> None:
        """Nothing to release."""


class BarProgress:
    """A rich progress bar (terminal only)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[metrics]}"),
            transient=False,
        )
        self._task = self._bar.add_task("train", total=0, metrics="")

    def start(self, total_steps: int, initial_step: int) -> None:
        """Show the bar at the resume position."""
        self._bar.update(self._task, total=total_steps, completed=initial_step)
        self._bar.start()

    def update(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        """Move the bar."""
        self._bar.update(self._task, completed=step, metrics=f"epoch {epoch + 1} {_format(metrics)}")

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """Print the epoch's metrics above the bar."""
        self._bar.console.print(f"epoch {epoch + 1}: {_format(metrics)}")

    def close(self) -> None:
        """Stop redrawing."""
        self._bar.stop()


def make_progress(is_main: bool) -> Progress:
    """A bar on an interactive terminal, log lines otherwise (``CI`` set, no TTY), nothing off rank 0."""
    if not is_main:
        return NullProgress()
    if sys.stderr.isatty() and not os.environ.get("CI"):
        return BarProgress()
    return LogProgress()
