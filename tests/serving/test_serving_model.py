"""Model loading from every supported source, with real MLflow (sqlite), a real S3 API (moto's server) and torch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
import pytest
import torch
from support.serving import FEATURES, forward, make_mlp, run_server, save_mlflow_model, training_inputs

from mlplat.serving.app import create_app
from mlplat.serving.model import LoadedModel, ModelLoadError, ModelRefused, load_model, select_device
from mlplat.serving.schema import TensorSpec
from mlplat.serving.settings import ServingSettings


def load(uri: str | Path, **settings: Any) -> LoadedModel:
    return load_model(ServingSettings(model_uri=str(uri), **settings))


def assert_serves_like(model: LoadedModel, module: torch.nn.Module) -> None:
    rows = training_inputs(4, seed=5)
    np.testing.assert_allclose(model.predict(rows), forward(module, rows), rtol=1e-6)


def test_an_mlflow_model_directory_loads_with_its_contract(mlflow_model_dir: Path, mlp: torch.nn.Module) -> None:
    model = load(mlflow_model_dir)
    assert model.name == "mlp"
    assert len(model.version) == 32  # the MLflow model uuid
    assert model.input_spec is not None and model.input_spec.shape == (-1, FEATURES)
    assert model.input_spec.datatype == "FP32"
    assert model.output_spec is not None and model.output_spec.shape == (-1, 3)
    assert model.reference_stats is not None and len(model.reference_stats.features) == FEATURES
    assert model.load_seconds > 0
    assert_serves_like(model, mlp)


def test_name_and_version_can_be_set(mlflow_model_dir: Path) -> None:
    model = load(mlflow_model_dir, model_name="digits", model_version="7")
    assert (model.name, model.version) == ("digits", "7")


def test_a_pickled_model_needs_explicit_trust(tmp_path: Path) -> None:
    module = make_mlp(seed=1)
    path = save_mlflow_model(module, tmp_path / "pickled", serialization_format="pickle")
    with pytest.raises(ModelLoadError, match=r"pickle-serialized.*MLPLAT_SERVING_ALLOW_PICKLE=true"):
        load(path)
    assert_serves_like(load(path, allow_pickle=True), module)


def test_a_torchscript_file_loads(tmp_path: Path) -> None:
    module = make_mlp(seed=2)
    path = tmp_path / "scripted.pt"
    torch.jit.script(module).save(str(path))
    model = load(path)
    assert model.name == "scripted"
    assert model.platform == "pytorch_torchscript"
    # No signature: the row width is learned from the first layer, so a wrong shape is the caller's error (422).
    assert model.input_spec == TensorSpec("input-0", np.dtype(np.float32), (-1, FEATURES))
    assert_serves_like(model, module)


class _NoWeights(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=1, keepdim=True)


def test_input_shape_setting_gives_a_signatureless_model_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "sum.pt"
    torch.jit.script(_NoWeights()).save(str(path))
    assert load(path).input_spec is None  # nothing to learn it from
    model = load(path, input_shape="3,2")
    assert model.input_spec == TensorSpec("input-0", np.dtype(np.float32), (-1, 3, 2))


def test_an_input_shape_that_contradicts_the_signature_is_refused(mlflow_model_dir: Path) -> None:
    with pytest.raises(ModelRefused, match=r"INPUT_SHAPE \[5\] contradicts the model's signature \[8\]"):
        load(mlflow_model_dir, input_shape="5")


def test_an_exported_model_with_a_fixed_batch_size_fails_with_advice(tmp_path: Path) -> None:
    path = save_mlflow_model(make_mlp(), tmp_path / "fixed", example_rows=1, reference_stats=False)
    with pytest.raises(ModelLoadError, match=r"fixed batch size.*input example of 2\+ rows"):
        load(path, max_batch_size=8)
    assert load(path, max_batch_size=1).input_spec is not None


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("/no/such/model", "does not exist"),
        ("s3://", "names no bucket"),  # the settings refuse it first; this checks the loader's own guard
    ],
)
def test_bad_sources_fail_with_a_clear_message(uri: str, message: str) -> None:
    settings = ServingSettings(model_uri="/m").model_copy(update={"model_uri": uri})  # past the settings' checks
    with pytest.raises(ModelLoadError, match=message):
        load_model(settings)


def test_a_directory_that_is_not_a_model_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="neither an MLflow model directory"):
        load(tmp_path)
    other = tmp_path / "sk"
    other.mkdir()
    (other / "MLmodel").write_text("flavors:\n  sklearn:\n    pickled_model: model.pkl\n")
    with pytest.raises(ModelLoadError, match="flavors \\['sklearn'\\]; mlplat serves 'pytorch' models"):
        load(other)


def test_reference_stats_are_found_at_the_top_of_the_model_directory(tmp_path: Path) -> None:
    """Where the trainer writes them (next to MLmodel), as well as under extra_files/."""
    path = save_mlflow_model(make_mlp(), tmp_path / "m")
    (path / "extra_files" / "reference_stats.json").rename(path / "reference_stats.json")
    stats = load(path).reference_stats
    assert stats is not None and [f.name for f in stats.features][:2] == ["f0", "f1"]


def test_invalid_reference_stats_are_reported(tmp_path: Path) -> None:
    path = save_mlflow_model(make_mlp(), tmp_path / "m")
    (path / "extra_files" / "reference_stats.json").write_text('{"n_samples": 0, "features": []}')
    with pytest.raises(ModelLoadError, match="not valid reference statistics"):
        load(path)


def test_cuda_is_refused_where_there_is_none() -> None:
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            select_device("cuda:0")


# -- S3 ---------------------------------------------------------------------------------------------------


def test_a_model_directory_loads_from_s3(moto_endpoint: str, mlflow_model_dir: Path, mlp: torch.nn.Module) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    s3.create_bucket(Bucket="models")
    for file in mlflow_model_dir.rglob("*"):
        if file.is_file():
            s3.upload_file(str(file), "models", f"prod/mlp/{file.relative_to(mlflow_model_dir)}")
    model = load("s3://models/prod/mlp", s3_endpoint_url=moto_endpoint)
    assert model.input_spec is not None and model.reference_stats is not None
    assert_serves_like(model, mlp)


def test_a_torchscript_object_loads_from_s3(moto_endpoint: str, tmp_path: Path) -> None:
    module = make_mlp(seed=3)
    path = tmp_path / "scripted.pt"
    torch.jit.script(module).save(str(path))
    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    s3.create_bucket(Bucket="files")
    s3.upload_file(str(path), "files", "a/scripted.pt")
    assert_serves_like(load("s3://files/a/scripted.pt", s3_endpoint_url=moto_endpoint), module)


def test_a_missing_bucket_names_the_s3_error(moto_endpoint: str) -> None:
    with pytest.raises(ModelLoadError, match=r"s3://nope/x.*NoSuchBucket"):
        load("s3://nope/x", s3_endpoint_url=moto_endpoint)


# -- the MLflow registry --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A local MLflow (sqlite) with `digits` registered twice and alias `champion` on version 2.

    Yields (tracking URI, id of the run that logged version 2).
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    root = tmp_path_factory.mktemp("mlflow")
    tracking = f"sqlite:///{root}/mlflow.db"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking)
    try:
        experiment = mlflow.create_experiment("serving-tests", artifact_location=(root / "artifacts").as_uri())
        for seed in (10, 11):
            module = make_mlp(seed)
            example = training_inputs(4)
            with mlflow.start_run(experiment_id=experiment) as run:
                mlflow.pytorch.log_model(
                    module,
                    name="model",
                    signature=infer_signature(example, forward(module, example)),
                    input_example=example,
                    serialization_format="pt2",
                    pip_requirements=["torch"],
                    registered_model_name="digits",
                )
        MlflowClient().set_registered_model_alias("digits", "champion", "2")
        yield tracking, run.info.run_id
    finally:
        mlflow.set_tracking_uri(previous)


def test_a_registered_model_loads_by_alias(registry: tuple[str, str]) -> None:
    tracking, _ = registry
    model = load("models:/digits@champion", mlflow_tracking_uri=tracking)
    assert (model.name, model.version) == ("digits", "2")
    assert_serves_like(model, make_mlp(11))
    by_version = load("models:/digits/1", mlflow_tracking_uri=tracking)
    assert (by_version.name, by_version.version) == ("digits", "1")
    assert_serves_like(by_version, make_mlp(10))


def test_the_server_loads_a_registered_model_at_start_up(registry: tuple[str, str]) -> None:
    tracking, _ = registry
    settings = ServingSettings(model_uri="models:/digits@champion", mlflow_tracking_uri=tracking)
    rows = training_inputs(3, seed=9)
    with run_server(create_app(settings)) as live:
        response = httpx.post(f"{live.url}/predict", json={"inputs": rows.tolist()}, timeout=30)
        metadata = httpx.get(f"{live.url}/v2/models/digits", timeout=30).json()
    assert response.status_code == 200
    assert response.json()["model_version"] == "2"
    np.testing.assert_allclose(response.json()["predictions"], forward(make_mlp(11), rows), rtol=1e-5, atol=1e-6)
    assert metadata["versions"] == ["2"]


def test_a_run_artifact_uri_loads_with_the_run_id_as_version(registry: tuple[str, str]) -> None:
    tracking, run_id = registry
    model = load(f"runs:/{run_id}/model", mlflow_tracking_uri=tracking)
    assert model.version == run_id
    assert_serves_like(model, make_mlp(11))


def test_an_unknown_alias_fails_with_the_registry_message(registry: tuple[str, str]) -> None:
    tracking, _ = registry
    with pytest.raises(ModelLoadError, match="models:/digits@nope"):
        load("models:/digits@nope", mlflow_tracking_uri=tracking)
