"""Run the model server in this process: logging, torch threads, uvicorn, background model load, graceful shutdown.

The HTTP server starts at once, live but not ready; the model loads in the background, retried with backoff
until it is there (:meth:`mlplat.serving.app.ServingApp.load_until_ready`), and readiness turns true then.

Shutdown on SIGTERM (what Kubernetes and `docker stop` send):

1. readiness turns false at once, and every response carries `Connection: close`, so clients reconnect
   elsewhere while load balancers take this replica out of rotation (``drain_delay_s``);
2. then uvicorn stops accepting connections and waits for in-flight requests (``graceful_timeout_s``);
3. then the lifespan shutdown lets the batcher finish its queue, and the process exits with status 0.

SIGINT (Ctrl-C) skips the delay; a second SIGINT forces the exit. A server that never became ready (still
waiting for its model) skips the delay too: no load balancer sends it anything.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from types import FrameType

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mlplat.serving.app import ServingApp, create_app
from mlplat.serving.connection import ConnectionLimits, connection_cap, guarded_protocol, raise_fd_limit
from mlplat.serving.logs import configure_logging, logging_config
from mlplat.serving.model import ModelLoadError, select_device
from mlplat.serving.redaction import redact
from mlplat.serving.settings import ServingSettings, SettingsError, load_settings
from mlplat.serving.wire import fast_protocol

# MLflow's own HTTP retries (default: 7, backoff factor 2, about 4 minutes against a server that is down) would
# make one load attempt last minutes; the server retries whole attempts itself, so MLflow retries briefly. Values
# set in the environment win.
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}

logger = logging.getLogger("mlplat.serving")


class DrainingServer(uvicorn.Server):
    """uvicorn's server, with a readiness drain between SIGTERM and the stop of accepting connections."""

    def __init__(self, config: uvicorn.Config, app: ServingApp) -> None:
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Signal handler: drain on the first SIGTERM; otherwise uvicorn's behaviour."""
        first = not self.app.draining
        never_ready = self.app.model is None  # still waiting for the model: out of every rotation already
        self.app.begin_drain()
        if sig == signal.SIGTERM:
            delay = 0.0 if never_ready else self.app.settings.drain_delay_s
            if first and delay > 0:
                logger.info("SIGTERM: draining for %.1f s before closing the listener", delay)
                timer = threading.Timer(delay, self._stop_accepting)
                timer.daemon = True
                timer.start()
            else:
                self._stop_accepting()
            return  # handled here, not re-raised after shutdown: a drained exit is a clean exit (status 0)
        super().handle_exit(sig, frame)

    def _stop_accepting(self) -> None:
        # uvicorn's main loop polls this flag every 0.1 s, then closes listeners and waits for in-flight requests.
        self.should_exit = True


def configure_torch(settings: ServingSettings) -> int:
    """Set torch's intra-op threads and return the count.

    Default: the CPUs this process may run on, less one for the event loop (which parses and answers requests
    while the forward runs), at least one.
    """
    import torch

    threads = settings.torch_threads or max(1, len(os.sched_getaffinity(0)) - 1)
    torch.set_num_threads(threads)
    return threads


def connection_limits(settings: ServingSettings) -> ConnectionLimits:
    """The connection guard's limits from the settings."""
    return ConnectionLimits(
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        max_header_bytes=settings.max_header_bytes,
        max_connections=settings.max_connections,
    )


def uvicorn_config(
    app: ServingApp,
    settings: ServingSettings,
    *,
    log_config: bool = True,
    fast_path: bool = True,
    connection_guard: bool = True,
) -> uvicorn.Config:
    """uvicorn settings for serving `app`: the inference routes on the wire fast path (:mod:`mlplat.serving.wire`),
    the connection guard on top (read timeouts, header limit, connection cap, :mod:`mlplat.serving.connection`),
    the idle keep-alive timeout, JSON logs, the graceful timeout.

    uvicorn's own ``limit_concurrency`` stays off: it answers 503 to every request (health checks too) once
    that many connections are open, slow and idle ones included; the guard evicts those instead.
    `fast_path=False` (every request through the app's ASGI dispatcher) and `connection_guard=False` are for the
    benchmark, which measures what each costs, and for the tests that compare the two paths.
    """
    limits = connection_limits(settings)
    cap = connection_cap(limits.max_connections)
    if cap < limits.max_connections:
        logger.warning(
            "connection cap lowered from %d to %d to stay clear of the file-descriptor limit",
            limits.max_connections,
            cap,
        )
    protocol = fast_protocol(app) if fast_path else HttpToolsProtocol
    if connection_guard:
        protocol = guarded_protocol(limits, cap, on_close=app.metrics.connection_closed, base=protocol)
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        http=protocol,
        loop="auto",
        timeout_keep_alive=settings.keepalive_timeout_s,  # type: ignore[arg-type,unused-ignore]  # a float works
        log_config=logging_config(settings.log_level) if log_config else None,
        access_log=False,  # the dispatcher writes its own (JSON, with the request id) when asked to
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=int(settings.graceful_timeout_s + 0.999),
    )


def _freeze_gc() -> None:
    # Everything allocated so far (torch, MLflow, the model) lives as long as the process: move it out of the
    # collector's sight, so full collections stop walking it (they otherwise pause serving for ~100 ms).
    gc.collect()
    gc.freeze()


def run(settings: ServingSettings, *, fast_path: bool = True, connection_guard: bool = True) -> None:
    """Serve until shut down; the model loads in the background, retried until it is there.

    Raises :class:`ModelLoadError` only for what waiting cannot fix (a CUDA device this machine lacks).
    `fast_path` and `connection_guard` are :func:`uvicorn_config`'s (the benchmark turns them off to measure them).
    """
    configure_logging(settings.log_level)
    raise_fd_limit()  # before the connection cap is derived from it
    select_device(settings.device)
    threads = configure_torch(settings)
    for name, value in MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    logger.info(
        "starting; the model loads in the background",
        extra={"uri": redact(settings.model_uri), "torch_threads": threads},
    )
    app = create_app(settings)
    app.on_loaded = _freeze_gc

    config = uvicorn_config(app, settings, fast_path=fast_path, connection_guard=connection_guard)
    DrainingServer(config, app).run()


def main(**overrides: object) -> None:
    """Entry point of `python -m mlplat.serving` and `mlplat serve`: clear messages and exit codes on failure."""
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        print(f"mlplat serve: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        run(settings)
    except ModelLoadError as exc:
        logger.error("could not load the model: %s", exc)
        print(f"mlplat serve: could not load the model: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
