"""The server's routes, declared once.

Every route the server answers is one :class:`Route` in :data:`ROUTES`. From this table come: the dispatcher's
split between the inference routes it serves itself (and the wire fast path with it) and the control routes it
hands to FastAPI (:func:`inference_route`), the paths answered without the API key (:data:`PUBLIC_PATHS`), the
FastAPI routes (:mod:`mlplat.serving.api` registers one handler per control route, by name) and the OpenAPI
document (the inference routes are described from their entries here, not by stand-in handlers). The paths the
platform relies on (probes, scrapes, inference) are :mod:`mlplat.contracts.http`'s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from mlplat.contracts import http


@dataclass(frozen=True)
class Route:
    """One route: its method and path template, its operation name, and how it is served and documented."""

    method: Literal["GET", "POST"]
    path: str
    name: str
    summary: str
    tags: tuple[str, ...]
    public: bool = False  # answered without the API key
    inference: bool = False  # served by the dispatcher (batched), not by FastAPI
    label: str = ""  # the metrics label of an inference route (its versioned form shares the plain one's)

    @property
    def pattern(self) -> re.Pattern[str]:
        """The template as a regular expression: each ``{param}`` one path segment."""
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.path) + "$")


LIVE = Route("GET", http.LIVE_PATH, "live", "Liveness: the process is up and answering.", ("health",), public=True)
READY = Route(
    "GET",
    http.READY_PATH,
    "ready",
    "Readiness: the model is loaded and the server is not shutting down (503 otherwise, saying why).",
    ("health",),
    public=True,
)
SERVER_METADATA = Route("GET", "/v2", "server_metadata", "Server metadata (KServe V2).", ("v2",))
MODEL_METADATA = Route(
    "GET",
    "/v2/models/{name}",
    "model_metadata",
    "Model metadata (KServe V2): name, version, platform and the input and output tensors.",
    ("v2",),
)
MODEL_VERSION_METADATA = Route(
    "GET", "/v2/models/{name}/versions/{model_version}", "model_metadata", MODEL_METADATA.summary, ("v2",)
)
MODEL_READY = Route(
    "GET",
    "/v2/models/{name}/ready",
    "model_ready",
    "Model readiness (KServe V2): 200 when ready, 503 otherwise (while loading, for any name: it is unknown).",
    ("v2",),
)
MODEL_VERSION_READY = Route(
    "GET", "/v2/models/{name}/versions/{model_version}/ready", "model_ready", MODEL_READY.summary, ("v2",)
)
METRICS = Route(
    "GET",
    http.METRICS_PATH,
    "metrics",
    "Prometheus metrics (text exposition format).",
    ("observability",),
    public=True,
)
PREDICT = Route(
    "POST",
    http.PREDICT_PATH,
    "predict",
    'Predict rows: `{"inputs": [row, ...]}` -> one prediction per row. Concurrent requests are batched.',
    ("inference",),
    inference=True,
    label=http.PREDICT_PATH,
)
INFER = Route(
    "POST",
    http.INFER_PATH,
    "infer",
    "Inference (KServe V2): one typed input tensor, data flat (row-major) or nested.",
    ("v2", "inference"),
    inference=True,
    label=http.INFER_PATH,
)
VERSION_INFER = Route(
    "POST", http.VERSION_INFER_PATH, "infer", INFER.summary, ("v2", "inference"), inference=True, label=INFER.label
)

ROUTES: Final = (
    LIVE,
    READY,
    SERVER_METADATA,
    MODEL_METADATA,
    MODEL_VERSION_METADATA,
    MODEL_READY,
    MODEL_VERSION_READY,
    METRICS,
    PREDICT,
    INFER,
    VERSION_INFER,
)
PUBLIC_PATHS: Final = frozenset(route.path for route in ROUTES if route.public)
_INFERENCE: Final = tuple((route.pattern, route) for route in ROUTES if route.inference)
# Paths without parameters are looked up directly: every /predict request asks, and a regex costs more.
_LITERAL: Final = {route.path: route for route in ROUTES if route.inference and "{" not in route.path}


def inference_route(path: str) -> tuple[Route, dict[str, str]] | None:
    """The inference route `path` names and its parameters, or None for any other path."""
    literal = _LITERAL.get(path)
    if literal is not None:
        return literal, {}
    for pattern, route in _INFERENCE:
        match = pattern.match(path)
        if match is not None:
            return route, match.groupdict()
    return None
