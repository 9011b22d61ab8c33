"""Shared fixtures: the shipped stacks rendered once per session by the offline engine."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import hypothesis  # noqa: F401  (see below)
import pytest

from mlplat.infra.engine import Render, render
from mlplat.infra.synth import render_stack

REPO_ROOT = Path(__file__).resolve().parent.parent

logging.getLogger("pulumi").setLevel(logging.ERROR)
# hypothesis is imported up front: its plugin otherwise imports it at the session's end, and on CPython 3.11.7 the
# assertion rewriter's ast.parse there can fail with "AST constructor recursion depth mismatch" after tests whose
# Pulumi programs recursed deeply (seen running tests/infra/test_cli.py alone), failing a green session.

# The image tag the renders in the tests run (mlplat.infra.images), as the deploy workflow sets it: fixed, so renders
# do not follow the commit checked out. `local` is what scripts/build-images.sh tags the images it builds here, so
# the container tests run the rendered specs in those; a tag given in the environment wins for both.
os.environ.setdefault("MLPLAT_IMAGE_TAG", "local")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo what a test's in-process `mlplat serve` did to logging (JSON handlers, ``propagate: False`` on the
    ``mlplat`` logger), which would hide later tests' log lines from ``caplog``."""
    loggers = [logging.getLogger(name) for name in ("mlplat", "uvicorn", "uvicorn.error", "uvicorn.access")]
    saved = [(lg, lg.level, lg.propagate, list(lg.handlers), lg.disabled) for lg in loggers]
    yield
    for lg, level, propagate, handlers, disabled in saved:
        lg.setLevel(level)
        lg.propagate = propagate
        lg.handlers[:] = handlers
        lg.disabled = disabled


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def dev_stack() -> Render:
    """The shipped dev stack (Pulumi.dev.yaml) rendered offline."""
    return render_stack("dev", REPO_ROOT)


@pytest.fixture(scope="session")
def production_stack() -> Render:
    """The shipped production stack (Pulumi.production.yaml) rendered offline."""
    return render_stack("production", REPO_ROOT)


@pytest.fixture
def render_program() -> Callable[..., Render]:
    """Render an inline program: ``render_program(fn, config={...})``."""

    def _render(
        program: Callable[[], None],
        config: dict[str, str] | None = None,
        secret_keys: list[str] | None = None,
        stack: str = "test",
    ) -> Render:
        return render(program, project="mlplat", stack=stack, config=config, secret_keys=secret_keys)

    return _render


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A real S3-compatible endpoint on loopback (moto's server, in this process), with dummy credentials in the
    environment while the module's tests run. The one S3 stand-in of the unit tests; the integration and container
    tests run the demo's own (:class:`mlplat.demo.services.MotoS3Server`)."""
    from moto.server import ThreadedMotoServer

    patch = pytest.MonkeyPatch()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        patch.setenv(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        patch.undo()
