"""Model loading: an MLflow URI, an `s3://` prefix or a local path -> a ready-to-run :class:`LoadedModel`.

Supported sources:

- ``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``runs:/<run>/<path>``: downloaded with MLflow
  from the tracking server (``MLPLAT_SERVING_MLFLOW_TRACKING_URI`` or ``MLFLOW_TRACKING_URI``);
- ``s3://bucket/prefix``: every object under the prefix, with boto3 (endpoint overridable for S3-compatible
  stores), or one object when the URI names a file;
- a local path: an MLflow model directory (the ``pytorch`` flavor) or a TorchScript file.

MLflow models logged with ``serialization_format="pt2"`` (torch.export) load without running any code from the
file; pickle-serialized ones need ``allow_pickle`` (MLflow itself refuses them by default). The input contract
comes from the MLflow signature (one tensor input, or numeric columns), else from the saved input example.
Drift reference statistics are read from ``reference_stats.json`` in the model directory
(see :mod:`mlplat.serving.drift`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlplat.contracts.reference_stats import LOCATIONS, ReferenceStats
from mlplat.serving.redaction import redact
from mlplat.serving.schema import TensorSpec
from mlplat.serving.settings import MODELS_URI, ServingSettings

logger = logging.getLogger("mlplat.serving")

REFERENCE_STATS_FILES = LOCATIONS


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message names the source and what to do about it.

    Raised as is when the model is not there (yet): not registered, not written, the store unreachable.
    """


class ModelRefused(ModelLoadError):
    """The model was found but mlplat will not serve it (pickle without trust, wrong flavor or contract, ...)."""


@dataclass
class LoadedModel:
    """A model ready to serve: the torch module, its contract and where it came from."""

    module: Callable[[torch.Tensor], Any]
    name: str
    version: str
    source: str
    input_spec: TensorSpec | None = None
    output_spec: TensorSpec | None = None
    reference_stats: ReferenceStats | None = None
    input_example: np.ndarray | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    platform: str = "pytorch"
    load_seconds: float = 0.0

    def predict(self, x: np.ndarray) -> np.ndarray:
        """One forward pass on a batch of rows, under `torch.inference_mode`; returns one output row per input row."""
        with torch.inference_mode():
            batch = torch.from_numpy(x)
            if self.device.type != "cpu":
                batch = batch.to(self.device, non_blocking=True)
            output = self.module(batch)
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"the model returned {type(output).__name__}; mlplat serves models that return a tensor"
                )
            if output.dtype not in (torch.float16, torch.float32, torch.float64) and output.is_floating_point():
                output = output.float()  # bfloat16 and friends have no numpy dtype
            result = output.detach().cpu().numpy()
        if result.ndim == 0 or result.shape[0] != x.shape[0]:
            raise ValueError(f"the model returned shape {list(result.shape)} for {x.shape[0]} input rows")
        return np.ascontiguousarray(result)

    def warm_up(self, max_batch_size: int) -> None:
        """Run the model once on a full batch and on one row so the first requests pay no start-up costs.

        It also learns the output contract when the signature has none, and fails early, with advice, for a
        model exported with a fixed batch size.
        """
        sample = self._sample_row()
        if sample is None:
            logger.warning("no input shape known (no signature or input example): skipping warm-up")
            return
        one = self.predict(sample)
        try:
            self.predict(np.repeat(sample, max_batch_size, axis=0))
        except Exception as exc:
            if max_batch_size > 1:
                raise ModelRefused(
                    f"model {self.source!r} runs on one row but fails on a batch of {max_batch_size} ({exc}). "
                    "A torch.export (pt2) model logged with a one-row input example has a fixed batch size: "
                    "log it with an input example of 2+ rows, or serve it with MLPLAT_SERVING_MAX_BATCH_SIZE=1."
                ) from exc
            raise
        if self.output_spec is None:
            self.output_spec = TensorSpec("output-0", one.dtype, (-1, *one.shape[1:]))

    def _sample_row(self) -> np.ndarray | None:
        spec = self.input_spec
        if spec is not None and all(d >= 0 for d in spec.row_shape):
            return np.zeros((1, *spec.row_shape), dtype=spec.dtype)
        if self.input_example is not None and self.input_example.ndim >= 1 and len(self.input_example):
            return np.ascontiguousarray(self.input_example[:1])
        return None


