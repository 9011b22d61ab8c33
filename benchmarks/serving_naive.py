"""The baseline for benchmarks/serving.py: a plain FastAPI server doing one forward pass per request.

This is the server most teams write first: a pydantic request model, the model called inline in an
`async def` route (no thread hop, so the fastest possible lone caller), `.tolist()` into the response. It
loads the same MLflow model as mlplat's server and uses the same torch thread count.

    NAIVE_MODEL_URI=/path/to/mlflow-model uvicorn benchmarks.serving_naive:app --port 8081
"""

from __future__ import annotations

import os

import mlflow.pytorch
import torch
from fastapi import FastAPI
from pydantic import BaseModel

torch.set_num_threads(len(os.sched_getaffinity(0)))
model = mlflow.pytorch.load_model(os.environ["NAIVE_MODEL_URI"])
app = FastAPI(title="naive baseline")


class PredictRequest(BaseModel):
    """Rows to predict."""

    inputs: list[list[float]]


class PredictResponse(BaseModel):
    """One prediction per row."""

    predictions: list[list[float]]
    model_version: str


@app.post("/predict")
async def predict(request: PredictRequest) -> PredictResponse:
    """One forward pass for this request's rows."""
    with torch.inference_mode():
        output = model(torch.tensor(request.inputs, dtype=torch.float32))
    return PredictResponse(predictions=output.tolist(), model_version="baseline")
