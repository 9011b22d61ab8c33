"""`python -m mlplat.training --config training.yaml`: the same as `mlplat train`, and what torchrun runs."""

from __future__ import annotations

import typer

from mlplat.training.cli import train_command

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command()(train_command)

if __name__ == "__main__":
    app()
