"""Shared fixtures: the shipped stacks rendered once per session by the offline engine."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlplat.infra.engine import Render, render
from mlplat.infra.synth import render_stack

REPO_ROOT = Path(__file__).resolve().parent.parent
# --import-mode=importlib keeps test folders off sys.path: shared helpers (config_support.py) are found here.
sys.path.insert(0, str(Path(__file__).resolve().parent))

logging.getLogger("pulumi").setLevel(logging.ERROR)


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

    def _render(program: Callable[[], None], config: dict[str, str] | None = None,
                secret_keys: list[str] | None = None, stack: str = "test") -> Render:
        return render(program, project="mlplat", stack=stack, config=config, secret_keys=secret_keys)

    return _render
