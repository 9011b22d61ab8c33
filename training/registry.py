"""MLflow model registry: register a gated model for serving, load an alias, move aliases (promote).

The registered model is an ``mlflow.pytorch`` model (a torch.export program by default, which the model
server loads without trusting pickles) with a float32 tensor signature, an input example,
explicit pip requirements (no slow environment inference) and ``reference_stats.json`` at the top of its
model directory: the training features' statistics that the model server's drift monitor compares
live traffic against (:mod:`mlplat.training.reference_stats`).
"""

from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from torch import nn

from mlplat.contracts.reference_stats import FILE_NAME

log = logging.getLogger(__name__)

REFERENCE_STATS_FILE = FILE_NAME


class RegistryError(RuntimeError):
    """A registry operation could not be done; the message says what is missing."""


def pip_requirements() -> list[str]:
    """Pinned requirements of the logged model: torch and cloudpickle (mlflow's defaults) plus mlflow."""
    import mlflow
    import mlflow.pytorch

    return [*mlflow.pytorch.get_default_pip_requirements(), f"mlflow=={mlflow.__version__}"]


class _PytorchWithReferenceStats:
    """An MLflow "flavor module" that saves with ``mlflow.pytorch`` and adds ``reference_stats.json``.

    ``mlflow.models.Model.log`` accepts any object with a ``save_model`` function as the flavor, which
    lets the statistics land next to ``MLmodel`` rather than under ``extra_files/``.
    """

    __name__ = "mlflow.pytorch"

    def __init__(self, reference_stats_json: str) -> None:
        self.reference_stats_json = reference_stats_json

    def save_model(self, path: str, **kwargs: Any) -> None:
        """Save as ``mlflow.pytorch`` does, then add the reference statistics next to ``MLmodel``."""
        import mlflow.pytorch

        mlflow.pytorch.save_model(path=path, **kwargs)
        (Path(path) / REFERENCE_STATS_FILE).write_text(self.reference_stats_json)


def reference_stats_json(x_train: NDArray[Any], feature_names: Sequence[str] | None = None) -> str:
    """The serving drift monitor's reference statistics of the training features, as JSON."""
    from mlplat.training.reference_stats import compute_reference_stats

    return compute_reference_stats(np.asarray(x_train, dtype=np.float32), feature_names).model_dump_json()


EXAMPLE_ROWS = 5
"""Rows of the logged input example: more than one, so torch.export keeps the batch dimension dynamic."""


def check_exportable(model: nn.Module, x_train: NDArray[Any]) -> None:
    """Raise :class:`~mlplat.contracts.training_config.ConfigError` if torch.export cannot trace ``model``.

    The trainer calls this before training when the model will be registered as ``pt2``, so an untraceable
    model (data-dependent Python control flow in ``forward``) fails in seconds, not after the whole job.
    """
    import torch

    from mlplat.contracts.training_config import ConfigError

    sample = torch.as_tensor(np.ascontiguousarray(x_train[:EXAMPLE_ROWS], dtype=np.float32))
    try:
        torch.export.export(copy.deepcopy(model).cpu().eval(), (sample,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            "registry.serialization_format",
            [
                f"registry.serialization_format: 'pt2' registers a torch.export program, and torch.export cannot "
                f"trace this {type(model).__name__} ({reason}); use 'pickle' (serve it with allow_pickle) or keep "
                "forward() free of Python control flow on tensor values"
            ],
        ) from error


def register_model(
    model: nn.Module,
    *,
    name: str,
    alias: str,
    x_train: NDArray[Any],
    num_classes: int,
    feature_names: Sequence[str] | None = None,
    tags: dict[str, str] | None = None,
    serialization_format: Literal["pt2", "pickle"] = "pt2",
) -> str:
    """Log ``model`` to the active MLflow run, register it as ``name`` and point ``alias`` at it.

    Returns the new version number. The model is logged from a CPU copy in eval mode so it loads on any
    machine; ``pt2`` exports it with torch.export, tracing the input example (:data:`EXAMPLE_ROWS` rows),
    ``pickle`` pickles the module.
    """
    import mlflow
    import mlflow.pytorch
    from mlflow.models import Model, ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    features = int(x_train.shape[1])
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, features))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes))]),
    )
    cpu_model = copy.deepcopy(model).cpu().eval()
    info = Model.log(
        artifact_path=None,  # deprecated in favour of `name`, but still a required argument
        name="model",
        flavor=_PytorchWithReferenceStats(reference_stats_json(x_train, feature_names)),
        registered_model_name=name,
        pytorch_model=cpu_model,
        signature=signature,
        input_example=np.ascontiguousarray(x_train[:EXAMPLE_ROWS], dtype=np.float32),
        pip_requirements=pip_requirements(),
        serialization_format=serialization_format,
    )
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, alias, version)
    log.info("registered %s version %s with alias %r", name, version, alias)
    return version


def find_version_for_run(name: str, run_id: str) -> str | None:
    """The version of ``name`` registered from MLflow run ``run_id``, if there is one (the newest)."""
    import mlflow

    versions = mlflow.MlflowClient().search_model_versions(f"name='{name}' and run_id='{run_id}'")
    return str(max(int(v.version) for v in versions)) if versions else None


def load_alias(name: str, alias: str) -> tuple[str, nn.Module] | None:
    """The version and model that ``name@alias`` points at, or None when there is no such alias."""
    import mlflow
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    # By the version just read, not the alias, which may move in between; into a folder of our own, which MLflow
    # would leave behind in the temp dir (torch reads the model whole, so the folder can go once it is loaded).
    with tempfile.TemporaryDirectory(prefix="mlplat-champion-") as downloaded:
        model = mlflow.pytorch.load_model(f"models:/{name}/{version.version}", dst_path=downloaded, map_location="cpu")
    return str(version.version), model


def promote(name: str, from_alias: str, to_alias: str, tracking_uri: str | None = None) -> tuple[str, str | None]:
    """Point ``to_alias`` at the version ``from_alias`` points at; return (version, previous version)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from mlplat.contracts.training_config import check_alias
    from mlplat.training.tracking import resolve_tracking_uri

    for alias in (from_alias, to_alias):
        try:
            check_alias(alias)
        except ValueError as error:
            raise RegistryError(str(error)) from None
    client = mlflow.MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise RegistryError(f"no registered model named {name!r}") from None
    try:
        source = client.get_model_version_by_alias(name, from_alias)
    except MlflowException:
        raise RegistryError(f"model {name!r} has no version with alias {from_alias!r}") from None
    try:
        previous: str | None = str(client.get_model_version_by_alias(name, to_alias).version)
    except MlflowException:
        previous = None
    client.set_registered_model_alias(name, to_alias, str(source.version))
    return str(source.version), previous
