"""The model server's HTTP interface as the platform uses it: the port and the paths probes, scrapes and clients
call. The server declares its routes from these (mlplat.serving.routes); components point probes and
ServiceMonitors at them."""

from __future__ import annotations

from typing import Final

SERVING_PORT: Final = 8080
"""The port `mlplat serve` listens on in its image (``MLPLAT_SERVING_PORT``'s default)."""

LIVE_PATH: Final = "/v2/health/live"
"""Liveness (KServe V2): 200 while the process answers."""

READY_PATH: Final = "/v2/health/ready"
"""Readiness (KServe V2): 200 once the model is loaded and until shutdown begins; 503 with the reason otherwise."""

METRICS_PATH: Final = "/metrics"
"""Prometheus metrics."""

PREDICT_PATH: Final = "/predict"
"""``POST``: rows in, one prediction per row out."""

INFER_PATH: Final = "/v2/models/{name}/infer"
"""``POST``: KServe V2 inference on the served model."""

VERSION_INFER_PATH: Final = "/v2/models/{name}/versions/{model_version}/infer"
"""``POST``: KServe V2 inference on one version of the served model."""

PUBLIC_PATHS: Final = frozenset({LIVE_PATH, READY_PATH, METRICS_PATH})
"""Answered without the API key: the kubelet's probes and Prometheus carry none."""
