"""`mlplat train` and `mlplat promote`: registered on the main CLI by :func:`register`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the training commands to the `mlplat` CLI (keep imports here light: torch loads lazily)."""
