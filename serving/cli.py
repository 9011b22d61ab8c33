"""`mlplat serve`: registered on the main CLI by :func:`register`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the serving commands to the `mlplat` CLI (keep imports here light: torch loads lazily)."""
