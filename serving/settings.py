"""Server settings, read from `MLPLAT_SERVING_*` environment variables (pydantic-settings).

Every knob has a production-safe default; `mlplat serve` options override the environment. A bad value
fails at start-up with the variable's name, the value given and what is allowed (:func:`load_settings`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mlplat.contracts.serving_env import PREFIX
from mlplat.serving.redaction import redact

ENV_PREFIX = PREFIX
# models:/<name>, models:/<name>@<alias>, models:/<name>/<version>
MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))?/?$")
_RUNS_URI = re.compile(r"^runs:/[^/]+/.+")
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+):/")
_SUPPORTED_SCHEMES = ("models", "runs", "s3", "file")
# Fields whose values may carry credentials (user:password@host): redacted in error messages.
_URI_FIELDS = frozenset({"model_uri", "mlflow_tracking_uri", "s3_endpoint_url"})


class SettingsError(ValueError):
    """Raised when the server's settings are invalid; the message names each bad variable."""


class ServingSettings(BaseSettings):
    """Everything the model server can be told. Field `x` is read from `MLPLAT_SERVING_X`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    model_uri: str = Field(
        min_length=1,
        description="Where the model lives: `models:/<name>@<alias>`, `models:/<name>/<version>`, `runs:/<id>/<path>`, "
        "`s3://bucket/prefix` or a local path (an MLflow model directory or a TorchScript file).",
    )
    model_name: str | None = Field(
        default=None, description="Name served under /v2/models/<name>; default: the registered or directory name."
    )
    model_version: str | None = Field(
        default=None, description="Version reported to clients; default: the registry version or the model's uuid."
    )
    host: str = Field(default="127.0.0.1", description="Interface to bind (the container image sets 0.0.0.0).")
    port: int = Field(default=8080, ge=0, le=65535)
    max_batch_size: int = Field(default=32, ge=1, le=4096, description="Most rows in one forward pass.")
    max_batch_delay_ms: float = Field(
        default=0.0,
        ge=0.0,
        le=1000.0,
        description="How long a forming batch may wait for more requests. 0 (the default) batches whatever queued "
        "while the previous forward ran, so a lone caller never waits for a window.",
    )
    queue_limit: int = Field(default=512, ge=1, description="Requests that may wait; beyond it the server answers 503.")
    request_timeout_s: float = Field(default=5.0, gt=0.0, description="Time from arrival to answer before a 504.")
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="Largest request body; larger is 413.")
    max_request_rows: int = Field(default=1024, ge=1, description="Most rows one request may carry (422 beyond).")
    header_timeout_s: float = Field(
        default=10.0,
        gt=0.0,
        le=600.0,
        description="A request's line and headers must arrive within this many seconds of the connection's start "
        "(or of a next request's first byte); then 408 and the connection is closed.",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0.0,
        le=600.0,
        description="A request's body must arrive within this many seconds of its headers; then 408 and close.",
    )
    keepalive_timeout_s: float = Field(
        default=5.0,
        gt=0.0,
        le=3600.0,
        description="An idle kept-alive connection is closed after this many seconds. Behind a load balancer "
        "that reuses connections, set it above the balancer's idle timeout (ALB: 60 s).",
    )
    max_connections: int = Field(
        default=1000,
        ge=8,
        description="Most open connections; a new one beyond it evicts an idle or slow one. Lowered "
        "automatically to stay clear of the file-descriptor limit.",
    )
    shed_hold_s: float = Field(
        default=1.0,
        ge=0.0,
        le=10.0,
        description="After an overload refusal (503 + Retry-After), the connection is not read again for this many "
        "seconds (at most the Retry-After given, half KEEPALIVE_TIMEOUT_S and a quarter of REQUEST_TIMEOUT_S): a "
        "client that retries at once waits in the kernel's buffer, costing the server nothing, instead of being "
        "refused again and again. 0 turns it off. Behind a load balancer that reuses connections, other callers' "
        "requests on a held connection wait too (the server is full then).",
    )
    max_header_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Largest request line plus headers; larger is 431 and the connection is closed.",
    )
    input_shape: Annotated[tuple[int, ...] | None, NoDecode] = Field(
        default=None,
        description="The shape of one input row (comma-separated, e.g. `64` or `3,32,32`) for a model whose "
        "signature and input example do not give it; requests of another shape are then 422. Unset: learned at "
        "load from the model's first layer where possible.",
    )
    api_key: SecretStr | None = Field(
        default=None, description="When set, every route but health and metrics needs `Authorization: Bearer <key>`."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS (comma-separated); empty (default) disables CORS."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = Field(default=False, description="Log one JSON line per request (costs ~20 us each).")
    device: str = Field(default="auto", description="`auto` (CUDA when available), `cpu`, `cuda` or `cuda:<n>`.")
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="torch intra-op threads; default: the CPUs allowed, less one for the event loop.",
    )
    allow_pickle: bool = Field(
        default=False,
        description="Allow loading pickle-serialized MLflow models (runs code from the file: trusted sources only). "
        "Models logged with serialization_format='pt2' need no such trust.",
    )
    drift_window: int = Field(default=2048, ge=10, description="Rows kept for drift statistics.")
    drain_delay_s: float = Field(
        default=5.0,
        ge=0.0,
        description="After SIGTERM, keep serving (readiness false, `Connection: close`) this long so load balancers "
        "stop routing here, then stop accepting and finish what was accepted.",
    )
    graceful_timeout_s: float = Field(default=30.0, gt=0.0, description="Most time to finish in-flight requests.")
    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow server for `models:/` and `runs:/` URIs (else MLflow's own default)."
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint for `s3://` URIs (else boto3's, e.g. AWS_ENDPOINT_URL_S3)."
    )
    load_retry_initial_s: float = Field(
        default=1.0,
        gt=0.0,
        le=3600.0,
        description="While the model cannot be loaded (not registered yet, MLflow down), the server stays up, unready, "
        "and retries: first after this many seconds, then twice as long each time.",
    )
    load_retry_max_s: float = Field(
        default=60.0, gt=0.0, le=3600.0, description="The longest wait between two load attempts (the backoff's cap)."
    )
    load_retry_jitter: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="Each wait is shortened by a random fraction up to this, so replicas do not retry in lockstep.",
    )

    @field_validator("model_uri")
    @classmethod
    def _check_model_uri(cls, value: str) -> str:
        # A malformed URI can never be fixed by waiting: it fails here, at start-up (exit status 2).
        scheme = _SCHEME.match(value)
        if scheme is not None and scheme["scheme"].lower() not in _SUPPORTED_SCHEMES:
            raise ValueError(
                f"unsupported URI scheme {scheme['scheme']!r}; use models:/, runs:/, s3://, file:// or a local path"
            )
        if value.startswith("models:") and not MODELS_URI.match(value):
            raise ValueError("a models: URI is models:/<name>@<alias> or models:/<name>/<version>")
        if value.startswith("runs:") and not _RUNS_URI.match(value):
            raise ValueError("a runs: URI is runs:/<run id>/<artifact path>")
        if value.startswith("s3:") and not value.removeprefix("s3://").split("/", 1)[0]:
            raise ValueError("an s3: URI is s3://<bucket>/<prefix>")
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        head, _, index = value.partition(":")
        if head not in {"auto", "cpu", "cuda"} or (index and (head != "cuda" or not index.isdigit())):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:<n>', not {value!r}")
        return value

    @field_validator("input_shape", mode="before")
    @classmethod
    def _split_shape(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",") if part.strip()]
            if not parts or not all(part.isdigit() and int(part) > 0 for part in parts):
                raise ValueError("input shape is positive sizes separated by commas, e.g. '64' or '3,32,32'")
            return tuple(int(part) for part in parts)
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @model_validator(mode="after")
    def _check_backoff(self) -> ServingSettings:
        if self.load_retry_max_s < self.load_retry_initial_s:
            raise ValueError(
                f"{ENV_PREFIX}LOAD_RETRY_MAX_S ({self.load_retry_max_s:g}) must be at least "
                f"{ENV_PREFIX}LOAD_RETRY_INITIAL_S ({self.load_retry_initial_s:g})"
            )
        return self

    @property
    def shed_hold_limit_s(self) -> float:
        """The hold after an overload refusal, kept under half the keep-alive timeout (a held connection is never
        closed as idle with its retry unread) and a quarter of the request timeout (a held retry counts the hold
        against its own deadline, and must keep most of it)."""
        return min(self.shed_hold_s, self.keepalive_timeout_s / 2, self.request_timeout_s / 4)

    @property
    def max_batch_delay_s(self) -> float:
        """The batch window in seconds."""
        return self.max_batch_delay_ms / 1000.0


def load_settings(**overrides: Any) -> ServingSettings:
    """Read settings from the environment; `overrides` (e.g. from CLI options) win over it.

    Raises :class:`SettingsError` whose message names each bad variable, the value and the rule it broke.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return ServingSettings(**given)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if not error["loc"]:  # a rule across fields: its message names them
                problems.append(error["msg"].removeprefix("Value error, "))
                continue
            field = str(error["loc"][0])
            option = "--model" if field == "model_uri" else f"--{field.replace('_', '-')}"  # as `mlplat serve` names it
            where = option if field in given else f"{ENV_PREFIX}{field.upper()}"
            secret = field == "api_key"
            got = "" if error["type"] == "missing" or secret else f" (got {error.get('input')!r})"
            problems.append(f"{where}: {error['msg']}{redact(got) if field in _URI_FIELDS else got}")
        raise SettingsError("invalid serving settings:\n  " + "\n  ".join(problems)) from None
