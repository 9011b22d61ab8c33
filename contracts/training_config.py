"""The trainer's typed config (`training.yaml`), loaded with errors that name the field and what is allowed.

Every section forbids unknown keys, so a typo (`learning_rate:` for `lr:`) fails loudly instead of being
silently ignored. Load with :func:`load_config`; it raises :class:`ConfigError` listing every problem.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

BUILTIN_DATA = ("digits",)
BUILTIN_MODELS = ("mlp",)
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
# MLflow's alias rules: letters, digits, '_' and '-'; "latest" and "v<digits>" are reserved.
_ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class ConfigError(ValueError):
    """The config is missing or invalid; :attr:`problems` holds one readable line per problem."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid training config ({source}):\n{lines}")


class _Section(BaseModel):
    # No NaN or infinity anywhere: `lr: .inf` or `max_grad_norm: .nan` is a config error, not a diverged run.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _check_source(value: str, builtins: tuple[str, ...]) -> str:
    if value in builtins or _IMPORT_PATH.match(value):
        return value
    raise ValueError(
        f"must be a built-in ({', '.join(builtins)}) or an import path 'package.module:function', got {value!r}"
    )


class DataValidationConfig(_Section):
    """Thresholds for the checks run on the data before training."""

    max_class_imbalance: float = Field(default=10.0, ge=1.0)
    """Largest over smallest class count in the training split; above this the data is rejected."""
    max_duplicate_rows: NonNegativeInt = 0
    """Rows allowed to appear in both train and validation/test (leakage); 0 rejects any."""


class DataConfig(_Section):
    """Where the data comes from and how it is split."""

    source: str = "digits"
    """`digits` (scikit-learn's bundled set, no download) or `package.module:build`, a callable taking
    ``options`` as keyword arguments and returning either ``(x, y)`` or a `DataSplits`."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for a custom `source` builder."""
    val_fraction: float = Field(default=0.15, gt=0.0, lt=0.5)
    """Share of rows held out for per-epoch validation (when the builder returns ``(x, y)``)."""
    test_fraction: float = Field(default=0.15, gt=0.0, lt=0.5)
    """Share of rows held out for the evaluation gate, never seen during training."""
    validation: DataValidationConfig = Field(default_factory=DataValidationConfig)

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        return _check_source(value, BUILTIN_DATA)

    @model_validator(mode="after")
    def _fractions(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                f"val_fraction + test_fraction must leave at least 10% for training, "
                f"got {self.val_fraction} + {self.test_fraction}"
            )
        return self


class ModelConfig(_Section):
    """The network: the built-in MLP classifier or a team's own builder."""

    source: str = "mlp"
    """`mlp` or `package.module:build`, called as ``build(input_dim=, num_classes=, **options)`` and
    returning a ``torch.nn.Module`` that maps float32 ``[batch, input_dim]`` to logits."""
    hidden_sizes: list[PositiveInt] = Field(default_factory=lambda: [64])
    """Hidden layer widths of the built-in MLP."""
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout after each hidden layer of the built-in MLP."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for a custom `source` builder."""

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        return _check_source(value, BUILTIN_MODELS)

    @model_validator(mode="after")
    def _options_only_for_custom(self) -> ModelConfig:
        if self.source in BUILTIN_MODELS and self.options:
            raise ValueError("options are for custom builders; the built-in 'mlp' takes hidden_sizes and dropout")
        return self


