"""The FastAPI side of the server: health, V2 metadata, metrics and the OpenAPI docs.

Its routes come from :data:`mlplat.serving.routes.ROUTES`: FastAPI serves the control routes; the inference routes
are served by the dispatcher in :mod:`mlplat.serving.app` and described in the OpenAPI document from their table
entries (with the request model generated from the served model's signature), so `/docs` describes the whole API.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException

from mlplat.serving.protocol import (
    ErrorResponse,
    InferenceRequest,
    InferenceResponse,
    LiveResponse,
    MetadataTensor,
    ModelMetadataResponse,
    ModelReadyResponse,
    PredictRequest,
    PredictResponse,
    ReadyResponse,
    ServerMetadataResponse,
)
from mlplat.serving.routes import ROUTES, Route

if TYPE_CHECKING:
    from mlplat.serving.app import ServingApp

try:
    MLPLAT_VERSION = version("mlplat")
except PackageNotFoundError:  # running from a source tree that was never installed
    MLPLAT_VERSION = "0.0.0"

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        401: "Missing or wrong API key",
        404: "No such model",
        413: "Body too large",
        422: "Inputs do not match the model's signature",
        503: "Queue full, loading or shutting down (see Retry-After)",
        504: "No result within the request timeout",
    }.items()
}


def build_api(server: ServingApp) -> FastAPI:
    """The FastAPI app for `server`: the control routes of :data:`~mlplat.serving.routes.ROUTES`, JSON error bodies,
    and the OpenAPI document of every route."""
    api = FastAPI(
        title="mlplat model server",
        version=MLPLAT_VERSION,
        summary="Dynamic-batching PyTorch model server: a simple /predict API and the KServe V2 inference protocol.",
        lifespan=server.lifespan,
        redoc_url=None,
    )
    handlers = _control_handlers(server)
    for route in ROUTES:
        if route.inference:
            continue
        response_model, responses = _DOCUMENTED[route.name]
        api.add_api_route(
            route.path,
            handlers[route.name],
            methods=[route.method],
            name=route.name,
            description=route.summary,
            tags=list(route.tags),
            response_model=response_model,
            responses=responses,
            response_class=Response if route.name == "metrics" else JSONResponse,
        )
    _error_handlers(api)

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = get_openapi(title=api.title, version=api.version, summary=api.summary, routes=api.routes)
            _document_inference(schema, server.request_model or PredictRequest)
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    return api


# Per control route (by name): its response model and the error answers it documents.
_DOCUMENTED: dict[str, tuple[Any, dict[int | str, dict[str, Any]]]] = {
    "live": (LiveResponse, {}),
    "ready": (ReadyResponse, {503: {"model": ReadyResponse}}),
    "server_metadata": (ServerMetadataResponse, {}),
    "model_metadata": (ModelMetadataResponse, _ERRORS),
    "model_ready": (ModelReadyResponse, _ERRORS),
    "metrics": (None, {}),
}


def _control_handlers(server: ServingApp) -> dict[str, Callable[..., Awaitable[Any]]]:
    """The FastAPI handlers of the control routes, by route name."""

    def model_or_404(name: str, model_version: str | None = None) -> Any:
        model = server.model
        if model is None:  # still waiting for it: its name is not known yet
            status = server.load_status
            raise HTTPException(
                503,
                f"the model is not loaded yet: {server.unready_reason()['reason']}",
                headers={"Retry-After": str(status.retry_after() if status is not None else 1)},
            )
        if name != model.name or model_version not in (None, model.version):
            raise HTTPException(
                404, f"no such model {name!r}; this server serves {model.name!r} version {model.version!r}"
            )
        return model

    async def live() -> LiveResponse:
        return LiveResponse(live=True)

    async def ready() -> JSONResponse:
        if server.ready:
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False, **server.unready_reason()}, status_code=503)

    async def server_metadata() -> ServerMetadataResponse:
        return ServerMetadataResponse(name="mlplat", version=MLPLAT_VERSION, extensions=[])

    async def model_metadata(name: str, model_version: str | None = None) -> ModelMetadataResponse:
        model = model_or_404(name, model_version)
        tensors = []
        for spec in (model.input_spec, model.output_spec):
            tensors.append(
                [MetadataTensor(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))] if spec else []
            )
        return ModelMetadataResponse(
            name=model.name, versions=[model.version], platform=model.platform, inputs=tensors[0], outputs=tensors[1]
        )

    async def model_ready(name: str, model_version: str | None = None) -> JSONResponse:
        if server.model is not None:
            model_or_404(name, model_version)
        if server.ready:
            return JSONResponse({"name": name, "ready": True})
        return JSONResponse({"name": name, "ready": False, **server.unready_reason()}, status_code=503)

    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return {
        "live": live,
        "ready": ready,
        "server_metadata": server_metadata,
        "model_metadata": model_metadata,
        "model_ready": model_ready,
        "metrics": metrics,
    }


def _error_handlers(api: FastAPI) -> None:
    """Every error as ``{"error": ...}``, never a stack trace."""

    @api.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if exc.status_code != 404 or exc.detail != "Not Found" else f"no route {_request.url.path}"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @api.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": f"invalid request: {problems}"}, status_code=422)

    @api.exception_handler(Exception)
    async def unexpected_error(_request: Request, _exc: Exception) -> JSONResponse:
        return JSONResponse({"error": "internal error; see the server log"}, status_code=500)


def _document_inference(schema: dict[str, Any], predict_body: type[BaseModel]) -> None:
    """Add the inference routes of :data:`~mlplat.serving.routes.ROUTES` to an OpenAPI document: their request
    bodies (``/predict``'s generated from the served model's signature), answers and errors."""
    bodies: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
        "predict": (predict_body, PredictResponse),
        "infer": (InferenceRequest, InferenceResponse),
    }
    models = {model for pair in bodies.values() for model in pair} | {ErrorResponse}
    refs, definitions = models_json_schema(
        [(model, "validation") for model in models], ref_template="#/components/schemas/{model}"
    )
    schema.setdefault("components", {}).setdefault("schemas", {}).update(definitions.get("$defs", {}))
    error = {"content": {"application/json": {"schema": refs[(ErrorResponse, "validation")]}}}
    for route in ROUTES:
        if route.inference:
            request, answer = bodies[route.name]
            operation = _operation(route, refs[(request, "validation")], refs[(answer, "validation")], error)
            schema.setdefault("paths", {})[route.path] = {route.method.lower(): operation}


def _operation(route: Route, request: dict[str, Any], answer: dict[str, Any], error: dict[str, Any]) -> dict[str, Any]:
    """One inference route's OpenAPI operation."""
    responses: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json": {"schema": answer}}}}
    responses.update({str(status): {"description": doc["description"], **error} for status, doc in _ERRORS.items()})
    path_id = re.sub(r"\W+", "_", route.path).strip("_")
    operation: dict[str, Any] = {
        "tags": list(route.tags),
        "summary": route.name.replace("_", " ").capitalize(),
        "description": route.summary,
        "operationId": f"{route.name}_{route.method.lower()}_{path_id}",
        "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
        "responses": responses,
    }
    parameters = re.findall(r"\{(\w+)\}", route.path)
    if parameters:
        operation["parameters"] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in parameters
        ]
    return operation
