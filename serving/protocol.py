"""Wire formats: the simple `/predict` API and the KServe V2 / Open Inference Protocol (REST).

These pydantic models document the API (OpenAPI) and parse V2 requests. The hot `/predict` path parses with a
model generated from the served model's signature instead (:func:`mlplat.serving.schema.predict_request_model`).
Spec: https://github.com/kserve/open-inference-protocol/blob/main/specification/protocol/inference_rest.md
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PredictRequest(BaseModel):
    """`POST /predict` body: rows to predict (their exact shape and dtype come from the model's signature)."""

    inputs: list[Any] = Field(min_length=1, examples=[[[0.1, 0.2, 0.3]]])


class PredictResponse(BaseModel):
    """`POST /predict` answer: one prediction per input row, and the model version that made them."""

    predictions: list[Any]
    model_version: str


class ErrorResponse(BaseModel):
    """Every error answer: a message that says what was wrong and what is allowed (never a stack trace)."""

    error: str


class LiveResponse(BaseModel):
    """`GET /v2/health/live`."""

    live: bool


class ReadyResponse(BaseModel):
    """`GET /v2/health/ready`: false while loading and from the moment a shutdown begins, then saying why.

    While the server waits for its model: what it waits for (`waiting_for`, and the MLflow `tracking_uri`, with
    credentials removed), the attempts so far, the last error, whether the model was found but `refused`, and
    when the next attempt starts.
    """

    ready: bool
    reason: str | None = None
    waiting_for: str | None = None
    tracking_uri: str | None = None
    attempts: int | None = None
    last_error: str | None = None
    refused: bool | None = None
    next_attempt_in_s: float | None = None


class ModelReadyResponse(ReadyResponse):
    """`GET /v2/models/<name>/ready`."""

    name: str


class ServerMetadataResponse(BaseModel):
    """`GET /v2`."""

    name: str
    version: str
    extensions: list[str]


class MetadataTensor(BaseModel):
    """A tensor's name, V2 datatype and shape (-1 for a variable dimension)."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadataResponse(BaseModel):
    """`GET /v2/models/<name>`."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class RequestInput(BaseModel):
    """One input tensor of a V2 inference request; `data` is flat (row-major) or nested to match `shape`."""

    model_config = ConfigDict(strict=True)

    name: str
    shape: list[int] = Field(min_length=1)
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class RequestOutput(BaseModel):
    """An output a V2 client asks for by name."""

    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    """`POST /v2/models/<name>/infer` body."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    """One output tensor of a V2 inference response, `data` flat in row-major order."""

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class InferenceResponse(BaseModel):
    """`POST /v2/models/<name>/infer` answer."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]
