"""The ``MLPLAT_SERVING_*`` environment variables: how a rendered workload configures the model server.

The server reads every setting ``x`` from ``MLPLAT_SERVING_X`` and ignores names it does not know, so a typo in a
component would be silently dropped. Components therefore name variables through :func:`serving_env`, which
refuses a setting the server does not have; :data:`SETTINGS` is kept equal to the server's settings model by a
test (tests/serving/test_serving_settings.py).
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "MLPLAT_SERVING_"

SETTINGS: Final = frozenset(
    {
        "access_log",
        "allow_pickle",
        "api_key",
        "body_timeout_s",
        "cors_origins",
        "device",
        "drain_delay_s",
        "drift_window",
        "graceful_timeout_s",
        "header_timeout_s",
        "host",
        "input_shape",
        "keepalive_timeout_s",
        "load_retry_initial_s",
        "load_retry_jitter",
        "load_retry_max_s",
        "log_level",
        "max_batch_delay_ms",
        "max_batch_size",
        "max_body_bytes",
        "max_connections",
        "max_header_bytes",
        "max_request_rows",
        "mlflow_tracking_uri",
        "model_name",
        "model_uri",
        "model_version",
        "port",
        "queue_limit",
        "request_timeout_s",
        "s3_endpoint_url",
        "shed_hold_s",
        "torch_threads",
    }
)
"""The server's settings (``mlplat.serving.settings.ServingSettings`` field names)."""


def serving_env(setting: str) -> str:
    """The environment variable that sets the server's `setting` (``"model_uri"`` -> ``MLPLAT_SERVING_MODEL_URI``)."""
    if setting not in SETTINGS:
        raise KeyError(f"{setting!r} is not a setting of the model server; its settings: {', '.join(sorted(SETTINGS))}")
    return PREFIX + setting.upper()
