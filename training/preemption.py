"""SIGTERM (spot interruption) handling: note the request, let the loop finish its step and checkpoint.

Kubernetes sends SIGTERM when a spot node is reclaimed or a pod is evicted, then SIGKILL after the grace
period. The handler only sets a flag (nothing else is safe inside a signal handler); the training loop
checks it after every step, writes a checkpoint and exits with
:data:`~mlplat.contracts.exit_codes.EXIT_PREEMPTED`.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any


class PreemptionHandler:
    """Context manager that turns SIGTERM into :attr:`requested` for the duration of a run."""

    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM,)) -> None:
        self.signals = signals
        self.requested = False
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        self.received = signal.Signals(signum)

    def __enter__(self) -> PreemptionHandler:
        # Signal handlers can only be installed from the main thread; elsewhere (a trainer driven from a
        # worker thread) the process's own handling stays in charge.
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