def select_device(setting: str) -> torch.device:
    """`auto` -> the first CUDA device when there is one, else the CPU; other values are taken as given."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {setting!r} requested but CUDA is not available here")
    return device


def load_model(settings: ServingSettings) -> LoadedModel:
    """Fetch, load and warm up the model that `settings.model_uri` names; raises :class:`ModelLoadError`."""
    started = time.perf_counter()
    uri = settings.model_uri
    device = select_device(settings.device)
    registry_name, version = None, None
    with contextlib.ExitStack() as stack:
        if uri.startswith(("models:/", "runs:/")):
            local = _download_mlflow(uri, stack.enter_context(tempfile.TemporaryDirectory()), settings)
            registry_name, version = _registry_identity(uri, settings)
        elif uri.startswith("s3://"):
            local = _download_s3(uri, stack.enter_context(tempfile.TemporaryDirectory()), settings.s3_endpoint_url)
        else:
            local = Path(uri.removeprefix("file://")).expanduser()
            if not local.exists():
                raise ModelLoadError(
                    f"model path {str(local)!r} does not exist (expected an MLflow model directory, a TorchScript "
                    "file, or a models:/, runs:/ or s3:// URI)"
                )
        if (local / "MLmodel").is_file():
            model = _load_mlflow_dir(local, device, settings.allow_pickle)
        elif local.is_file():
            model = _load_torchscript(local, device)
        else:
            raise ModelRefused(f"{uri!r} is neither an MLflow model directory (no MLmodel file) nor a TorchScript file")
    model.source = uri
    _settle_input_spec(model, settings.input_shape)
    model.name = settings.model_name or registry_name or model.name
    model.version = settings.model_version or version or model.version
    model.warm_up(settings.max_batch_size)
    model.load_seconds = time.perf_counter() - started
    logger.info(
        "model loaded",
        extra={
            "model": model.name,
            "version": model.version,
            "seconds": round(model.load_seconds, 3),
            "device": str(device),
        },
    )
    return model


def _settle_input_spec(model: LoadedModel, configured: tuple[int, ...] | None) -> None:
    """Give a model without a signature (or input example) its row shape, so requests of another shape are 422.

    From `configured` (``MLPLAT_SERVING_INPUT_SHAPE``) when given, which must agree with a signature if there is
    one; otherwise, learned from the module: the input width of its first 2-D weight (``nn.Linear``), kept only
    if a forward pass on rows of that width works.
    """
    spec = model.input_spec
    if configured is not None:
        if spec is not None and any(w not in (-1, c) for w, c in zip(spec.row_shape, configured, strict=False)):
            raise ModelRefused(
                f"MLPLAT_SERVING_INPUT_SHAPE {list(configured)} contradicts the model's signature "
                f"{list(spec.row_shape)}"
            )
        if spec is None or len(spec.row_shape) != len(configured) or -1 in spec.row_shape:
            dtype = spec.dtype if spec is not None else np.dtype(np.float32)
            model.input_spec = TensorSpec(spec.name if spec else "input-0", dtype, (-1, *configured))
        return
    if spec is not None:
        return
    width = _first_layer_width(model.module)
    if width is None:
        logger.warning(
            "the model has no signature or input example and its input width cannot be learned: set "
            "MLPLAT_SERVING_INPUT_SHAPE, or requests of a wrong shape fail inside the model (500)"
        )
        return
    try:
        model.predict(np.zeros((2, width), dtype=np.float32))
    except Exception as exc:
        logger.warning(
            "input width %d from the first layer does not run (%s); set MLPLAT_SERVING_INPUT_SHAPE", width, exc
        )
        return
    model.input_spec = TensorSpec("input-0", np.dtype(np.float32), (-1, width))
    logger.info(
        "no signature: rows of %d float32 values, learned from the model's first layer "
        "(MLPLAT_SERVING_INPUT_SHAPE overrides)",
        width,
    )


def _first_layer_width(module: Any) -> int | None:
    parameters = getattr(module, "parameters", None)
    if parameters is None:
        return None
    try:
        first = next(iter(parameters()), None)
    except Exception:
        return None
    if first is None or first.ndim != 2:
        return None
    return int(first.shape[1])


@contextlib.contextmanager
def _mlflow_tracking(settings: ServingSettings) -> Iterator[None]:
    import mlflow

    previous = mlflow.get_tracking_uri() if settings.mlflow_tracking_uri else None
    if settings.mlflow_tracking_uri:
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    try:
        yield
    finally:
        if previous is not None:
            mlflow.set_tracking_uri(previous)


def _download_mlflow(uri: str, destination: str, settings: ServingSettings) -> Path:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    from mlflow.exceptions import MlflowException

    with _mlflow_tracking(settings):
        tracking = redact(mlflow.get_tracking_uri())  # the server asked, not the default restored afterwards
        try:
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=destination))
        except MlflowException as exc:
            raise ModelLoadError(f"could not fetch {uri!r} from MLflow ({tracking}): {exc.message}") from None
        except OSError as exc:
            raise ModelLoadError(f"could not fetch {uri!r} from MLflow ({tracking}): {exc}") from None


def _registry_identity(uri: str, settings: ServingSettings) -> tuple[str | None, str | None]:
    """(registered name, version) for `models:/` URIs; the run id stands in as the version of `runs:/` URIs."""
    if uri.startswith("runs:/"):
        return None, uri.removeprefix("runs:/").split("/", 1)[0] or None
    match = MODELS_URI.match(uri)
    if match is None:
        return None, None
    name, alias, version = match["name"], match["alias"], match["version"]
    if alias:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        try:
            with _mlflow_tracking(settings):
                version = str(MlflowClient().get_model_version_by_alias(name, alias).version)
        except MlflowException as exc:
            raise ModelLoadError(f"could not resolve {uri!r} in MLflow: {exc.message}") from None
    elif version is not None and not version.isdigit():
        version = None  # a stage name or a logged-model id: the model's uuid identifies it better
    return (None if name.startswith("m-") else name), version


def _download_s3(uri: str, destination: str, endpoint_url: str | None) -> Path:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise ModelLoadError(f"{uri!r} names no bucket; expected s3://bucket/prefix")
    client = boto3.client("s3", endpoint_url=endpoint_url)
    root = Path(destination)
    try:
        folder = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
        keys = [
            obj["Key"]
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder)
            for obj in page.get("Contents", [])
            if not obj["Key"].endswith("/")
        ]
        if not keys and prefix:  # the URI names a single object (a TorchScript file)
            target = root / Path(prefix).name
            client.download_file(bucket, prefix, str(target))
            return target
        if not keys:
            raise ModelLoadError(f"no objects under {uri!r}")
        for key in keys:
            target = root / key[len(folder) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(target))
        return root
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise ModelLoadError(
            f"could not fetch {uri!r}: {error.get('Code', '?')}: {error.get('Message', exc)}"
        ) from None
    except BotoCoreError as exc:
        raise ModelLoadError(f"could not fetch {uri!r}: {exc}") from None


def _load_mlflow_dir(path: Path, device: torch.device, allow_pickle: bool) -> LoadedModel:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    meta = Model.load(str(path))
    if "pytorch" not in meta.flavors:
        raise ModelRefused(
            f"{path} is an MLflow model with flavors {sorted(meta.flavors)}; mlplat serves 'pytorch' models"
        )
    data_dir = path / meta.flavors["pytorch"].get("model_data", "data")
    pickled = (data_dir / "model.pth").exists()
    if pickled and not allow_pickle:
        raise ModelRefused(
            f"{path} holds a pickle-serialized model, which runs code from the file when loaded. Log it with "
            "mlflow.pytorch.log_model(..., serialization_format='pt2'), or, for a trusted source, set "
            "MLPLAT_SERVING_ALLOW_PICKLE=true"
        )
    try:
        with _pickle_allowed(pickled):
            module = mlflow.pytorch.load_model(str(path), device=str(device))
    except (MlflowException, RuntimeError, OSError, ImportError, AttributeError) as exc:
        raise ModelRefused(f"could not load the torch model in {path}: {exc}") from None
    # MLflow already put pickled models in eval mode; exported (pt2) programs have no train mode to leave.
    input_spec, output_spec = _signature_specs(meta)
    example = _input_example(meta, path)
    if input_spec is None and example is not None:
        input_spec = TensorSpec("input-0", example.dtype, (-1, *example.shape[1:]))
    return LoadedModel(
        module=module,
        name=_sanitize_name(path.name),
        version=meta.model_uuid or _digest(path / "MLmodel"),
        source=str(path),
        input_spec=input_spec,
        output_spec=output_spec,
        reference_stats=_reference_stats(path),
        input_example=example,
        device=device,
        platform="pytorch",
    )


@contextlib.contextmanager
def _pickle_allowed(allowed: bool) -> Iterator[None]:
    """MLflow reads its pickle opt-in from the environment; set it only for the one load we were told to trust."""
    name = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
    previous = os.environ.get(name)
    if allowed:
        os.environ[name] = "true"
    try:
        yield
    finally:
        if allowed:
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous


def _signature_specs(meta: Any) -> tuple[TensorSpec | None, TensorSpec | None]:
    signature = meta.signature
    if signature is None:
        return None, None
    return _schema_spec(signature.inputs, "input-0"), _schema_spec(signature.outputs, "output-0")


def _schema_spec(schema: Any, default_name: str) -> TensorSpec | None:
    if schema is None or not schema.inputs:
        return None
    if schema.is_tensor_spec():
        if len(schema.inputs) != 1:
            raise ModelRefused(
                f"the signature has {len(schema.inputs)} tensors ({schema.input_names()}); "
                "mlplat serves models with one input tensor"
            )
        tensor = schema.inputs[0]
        shape = tuple(int(d) for d in tensor.shape)
        if not shape or shape[0] != -1:
            shape = (-1, *shape)  # mlplat batches along the first dimension
        return TensorSpec(tensor.name or default_name, np.dtype(tensor.type), shape)
    # Column-based signature (a DataFrame): numeric columns become the features of a float32 row.
    kinds = {str(col.type) for col in schema.inputs}
    if not kinds <= {"double", "float", "long", "integer", "boolean"}:
        raise ModelRefused(f"the signature has non-numeric columns ({sorted(kinds)}); mlplat serves numeric inputs")
    return TensorSpec(default_name, np.dtype(np.float32), (-1, len(schema.inputs)))


def _input_example(meta: Any, path: Path) -> np.ndarray | None:
    try:
        example = meta.load_input_example(str(path))
    except Exception as exc:  # a malformed example must not stop serving; it only helps warm-up
        logger.warning("could not read the model's input example: %s", exc)
        return None
    if example is None:
        return None
    array = np.asarray(example)
    return array if array.dtype.kind in "biuf" and array.ndim >= 1 else None


def _reference_stats(path: Path) -> ReferenceStats | None:
    from pydantic import ValidationError

    for name in REFERENCE_STATS_FILES:
        candidate = path / name
        if candidate.is_file():
            try:
                return ReferenceStats.model_validate_json(candidate.read_bytes())
            except ValidationError as exc:
                raise ModelRefused(f"{candidate} is not valid reference statistics: {exc}") from None
    return None


def _load_torchscript(path: Path, device: torch.device) -> LoadedModel:
    try:
        module = torch.jit.load(str(path), map_location=device)
    except RuntimeError as exc:
        raise ModelRefused(
            f"{path} is not a TorchScript file ({str(exc).splitlines()[0]}); serve other torch models as MLflow models"
        ) from None
    module.eval()
    return LoadedModel(
        module=module,
        name=_sanitize_name(path.stem),
        version=_digest(path),
        source=str(path),
        device=device,
        platform="pytorch_torchscript",
    )


def _sanitize_name(name: str) -> str:
    """A name safe in a URL path segment (V2 routes are /v2/models/<name>)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "model"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
