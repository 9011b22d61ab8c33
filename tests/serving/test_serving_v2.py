"""The KServe V2 / Open Inference Protocol endpoints: request and response shapes as the spec defines them."""

from __future__ import annotations

import numpy as np
import pytest
from support.serving import FEATURES, LiveServer, forward, make_mlp, training_inputs


def infer_body(rows: np.ndarray, **overrides: object) -> dict[str, object]:
    tensor = {"name": "input-0", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}
    tensor.update(overrides)
    return {"id": "req-1", "inputs": [tensor]}


def test_health_endpoints(mlp_server: LiveServer) -> None:
    with mlp_server.client() as client:
        live = client.get("/v2/health/live")
        ready = client.get("/v2/health/ready")
        server = client.get("/v2")
    assert (live.status_code, live.json()) == (200, {"live": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    assert server.json()["name"] == "mlplat"
    assert server.json()["extensions"] == []
    assert isinstance(server.json()["version"], str)


def test_model_metadata_describes_the_signature(mlp_server: LiveServer) -> None:
    model = mlp_server.app.model
    assert model is not None
    with mlp_server.client() as client:
        metadata = client.get(f"/v2/models/{model.name}")
        versioned = client.get(f"/v2/models/{model.name}/versions/{model.version}")
        ready = client.get(f"/v2/models/{model.name}/ready")
        unknown = client.get("/v2/models/other")
        wrong_version = client.get(f"/v2/models/{model.name}/versions/999")
    assert metadata.status_code == 200
    assert metadata.json() == {
        "name": model.name,
        "versions": [model.version],
        "platform": "pytorch",
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, FEATURES]}],
        "outputs": [{"name": "output-0", "datatype": "FP32", "shape": [-1, 3]}],
    }
    assert versioned.json() == metadata.json()
    assert ready.json() == {"name": model.name, "ready": True}
    assert unknown.status_code == wrong_version.status_code == 404
    assert f"this server serves '{model.name}'" in unknown.json()["error"]


@pytest.mark.parametrize("nested", [False, True])
def test_infer_answers_typed_tensors_equal_to_the_forward(mlp_server: LiveServer, nested: bool) -> None:
    model = mlp_server.app.model
    assert model is not None
    rows = training_inputs(3, seed=7)
    body = infer_body(rows, data=rows.tolist() if nested else rows.ravel().tolist())
    with mlp_server.client() as client:
        response = client.post(f"/v2/models/{model.name}/infer", json=body)
        versioned = client.post(f"/v2/models/{model.name}/versions/{model.version}/infer", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_name"] == model.name
    assert answer["model_version"] == model.version
    assert answer["id"] == "req-1"
    (output,) = answer["outputs"]
    assert output["name"] == "output-0"
    assert output["datatype"] == "FP32"
    assert output["shape"] == [3, 3]
    got = np.array(output["data"], np.float32).reshape(output["shape"])
    np.testing.assert_allclose(got, forward(make_mlp(), rows), rtol=1e-5, atol=1e-6)
    assert versioned.json()["outputs"] == answer["outputs"]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"datatype": "FP64"}, "datatype FP64 does not match the model's FP32"),
        ({"datatype": "COMPLEX"}, "datatype COMPLEX does not match the model's FP32"),
        ({"name": "pixels"}, "unknown input name; the model's input is 'input-0'"),
        ({"shape": [2, FEATURES]}, "shape [2, 8] needs 16 values, data has 8"),
        ({"shape": [1, 4, 2]}, "each row must have shape [8]"),
        ({"data": ["a"] * FEATURES}, "data must hold numbers for FP32"),
        ({"data": [True] * FEATURES}, "data must hold numbers for FP32"),
        ({"shape": [0, FEATURES], "data": []}, "the batch dimension must be 1 to"),
    ],
)
def test_infer_rejects_tensors_that_do_not_match_the_model(
    mlp_server: LiveServer, overrides: dict[str, object], fragment: str
) -> None:
    model = mlp_server.app.model
    assert model is not None
    with mlp_server.client() as client:
        response = client.post(f"/v2/models/{model.name}/infer", json=infer_body(training_inputs(1), **overrides))
    assert response.status_code == 422
    assert fragment in response.json()["error"]


def test_infer_rejects_bad_envelopes(mlp_server: LiveServer) -> None:
    model = mlp_server.app.model
    assert model is not None
    row = training_inputs(1)
    two_inputs = {"inputs": [infer_body(row)["inputs"][0]] * 2}  # type: ignore[index]
    unknown_output = {**infer_body(row), "outputs": [{"name": "probabilities"}]}
    with mlp_server.client() as client:
        url = f"/v2/models/{model.name}/infer"
        no_inputs = client.post(url, json={"id": "x"})
        two = client.post(url, json=two_inputs)
        other = client.post(url, json=unknown_output)
        elsewhere = client.post("/v2/models/other/infer", json=infer_body(row))
    assert no_inputs.status_code == 422
    assert "missing required field `inputs`" in no_inputs.json()["error"]
    assert two.status_code == 422
    assert "exactly one input" in two.json()["error"]
    assert other.status_code == 422
    assert "unknown outputs ['probabilities']" in other.json()["error"]
    assert elsewhere.status_code == 404