class OptimizerConfig(_Section):
    """Optimizer and gradient clipping."""

    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: PositiveFloat = 1e-3
    weight_decay: float = Field(default=0.0, ge=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    """Used by `sgd` only."""
    max_grad_norm: PositiveFloat | None = None
    """Clip the global gradient norm to this value; unset means no clipping."""


class ScheduleConfig(_Section):
    """Learning-rate schedule, stepped once per optimizer step."""

    name: Literal["constant", "cosine", "step"] = "constant"
    warmup_steps: NonNegativeInt = 0
    """Linear warm-up from 1% of `lr` over this many steps, before the schedule proper."""
    step_size: PositiveInt = 1000
    """`step`: multiply the lr by `gamma` every `step_size` steps."""
    gamma: float = Field(default=0.5, gt=0.0, le=1.0)
    min_lr: float = Field(default=0.0, ge=0.0)
    """`cosine`: the lr reached at the last step."""


class CheckpointConfig(_Section):
    """Where and how often checkpoints are written."""

    uri: str = "checkpoints"
    """A local directory or ``s3://bucket/prefix``: one job's lineage. It holds the checkpoints of one attempt
    at a time (a Job run and its retries; see ``mlplat.training.lineage``), so give each job its own."""
    every_n_steps: PositiveInt | None = 100
    """Checkpoint every N optimizer steps (and always at the end of each epoch); unset: epoch ends only."""
    keep_last: PositiveInt = 3
    """How many checkpoints to keep; older ones are deleted after a new one is complete."""
    resume: bool = True
    """Resume from the newest valid checkpoint of the current attempt (never across attempts); false: every
    run starts a fresh attempt."""
    s3_endpoint_url: str | None = None
    """S3-compatible endpoint (MinIO, moto); unset: boto3's default, which honours ``AWS_ENDPOINT_URL_S3``."""

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a local directory or s3://bucket/prefix, got an empty string")
        if "://" in value:
            scheme, rest = value.split("://", 1)
            if scheme != "s3":
                raise ValueError(f"scheme {scheme!r} is not supported; use a local path or s3://bucket/prefix")
            if not rest.split("/", 1)[0]:
                raise ValueError(f"s3 URI {value!r} has no bucket; expected s3://bucket/prefix")
        return value


class RetryConfig(_Section):
    """Retries of transient faults of the tracking server and the checkpoint store (outages, 5xx, throttling).

    Failed calls are retried with exponential backoff (full jitter) for up to `budget_seconds`; per-step
    metrics are buffered meanwhile and sent when the server is back. A fault that outlasts the budget
    stops the run with a final checkpoint and exit 75 (which the TrainingJob retries); a permanent error
    (permission denied, a bad request) fails at once.
    """

    budget_seconds: PositiveFloat = 600.0
    """How long one fault may last before the run checkpoints and exits 75."""
    initial_backoff_seconds: PositiveFloat = 1.0
    max_backoff_seconds: PositiveFloat = 30.0


class TrackingConfig(_Section):
    """MLflow tracking."""

    experiment: str = Field(default="mlplat", min_length=1)
    tracking_uri: str | None = None
    """Unset: ``MLFLOW_TRACKING_URI`` from the environment, else a local ``sqlite:///mlflow.db``."""
    run_name: str | None = None
    log_every_n_steps: PositiveInt = 10
    """Per-step metrics (loss, lr, throughput) are logged every N steps, asynchronously."""
    flush_seconds: PositiveFloat = 5.0
    """Buffered per-step metrics are sent at most this often (in one batch, from a background thread)."""


class RegistryConfig(_Section):
    """Model registration after the gate passes."""

    model_name: str | None = None
    """Registered model name; unset: train and evaluate but do not register."""
    alias: str = "staging"
    """Alias set on the new version (serving loads ``models:/<name>@<alias>``)."""
    serialization_format: Literal["pt2", "pickle"] = "pt2"
    """``pt2``: a torch.export program, which loads without running code from the file, so the model server
    needs no pickle trust (batch size stays dynamic: the input example has 5 rows). ``pickle``: the whole
    ``nn.Module``, for a team model torch.export cannot trace; serve it with ``allow_pickle``."""

    @field_validator("alias")
    @classmethod
    def _alias(cls, value: str) -> str:
        return check_alias(value)


class GateConfig(_Section):
    """The evaluation gate on the held-out test split."""

    min_accuracy: float = Field(default=0.0, ge=0.0, le=1.0)
    min_macro_f1: float = Field(default=0.0, ge=0.0, le=1.0)
    must_beat_champion: bool = False
    """Also require accuracy and macro F1 >= the current champion's + `min_improvement` on the same split."""
    champion_alias: str = "champion"
    min_improvement: float = Field(default=0.0, ge=0.0, le=1.0)

    @field_validator("champion_alias")
    @classmethod
    def _alias(cls, value: str) -> str:
        return check_alias(value)


class RuntimeConfig(_Section):
    """Device and reproducibility knobs."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: CUDA when available (one GPU per process, `LOCAL_RANK`), else CPU."""
    deterministic: bool = True
    """Use torch's deterministic algorithms (warn where an op has none)."""
    num_threads: PositiveInt | None = None
    """CPU threads for torch; fixing it makes CPU results bit-identical across machines' core counts."""


class TrainingConfig(_Section):
    """The whole training run: data, model, optimizer, schedule, checkpoints, tracking, gate."""

    seed: NonNegativeInt = 0
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 64
    """Per process; under torchrun the global batch is `batch_size` x world size."""
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)

    @model_validator(mode="after")
    def _champion_needs_a_name(self) -> TrainingConfig:
        if self.gate.must_beat_champion and not self.registry.model_name:
            raise ValueError("gate.must_beat_champion needs registry.model_name (whose champion to beat)")
        return self

    def fingerprint(self) -> str:
        """Hash of what determines the trained weights (not where they are stored or logged)."""
        relevant = self.model_dump(include={"seed", "epochs", "batch_size", "data", "model", "optimizer", "schedule"})
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]

    def flat_params(self) -> dict[str, str]:
        """The config flattened to ``section.key -> str`` for MLflow params."""
        out: dict[str, str] = {}

        def walk(prefix: str, value: Any) -> None:
            """Descend into mappings; lists and scalars become one param each."""
            if isinstance(value, dict) and value:
                for key, item in value.items():
                    walk(f"{prefix}.{key}" if prefix else str(key), item)
            else:
                out[prefix] = json.dumps(value) if isinstance(value, list | dict) else str(value)

        walk("", self.model_dump())
        return out


