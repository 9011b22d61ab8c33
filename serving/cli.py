"""`mlplat serve`: registered on the main CLI by :func:`register`.

Imports stay light here (typer only): torch, FastAPI and MLflow load when the command runs.
"""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the serving commands to the `mlplat` CLI (keep imports here light: torch loads lazily)."""
    app.command("serve")(serve)


def serve(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="models:/<name>@<alias>, models:/<name>/<version>, runs:/..., s3://bucket/prefix or a local path "
            "[env: MLPLAT_SERVING_MODEL_URI]",
        ),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Interface to bind [env: MLPLAT_SERVING_HOST; default 127.0.0.1]")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port [env: MLPLAT_SERVING_PORT; default 8080]")] = None,
    max_batch_size: Annotated[
        int | None, typer.Option(help="Most rows per forward pass [env: MLPLAT_SERVING_MAX_BATCH_SIZE; default 32]")
    ] = None,
    max_batch_delay_ms: Annotated[
        float | None,
        typer.Option(help="Wait this long for a batch to fill [env: MLPLAT_SERVING_MAX_BATCH_DELAY_MS; default 0]"),
    ] = None,
    queue_limit: Annotated[
        int | None, typer.Option(help="Waiting requests before 503 [env: MLPLAT_SERVING_QUEUE_LIMIT; default 512]")
    ] = None,
    request_timeout_s: Annotated[
        float | None, typer.Option(help="Seconds before a 504 [env: MLPLAT_SERVING_REQUEST_TIMEOUT_S; default 5]")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:<n> [env: MLPLAT_SERVING_DEVICE]")] = None,
    log_level: Annotated[
        str | None, typer.Option(help="debug, info, warning or error [env: MLPLAT_SERVING_LOG_LEVEL]")
    ] = None,
) -> None:
    """Serve a PyTorch model over HTTP: /predict, the KServe V2 protocol, /metrics, with dynamic batching.

    Every setting can also come from its MLPLAT_SERVING_* environment variable (the API key only from there:
    MLPLAT_SERVING_API_KEY); options win over the environment.
    """
    from mlplat.serving.server import main

    main(
        model_uri=model,
        host=host,
        port=port,
        max_batch_size=max_batch_size,
        max_batch_delay_ms=max_batch_delay_ms,
        queue_limit=queue_limit,
        request_timeout_s=request_timeout_s,
        device=device,
        log_level=log_level,
    )
