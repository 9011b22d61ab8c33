"""The `mlplat` command line.

Infrastructure commands (synth, ...) live here; the serving and training packages add their own
commands through their `register` hooks, which keep heavy imports (torch, mlflow) out of start-up.
"""

from __future__ import annotations

import typer

from mlplat.serving.cli import register as register_serving
from mlplat.training.cli import register as register_training

app = typer.Typer(
    name="mlplat",
    help="mlplat: an ML platform on AWS as Pulumi components, plus the training and serving code it runs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

register_serving(app)
register_training(app)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
