"""The `mlplat` command line.

Infrastructure commands (synth, ...) live here; the serving and training packages add their own
commands through their `register` hooks, which keep heavy imports (torch, mlflow) out of start-up.
"""

from __future__ import annotations

import enum
import logging
from pathlib import Path

import typer
from mlplat.serving.cli import register as register_serving
from mlplat.training.cli import register as register_training
from rich.console import Console

app = typer.Typer(
    name="mlplat",
    help="mlplat: an ML platform on AWS as Pulumi components, plus the training and serving code it runs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

register_serving(app)
register_training(app)


@app.callback()
def _root() -> None:
    """mlplat: an ML platform on AWS as Pulumi components, plus the training and serving code it runs."""


class OutputFormat(enum.StrEnum):
    tree = "tree"
    json = "json"


def fail(message: str) -> typer.Exit:
    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code=2)


@app.command()
def synth(
    stack: str = typer.Argument(..., help="Stack name: reads Pulumi.<stack>.yaml"),
    output_format: OutputFormat = typer.Option(OutputFormat.tree, "--format", "-f", help="tree or json"),
    project_dir: Path = typer.Option(Path("."), "--project-dir", "-C", help="Folder holding Pulumi.yaml"),
) -> None:
    """Render a stack offline (no cloud credentials) and print its resources."""
    from mlplat.infra.config import ConfigError
    from mlplat.infra.engine import ProgramError
    from mlplat.infra.stacks import StackNotFound
    from mlplat.infra.synth import print_tree, render_stack

    logging.getLogger("pulumi").setLevel(logging.ERROR)
    try:
        result = render_stack(stack, project_dir.resolve())
    except (StackNotFound, FileNotFoundError) as exc:
        raise fail(str(exc)) from None
    except ProgramError as exc:
        if isinstance(exc.__cause__, ConfigError):
            raise fail(f"stack {stack!r}: {exc.__cause__}") from None
        raise fail(str(exc)) from None
    if output_format is OutputFormat.json:
        typer.echo(result.dumps())
    else:
        print_tree(result, Console())


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
