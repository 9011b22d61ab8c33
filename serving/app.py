"""The ASGI application: a thin dispatcher in front of a FastAPI app.

The two inference routes (`POST /predict`, `POST /v2/models/<name>[/versions/<v>]/infer`) are served here
directly: FastAPI's per-request machinery costs about as much as the model's share of a batched forward, so
the hot path parses the body with a msgspec decoder generated from the signature, queues the rows on the
:class:`~mlplat.serving.batcher.DynamicBatcher` and writes the answer itself. Everything else (health,
metadata, metrics, OpenAPI docs) is an ordinary FastAPI app (:mod:`mlplat.serving.api`). The steps of an
inference request (:meth:`ServingApp.head`, ``check_access``, ``admit``, ``parse``, ``submit``, ``failure``,
``answer``, ``response_headers``, ``finished``) are plain methods, shared with the wire fast path
(:mod:`mlplat.serving.wire`), which serves these routes under `mlplat serve` without an ASGI task.

Cross-cutting rules live in the dispatcher and apply to every route: the request id (`X-Request-ID`, taken
from the caller or generated), the optional bearer API key (constant-time compare; health and metrics stay
open), the body limit (413), request metrics and access logs, and `Connection: close` while draining.

Unless it is handed a loaded model, the app starts unready and loads its model in the background, retrying
until it succeeds (:meth:`ServingApp.load_until_ready`): the HTTP server is up (live) from the first moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import itertools
import logging
import math
import os
import random
import re
import secrets
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel

from mlplat.serving.batcher import (
    Answer,
    BatcherStopped,
    ClientDisconnected,
    DynamicBatcher,
    QueueFull,
    RequestTimedOut,
    WouldMissDeadline,
)
from mlplat.serving.drift import DriftMonitor
from mlplat.serving.loading import LoadStatus, backoff_delay, classify, describe, in_daemon_thread
from mlplat.serving.logs import request_id_var
from mlplat.serving.metrics import ServingMetrics
from mlplat.serving.model import LoadedModel, load_model, select_device
from mlplat.serving.redaction import redact
from mlplat.serving.routes import INFER, PREDICT, PUBLIC_PATHS, inference_route
from mlplat.serving.schema import (
    InputError,
    PredictDecoder,
    body_limit,
    decode_v2_request,
    predict_request_model,
    v2_datatype,
    v2_input_to_array,
)
from mlplat.serving.settings import ServingSettings

logger = logging.getLogger("mlplat.serving")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_SAFE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:/+=-]{1,128}$")
_JSON = (b"content-type", b"application/json")
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
# Requests still waiting after this long get a task that notices if their caller disconnects (see _Watch).
DISCONNECT_WATCH_AFTER_S = 0.02
# A request is admitted only if it is expected to be answered within this fraction of the request timeout
# (the estimate is a moving average; the rest is the margin that keeps answered requests within the timeout).
DUE_FRACTION = 0.9
# HTTP status for "the client went away before we answered" (nginx's convention); it is only ever a metric label.
CLIENT_CLOSED = 499
PREDICT_ROUTE = PREDICT.label
INFER_ROUTE = INFER.label


class HTTPError(Exception):
    """An error answer: status, message for the `{"error": ...}` body, and extra headers."""

    def __init__(
        self, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = (), hold_s: float = 0.0
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.hold_s = hold_s  # an overload refusal: how long its connection is not read afterwards


class ClientGone(Exception):
    """The caller disconnected; there is nobody to answer."""


@dataclass(slots=True)
class RequestHead:
    """What a request's line and headers tell the server; built once per request by either path to the model
    (the ASGI dispatcher here, or the wire fast path of :mod:`mlplat.serving.wire`)."""

    method: str
    path: str
    route: str  # the metrics label
    request_id: bytes
    authorization: bytes | None
    length: int | None  # the declared Content-Length
    started: float  # time.perf_counter() at arrival
    deadline: float  # event-loop time after which the caller gets a 504
    due: float  # when the answer is due, in time.monotonic() time (the batcher's clock): DUE_FRACTION of the timeout


@dataclass(slots=True)
class Admitted:
    """An inference request that passed every check that needs no body: the model and the largest body allowed."""

    model: LoadedModel
    body_limit: int


@dataclass(slots=True)
class _Request:
    head: RequestHead
    scope: Scope
    receive: Receive
    send: Send


class ServingApp:
    """The model server as an ASGI application; build it with :func:`create_app`."""

    def __init__(self, settings: ServingSettings, model: LoadedModel | None = None) -> None:
        from mlplat.serving.api import build_api

        self.settings = settings
        self.model = model
        self.metrics = ServingMetrics()
        self.batcher: DynamicBatcher | None = None
        self.drift: DriftMonitor | None = None
        self.request_model: type[BaseModel] | None = None  # documents /predict in OpenAPI
        self.decoder: PredictDecoder | None = None  # parses /predict bodies
        self.body_limit = settings.max_body_bytes  # for inference bodies: lowered to what the model's rows need
        self.ready = False
        self.draining = False
        self.load_status: LoadStatus | None = None  # set while the model loads in the background
        self.on_loaded: Callable[[], None] | None = None  # called once the model is loaded, before readiness
        self._load_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._api_key = settings.api_key.get_secret_value().encode() if settings.api_key else None
        self._id_prefix = secrets.token_hex(4).encode()
        self._ids = itertools.count(1)
        self.api = build_api(self)
        self._http: Callable[[Scope, Receive, Send], Awaitable[None]] = self._dispatch
        if settings.cors_origins:
            from starlette.middleware.cors import CORSMiddleware

            self._http = CORSMiddleware(
                self._dispatch,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type", "x-request-id"],
                expose_headers=["x-request-id"],
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point: HTTP goes through the dispatcher, lifespan events to FastAPI (which calls ours)."""
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        else:
            await self.api(scope, receive, send)

    # -- lifecycle --------------------------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self, _api: Any) -> AsyncIterator[None]:
        """Start up (load the model if none was given, start the batcher), then drain on shutdown."""
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    async def startup(self) -> None:
        """Serve a given model at once; otherwise start loading it in the background and answer unready meanwhile.

        Raises :class:`~mlplat.serving.model.ModelLoadError` (failing the ASGI start-up) only for what waiting
        cannot fix: a device this machine does not have.
        """
        self._loop = asyncio.get_running_loop()
        if self.model is not None:
            self._activate(self.model)
            return
        select_device(self.settings.device)
        uri = self.settings.model_uri
        tracking = self.settings.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        self.load_status = LoadStatus(
            uri=redact(uri),
            tracking_uri=redact(tracking) if tracking and uri.startswith(("models:", "runs:")) else None,
        )
        self._load_task = self._loop.create_task(self.load_until_ready(), name="mlplat-model-load")
        self._load_task.add_done_callback(self._load_ended)

    async def load_until_ready(self, rand: Callable[[], float] = random.random) -> None:
        """Try to load the model until it loads (then serve it) or the server shuts down.

        Each failed attempt is counted (``mlplat_model_load_attempts_total{outcome}``), logged with the URI, the
        reason and the time of the next attempt (credentials removed), and followed by a wait that doubles up to
        ``load_retry_max_s`` (:func:`~mlplat.serving.loading.backoff_delay`).

        Waiting in-process instead of exiting spares a first deploy the crash loop (CrashLoopBackOff delays each
        restart by up to 5 minutes, and every restart pays the imports of torch and MLflow again).

        Errors that waiting cannot fix are not retried here: a malformed or unsupported URI fails the settings
        (exit status 2) and a missing CUDA device fails start-up (exit status 1). A model that is found but
        refused (pickle without MLPLAT_SERVING_ALLOW_PICKLE, not a pytorch model, an unusable signature, a
        fixed batch size) keeps the server up and unready, with the reason in readiness (`"refused": true`), the
        log (error level) and the metric (`outcome="refused"`), and is retried at the longest interval: the URI
        is a reference that can be moved to an acceptable model without a redeploy (re-pointing the
        `@champion` alias is the fix for a bad promotion), and exiting would only turn a clear readiness
        reason into a crash loop.
        """
        settings, status = self.settings, self.load_status
        assert status is not None
        failures = 0
        started = time.monotonic()
        # Relies on Kubernetes probing readiness and liveness separately: a pod failing its readiness probe is
        # only taken out of its Service's endpoints (no traffic) and is not restarted; only liveness (and
        # startup) probe failures restart it. So /v2/health/live is 200 from the start, /v2/health/ready 503 here.
        while not self.draining:
            status.attempts += 1
            status.loading, status.next_attempt_at = True, None
            try:
                model = await in_daemon_thread(functools.partial(load_model, settings))
            except Exception as exc:
                failures += 1
                outcome = classify(exc)
                status.loading, status.outcome, status.error = False, outcome, describe(exc)
                self.metrics.load_attempts.labels(outcome).inc()
                # A refused model needs a person to act; retrying it at the fastest rate would waste downloads.
                delay = backoff_delay(
                    failures if outcome != "refused" else 64,
                    settings.load_retry_initial_s,
                    settings.load_retry_max_s,
                    settings.load_retry_jitter,
                    rand,
                )
                status.next_attempt_at = time.monotonic() + delay
                extra: dict[str, Any] = {
                    "uri": status.uri,
                    "attempt": status.attempts,
                    "outcome": outcome,
                    "reason": status.error,
                    "next_attempt_in_s": round(delay, 3),
                }
                if status.tracking_uri:
                    extra["tracking_uri"] = status.tracking_uri
                if outcome == "error":  # unexpected: keep the trace, minus credentials
                    extra["traceback"] = redact("".join(traceback.format_exception(exc)))
                logger.log(
                    logging.WARNING if outcome == "unavailable" else logging.ERROR,
                    "model not loaded (attempt %d, %s): waiting for %s: %s; next attempt in %.1f s",
                    status.attempts,
                    outcome,
                    status.uri,
                    status.error,
                    delay,
                    extra=extra,
                )
                await asyncio.sleep(delay)
                continue
            self.metrics.load_attempts.labels("success").inc()
            status.loading, status.outcome, status.error = False, "success", None
            if self.draining:
                logger.info("the model loaded after shutdown began: not serving it")
                return
            if status.attempts > 1:
                logger.info(
                    "model loaded after %d attempts (%.1f s)",
                    status.attempts,
                    time.monotonic() - started,
                    extra={"uri": status.uri, "attempt": status.attempts},
                )
            if self.on_loaded is not None:
                self.on_loaded()
            self.model = model
            self._activate(model)
            return

    def _load_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("the model loader stopped; the server stays unready", exc_info=task.exception())

    def unready_reason(self) -> dict[str, Any]:
        """Why the server is not ready: the fields of the 503 readiness answer (besides `ready`)."""
        if self.draining:
            return {"reason": "shutting down"}
        if self.load_status is not None and self.model is None:
            return self.load_status.body()
        return {"reason": "starting"}

    def _not_loaded(self) -> HTTPError:
        status = self.load_status
        if status is None:
            return HTTPError(503, "the model is still loading; retry shortly", ((b"retry-after", b"1"),))
        return HTTPError(
            503,
            f"the model is not loaded yet: {status.reason()}; retry later",
            ((b"retry-after", b"%d" % status.retry_after()),),
        )

    def _activate(self, model: LoadedModel) -> None:
        """Serve `model`: build its decoder, drift monitor and batcher, and turn readiness on."""
        settings = self.settings
        assert self._loop is not None
        self.request_model = predict_request_model(model.input_spec, settings.max_request_rows)
        self.decoder = PredictDecoder(model.input_spec, settings.max_request_rows)
        self.body_limit = body_limit(model.input_spec, settings.max_request_rows, settings.max_body_bytes)
        self.drift = self._drift_monitor(model)
        self.batcher = DynamicBatcher(
            model.predict,
            max_batch_size=settings.max_batch_size,
            max_delay_s=settings.max_batch_delay_s,
            queue_limit=settings.queue_limit,
            overlap=len(os.sched_getaffinity(0)) > 1,
            on_batch=self._on_batch,
            on_skip=self.metrics.observe_skip,
        )
        self.batcher.start(self._loop)
        batcher = self.batcher
        self.metrics.track_queue(lambda: batcher.depth)
        self.metrics.model_load.set(model.load_seconds)
        self.metrics.model_info.info(
            {"name": model.name, "version": model.version, "platform": model.platform, "device": str(model.device)}
        )
        self.metrics.model_loaded.set(1)
        self.api.openapi_schema = None  # document /predict with the model's own request schema
        self.ready = True
        self.metrics.ready.set(1)
        logger.info("ready", extra={"model": model.name, "version": model.version})

    async def shutdown(self) -> None:
        """Stop loading, stop taking work and let the batcher finish everything already queued."""
        self.begin_drain()
        if self._load_task is not None and not self._load_task.done():
            # The load thread (a daemon) may be stuck on an unanswering store; it is abandoned, not awaited.
            self._load_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._load_task
        if self.batcher is not None:
            await self.batcher.drain(self.settings.graceful_timeout_s)
        logger.info("stopped")

    def begin_drain(self) -> None:
        """Turn readiness off at once (load balancers stop sending); accepted requests still complete."""
        if not self.draining:
            logger.info("draining: readiness is now false")
        self.draining = True
        self.ready = False
        self.metrics.ready.set(0)

    def _drift_monitor(self, model: LoadedModel) -> DriftMonitor | None:
        stats, spec = model.reference_stats, model.input_spec
        if stats is None:
            return None
        if spec is None or len(spec.row_shape) != 1 or spec.row_shape[0] != len(stats.features):
            logger.warning(
                "reference stats describe %d features but the model's rows are %s: drift monitoring is off",
                len(stats.features),
                "unknown" if spec is None else list(spec.row_shape),
            )
            return None
        monitor = DriftMonitor(stats, self.settings.drift_window)
        self.metrics.add_collector(monitor)
        return monitor

    def _on_batch(self, rows: np.ndarray, seconds: float) -> None:
        self.metrics.observe_batch(len(rows), seconds)
        if self.drift is not None:
            self.drift.observe(rows)

    # -- what both paths share: checks, parsing, answers, accounting -----------------------------------------

    @property
    def fast_path(self) -> bool:
        """Whether the wire fast path may serve the inference routes (not with CORS: its middleware is ASGI)."""
        return not self.settings.cors_origins

    def head(self, scope: Scope, waited: float = 0.0, route: str | None = None) -> RequestHead:
        """The request's id, credentials, declared length, route and clocks, from its ASGI scope.

        `waited`: how long the request may already have waited unread (a held connection's hold), taken off its
        deadline so that the caller, who counts from its send, still has its answer within the timeout. `route`:
        its metrics label (:meth:`route_label`) where the caller has it already.
        """
        started = time.perf_counter()
        given_id = auth = length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given_id = value
            elif name == b"authorization":
                auth = value
            elif name == b"content-length":
                length = value
        if given_id is not None and _SAFE_REQUEST_ID.match(given_id):
            request_id = given_id
        else:
            request_id = b"%s-%x" % (self._id_prefix, next(self._ids))
        path, method = scope["path"], scope["method"]
        loop = self._loop or asyncio.get_running_loop()
        timeout = self.settings.request_timeout_s - waited
        return RequestHead(
            method,
            path,
            self.route_label(path) if route is None else route,
            request_id,
            auth,
            int(length) if length is not None and length.isdigit() else None,
            started,
            loop.time() + timeout,
            time.monotonic() + timeout * DUE_FRACTION,
        )

    @staticmethod
    def route_label(path: str) -> str:
        """The metrics label of an inference route; "other" for the rest (FastAPI's template replaces it)."""
        found = inference_route(path)
        return found[0].label if found is not None else "other"

    def check_access(self, head: RequestHead) -> None:
        """The rules of every route: the API key (401) and the declared body size (413)."""
        if self._api_key is not None and head.path not in PUBLIC_PATHS and not self._authorized(head.authorization):
            raise HTTPError(
                401,
                "missing or invalid API key: send the header 'Authorization: Bearer <key>'",
                ((b"www-authenticate", b'Bearer realm="mlplat"'),),
            )
        if head.length is not None and head.length > self.settings.max_body_bytes:
            raise self._too_large()

    def admit(self, head: RequestHead) -> Admitted:
        """An inference request's checks before its body is read: the model is served (503), the request could be
        answered in time (503), it names the served model (404), its declared body fits the model's rows (413)."""
        model = self._served_model(head)
        if head.route == INFER_ROUTE:
            found = inference_route(head.path)
            params = found[1] if found is not None else {}
            if params.get("name") != model.name or params.get("model_version") not in (None, model.version):
                raise HTTPError(
                    404, f"no such model; this server serves model {model.name!r} version {model.version!r}"
                )
        limit = self.body_limit
        if head.length is not None and head.length > limit:
            raise self._too_large(limit)
        return Admitted(model, limit)

    def parse(self, head: RequestHead, admitted: Admitted, body: bytes) -> tuple[np.ndarray, str | None]:
        """The rows of an inference body, and the V2 request id (422 with the reason when they do not fit)."""
        model = admitted.model
        if head.route == PREDICT_ROUTE:
            assert self.decoder is not None  # set with the model
            try:
                return self.decoder.decode(body), None
            except InputError as exc:
                raise HTTPError(422, f"invalid request: {exc}") from None
        try:
            infer = decode_v2_request(body)
        except InputError as exc:
            raise HTTPError(422, str(exc)) from None
        if len(infer.inputs) != 1:
            expected = model.input_spec.name if model.input_spec else "one input"
            raise HTTPError(422, f"the model takes exactly one input ({expected!r}), got {len(infer.inputs)}")
        output_name = self._output_name(model)
        unknown = [o.name for o in infer.outputs or () if o.name != output_name]
        if unknown:
            raise HTTPError(422, f"unknown outputs {unknown}; the model's output is {output_name!r}")
        try:
            rows = v2_input_to_array(infer.inputs[0], model.input_spec, self.settings.max_request_rows)
        except InputError as exc:
            raise HTTPError(422, str(exc)) from None
        return rows, infer.id

    def submit(self, rows: np.ndarray, head: RequestHead) -> asyncio.Future[np.ndarray]:
        """Queue the rows on the batcher (503 + Retry-After if they could not be answered in time, or on shutdown)."""
        batcher = self.batcher
        if batcher is None:
            raise self._not_loaded()
        try:
            return batcher.submit(rows, head.due)
        except QueueFull as exc:
            raise self._shed(exc) from None
        except BatcherStopped:
            raise _shutting_down() from None

    def submit_to(self, answer: Answer, rows: np.ndarray, head: RequestHead) -> None:
        """:meth:`submit`, the outcome going to `answer` (the wire fast path's) instead of a new future."""
        batcher = self.batcher
        if batcher is None:
            raise self._not_loaded()
        try:
            batcher.submit_to(answer, rows, head.due)
        except QueueFull as exc:
            raise self._shed(exc) from None
        except BatcherStopped:
            raise _shutting_down() from None

    def failure(self, exc: BaseException, head: RequestHead) -> HTTPError | ClientGone:
        """What a request's batcher future failed with, as the error to answer (or :class:`ClientGone`)."""
        if isinstance(exc, WouldMissDeadline):  # its deadline came before its batch could finish
            return self._shed(exc)
        if isinstance(exc, RequestTimedOut):
            depth = self.batcher.depth if self.batcher is not None else 0
            return HTTPError(
                504,
                f"no result within the request timeout of {self.settings.request_timeout_s:g} s "
                f"({depth} requests queued); the request was dropped",
            )
        if isinstance(exc, ClientDisconnected):
            return ClientGone()
        if isinstance(exc, BatcherStopped):
            return _shutting_down()
        token = request_id_var.set(head.request_id.decode())
        try:
            logger.error("inference failed", exc_info=exc)
        finally:
            request_id_var.reset(token)
        return HTTPError(
            500,
            f"inference failed ({type(exc).__name__}); see the server log for request id {head.request_id.decode()}",
        )

    def answer(self, head: RequestHead, admitted: Admitted, request_id: str | None, outputs: np.ndarray) -> bytes:
        """The JSON answer of an inference request."""
        model = admitted.model
        if head.route == PREDICT_ROUTE:
            return orjson.dumps({"predictions": outputs, "model_version": model.version}, option=_NUMPY)
        answer = {
            "model_name": model.name,
            "model_version": model.version,
            "id": request_id,
            "outputs": [
                {
                    "name": self._output_name(model),
                    "datatype": v2_datatype(outputs.dtype),
                    "shape": list(outputs.shape),
                    "data": outputs.ravel(),
                }
            ],
        }
        return orjson.dumps(answer, option=_NUMPY)

    def response_headers(
        self, request_id: bytes, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()
    ) -> list[tuple[bytes, bytes]]:
        """The headers of every answer the server writes itself (`Connection: close` while draining)."""
        headers = [_JSON, (b"content-length", b"%d" % len(body)), (b"x-request-id", request_id), *extra]
        if self.draining:
            headers.append((b"connection", b"close"))
        return headers

    def internal_error(self, head: RequestHead) -> HTTPError:
        """Log the exception being handled (with the request id) and return the 500 that answers it."""
        token = request_id_var.set(head.request_id.decode())
        try:
            logger.exception("unhandled error", extra={"path": head.path})
        finally:
            request_id_var.reset(token)
        return HTTPError(500, f"internal error (request id {head.request_id.decode()})")

    def finished(self, head: RequestHead, status: int, route: str | None = None) -> None:
        """Account for an answered request: metrics, and the access log when asked for."""
        elapsed = time.perf_counter() - head.started
        self.metrics.observe_request(route or head.route, status, elapsed)
        if self.settings.access_log:
            token = request_id_var.set(head.request_id.decode())
            try:
                logger.info(
                    "request",
                    extra={"method": head.method, "path": head.path, "status": status, "ms": round(elapsed * 1000, 3)},
                )
            finally:
                request_id_var.reset(token)

    @staticmethod
    def _output_name(model: LoadedModel) -> str:
        return model.output_spec.name if model.output_spec else "output-0"

    def _authorized(self, header: bytes | None) -> bool:
        if header is None or self._api_key is None:
            return False
        scheme, _, token = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._api_key)

    def _too_large(self, limit: int | None = None) -> HTTPError:
        if limit is None or limit >= self.settings.max_body_bytes:
            limit = self.settings.max_body_bytes
            why = "MLPLAT_SERVING_MAX_BODY_BYTES"
        else:
            spec = self.model.input_spec if self.model is not None else None
            values = "x".join(str(d) for d in spec.row_shape) if spec is not None else "?"
            why = f"what {self.settings.max_request_rows} rows of {values} values need, MLPLAT_SERVING_MAX_REQUEST_ROWS"
        return HTTPError(
            413,
            f"request body is larger than the limit of {limit} bytes ({why})",
            # The unread rest of the body must not be parsed as a next request on this connection.
            ((b"connection", b"close"),),
        )

    def too_large(self, limit: int) -> HTTPError:
        """413 for a body that grew past `limit` while it was read (chunked, or longer than declared)."""
        return self._too_large(limit)

    def _served_model(self, head: RequestHead) -> LoadedModel:
        """The model, if there is one and the request could be queued and answered in time (else 503 before any
        parsing)."""
        if self.model is None or self.decoder is None:
            raise self._not_loaded()
        if self.batcher is not None:
            try:
                self.batcher.check_admission(head.due)
            except QueueFull as exc:
                raise self._shed(exc) from None
        return self.model

    def _shed(self, exc: QueueFull) -> HTTPError:
        """503 + Retry-After for a request refused at once (it could not finish in time, or the queue is full)."""
        timeout, hold = self.settings.request_timeout_s, self.settings.shed_hold_limit_s
        if isinstance(exc, WouldMissDeadline):
            self.metrics.shed_deadline.inc()
            retry_after = max(1, math.ceil(exc.excess_s))
            return HTTPError(
                503,
                f"server busy: the queue would not reach this request within the request timeout of {timeout:g} s "
                f"(about {exc.wait_s:.2f} s); retry shortly",
                ((b"retry-after", b"%d" % retry_after),),
                hold_s=min(hold, retry_after),
            )
        self.metrics.shed_queue_full.inc()
        limit = self.batcher.queue_limit if self.batcher is not None else self.settings.queue_limit
        return HTTPError(
            503,
            f"server busy: {limit} requests are already queued; retry shortly",
            ((b"retry-after", b"1"),),
            hold_s=min(hold, 1.0),
        )

    # -- the ASGI dispatcher ----------------------------------------------------------------------------

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        head = self.head(scope)
        route = head.route
        status = 500
        request = _Request(head, scope, receive, send)
        try:
            self.check_access(head)
            if route == "other":
                status, route = await self._delegate(request)
            elif head.method != "POST":
                raise HTTPError(405, f"{head.method} is not allowed here; use POST", ((b"allow", b"POST"),))
            else:
                status = await self._inference(request)
        except HTTPError as exc:
            status = exc.status
            await self._send_error(request, exc)
        except ClientGone:
            status = CLIENT_CLOSED
        except Exception:
            status = 500
            await self._send_error(request, self.internal_error(head))
        finally:
            self.finished(head, status, route)

    async def _delegate(self, request: _Request) -> tuple[int, str]:
        """Hand the request to FastAPI, adding our headers; returns (status, route label)."""
        status = 500
        extra = [(b"x-request-id", request.head.request_id)]

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), *extra]
                if self.draining:
                    headers.append((b"connection", b"close"))
                message["headers"] = headers
            await request.send(message)

        token = request_id_var.set(request.head.request_id.decode())
        try:
            await self.api(request.scope, request.receive, send)
        finally:
            request_id_var.reset(token)
        matched = request.scope.get("route")
        return status, (getattr(matched, "path", "other") if status != 404 else "other")

    async def _respond(
        self, request: _Request, status: int, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        headers = self.response_headers(request.head.request_id, body, extra)
        await request.send({"type": "http.response.start", "status": status, "headers": headers})
        await request.send({"type": "http.response.body", "body": body})

    async def _send_error(self, request: _Request, error: HTTPError) -> None:
        try:
            await self._respond(request, error.status, error_body(error), error.headers)
        except Exception:  # the response had started or the client is gone: nothing more can be said
            logger.debug("could not send error %s", error.status, exc_info=True)

    async def _inference(self, request: _Request) -> int:
        head = request.head
        admitted = self.admit(head)
        body = await self._read_body(request, admitted.body_limit)
        rows, request_id = self.parse(head, admitted, body)
        outputs = await self._infer(rows, request)
        await self._respond(request, 200, self.answer(head, admitted, request_id, outputs))
        return 200

    async def _read_body(self, request: _Request, limit: int) -> bytes:
        """The body of an inference request, cut off (413) as soon as it grows past `limit`."""
        chunks, size = [], 0
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise self._too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _infer(self, rows: np.ndarray, request: _Request) -> np.ndarray:
        """Queue rows on the batcher and wait for them, within the deadline and only while the caller listens."""
        future = self.submit(rows, request.head)
        loop = self._loop or asyncio.get_running_loop()
        watch = _Watch(future, request.receive, request.head.deadline, loop)
        try:
            return await future
        except Exception as exc:
            raise self.failure(exc, request.head) from None
        finally:
            watch.cancel()


def error_body(error: HTTPError) -> bytes:
    """The JSON body of an error answer."""
    return orjson.dumps({"error": error.message})


def _shutting_down() -> HTTPError:
    return HTTPError(503, "the server is shutting down; retry on another replica", ((b"retry-after", b"1"),))


class _Watch:
    """Ends a waiting request early: a 504 at its deadline, or a skip when its caller disconnects.

    Watching for a disconnect needs a task blocked on `receive()`, which costs more than answering a quick
    request, so the watch starts only once the request has waited `DISCONNECT_WATCH_AFTER_S`: requests that
    sit in a backed-up queue (the ones whose abandonment would waste compute) are watched; quick ones are not.
    """

    __slots__ = ("deadline", "future", "loop", "receive", "timer")

    def __init__(
        self, future: asyncio.Future[np.ndarray], receive: Receive, deadline: float, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.future, self.receive, self.deadline, self.loop = future, receive, deadline, loop
        watch_at = loop.time() + DISCONNECT_WATCH_AFTER_S
        if watch_at < deadline:
            self.timer = loop.call_at(watch_at, self._start_watching)
        else:
            self.timer = loop.call_at(deadline, self._expire)

    def cancel(self) -> None:
        self.timer.cancel()

    def _start_watching(self) -> None:
        if self.future.done():
            return
        self.timer = self.loop.call_at(self.deadline, self._expire)
        self.loop.create_task(self._watch_disconnect())

    def _expire(self) -> None:
        if not self.future.done():
            self.future.set_exception(RequestTimedOut())

    async def _watch_disconnect(self) -> None:
        # The ASGI server also answers `http.disconnect` once our response is complete, which ends this task.
        try:
            while not self.future.done():
                message = await self.receive()
                if message["type"] == "http.disconnect":
                    if not self.future.done():
                        self.future.set_exception(ClientDisconnected())
                    return
        except Exception:  # the connection's machinery is gone; nothing to watch
            return


def create_app(settings: ServingSettings | None = None, model: LoadedModel | None = None) -> ServingApp:
    """The app factory: settings from the environment unless given; the model is loaded at start-up unless given.

    Usable with any ASGI server: `uvicorn --factory mlplat.serving.app:create_app`.
    """
    from mlplat.serving.settings import load_settings

    return ServingApp(settings if settings is not None else load_settings(), model)