def check_alias(value: str) -> str:
    """Validate an MLflow registry alias (raise ValueError saying what is allowed)."""
    if not _ALIAS.match(value) or value.lower() == "latest" or re.fullmatch(r"[vV]\d+", value):
        raise ValueError(
            f"alias {value!r} is not allowed: use letters, digits, '_' and '-', starting with a letter; "
            "'latest' and 'v<number>' are reserved"
        )
    return value


def _format_errors(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see mlplat.contracts.training_config for the fields)"
        got = "" if item["type"] in ("missing", "extra_forbidden") else f" (got {item['input']!r})"
        problems.append(f"{where}: {message}{got}")
    return problems


def _apply_override(raw: dict[str, Any], override: str, source: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(source, [f"override {override!r}: expected key.path=value"])
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(source, [f"override {override!r}: {part!r} is not a section"])
        node = child
    node[parts[-1]] = yaml.safe_load(text)


def parse_config(raw: Any, source: str = "<dict>", overrides: Sequence[str] = ()) -> TrainingConfig:
    """Validate an already-parsed mapping (plus ``key.path=value`` overrides) into a config."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, [f"the top level must be a mapping of sections, got {type(raw).__name__}"])
    raw = json.loads(json.dumps(raw))  # a deep copy, so overrides never touch the caller's dict
    for override in overrides:
        _apply_override(raw, override, source)
    try:
        return TrainingConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(source, _format_errors(error)) from None


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainingConfig:
    """Read and validate a YAML config file; raise :class:`ConfigError` naming each bad field."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except OSError as error:
        raise ConfigError(str(path), [f"cannot read: {error.strerror}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(str(path), [f"not valid YAML: {error}"]) from None
    return parse_config(raw, str(path), overrides)


def load_callable(path: str, field: str) -> Callable[..., Any]:
    """Import ``package.module:function`` named by config `field`; raise ConfigError if it cannot be."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(field, [f"{field}: cannot import module {module_name!r}: {error}"]) from None
    target = getattr(module, attr, None)
    if not callable(target):
        raise ConfigError(field, [f"{field}: {module_name!r} has no callable {attr!r}"])
    return target
