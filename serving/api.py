"""The FastAPI side of the server: health, V2 metadata, metrics and the OpenAPI docs.

The inference routes are served by the dispatcher in :mod:`mlplat.serving.app`; they are added to the OpenAPI
document here (with the request model generated from the served model's signature), so `/docs` describes the
whole API.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST
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
    """The FastAPI app for `server`: control-plane routes, JSON error bodies, and the full OpenAPI schema."""
    api = FastAPI(
        title="mlplat model server",
        version=MLPLAT_VERSION,
        summary="Dynamic-batching PyTorch model server: a simple /predict API and the KServe V2 inference protocol.",
        lifespan=server.lifespan,
        redoc_url=None,
    )

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

    @api.get("/v2/health/live", response_model=LiveResponse, tags=["health"])
    async def live() -> LiveResponse:
        """Liveness: the process is up and answering."""
        return LiveResponse(live=True)

    @api.get(
        "/v2/health/ready", response_model=ReadyResponse, tags=["health"], responses={503: {"model": ReadyResponse}}
    )
    async def ready() -> JSONResponse:
        """Readiness: the model is loaded and the server is not shutting down (503 otherwise, saying why)."""
        if server.ready:
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False, **server.unready_reason()}, status_code=503)

    @api.get("/v2", response_model=ServerMetadataResponse, tags=["v2"])
    async def server_metadata() -> ServerMetadataResponse:
        """Server metadata (KServe V2)."""
        return ServerMetadataResponse(name="mlplat", version=MLPLAT_VERSION, extensions=[])

    @api.get("/v2/models/{name}", response_model=ModelMetadataResponse, tags=["v2"], responses=_ERRORS)
    @api.get("/v2/models/{name}/versions/{model_version}", response_model=ModelMetadataResponse, tags=["v2"])
    async def model_metadata(name: str, model_version: str | None = None) -> ModelMetadataResponse:
        """Model metadata (KServe V2): name, version, platform and the input and output tensors."""
        model = model_or_404(name, model_version)
        tensors = []
        for spec in (model.input_spec, model.output_spec):
            tensors.append(
                [MetadataTensor(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))] if spec else []
            )
        return ModelMetadataResponse(
            name=model.name, versions=[model.version], platform=model.platform, inputs=tensors[0], outputs=tensors[1]
        )

    @api.get("/v2/models/{name}/ready", response_model=ModelReadyResponse, tags=["v2"], responses=_ERRORS)
    @api.get("/v2/models/{name}/versions/{model_version}/ready", response_model=ModelReadyResponse, tags=["v2"])
    async def model_ready(name: str, model_version: str | None = None) -> JSONResponse:
        """Model readiness (KServe V2): 200 when ready, 503 otherwise (while loading, for any name: it is unknown)."""
        if server.model is not None:
            model_or_404(name, model_version)
        if server.ready:
            return JSONResponse({"name": name, "ready": True})
        return JSONResponse({"name": name, "ready": False, **server.unready_reason()}, status_code=503)

    @api.get("/metrics", tags=["observability"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics (text exposition format)."""
        return Response(server.metrics.render(), media_type=CONTENT_TYPE_LATEST)

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

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            api.openapi_schema = get_openapi(
                title=api.title,
                version=api.version,
                summary=api.summary,
                routes=[*api.routes, *_inference_doc_routes(server)],
            )
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    return api


def _inference_doc_routes(server: ServingApp) -> list[APIRoute]:
    """Routes used only to describe the dispatcher's inference endpoints in the OpenAPI document."""
    body_model: Any = server.request_model or PredictRequest

    async def predict(body: PredictRequest) -> PredictResponse:
        """Predict rows: `{"inputs": [row, ...]}` -> one prediction per row. Concurrent requests are batched."""
        raise NotImplementedError  # documentation only: the dispatcher serves this route

    # Describe the body with the model generated from the served model's signature (exact row shape and dtype).
    predict.__annotations__ = {"body": body_model, "return": PredictResponse}

    async def infer(name: str, body: InferenceRequest) -> InferenceResponse:
        """Inference (KServe V2): one typed input tensor, data flat (row-major) or nested."""
        raise NotImplementedError  # documentation only: the dispatcher serves this route

    responses = {**_ERRORS}
    return [
        APIRoute(
            "/predict",
            predict,
            methods=["POST"],
            response_model=PredictResponse,
            responses=responses,
            tags=["inference"],
        ),
        APIRoute(
            "/v2/models/{name}/infer",
            infer,
            methods=["POST"],
            response_model=InferenceResponse,
            responses=responses,
            tags=["v2", "inference"],
        ),
    ]
