"""`mlplat train` and `mlplat promote`: registered on the main CLI by :func:`register`.

Imports at module level stay light (typer only): torch and mlflow load inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Training config (YAML); see mlplat.contracts.training_config.")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value: key.path=value (YAML value), repeatable."),
]
NprocOption = Annotated[
    str | None,
    typer.Option(
        "--nproc-per-node",
        help="Launch this many local worker processes with torchrun ('gpu': one per GPU); "
        "multi-node settings come from torchrun's PET_* environment variables.",
    ),
]


def train_command(config: ConfigOption, set_: SetOption = None, nproc_per_node: NprocOption = None) -> None:
    """Train, evaluate and (if the gate passes) register a model; resumes from the newest checkpoint.

    Exit codes: 0 done, 3 gate rejected, 4 loss not finite, 65 data invalid, 75 preempted or a transient fault
    outlasted its retry budget (retry to resume), 78 config invalid (or changed within an attempt).
    """
    overrides = set_ or []
    if nproc_per_node is not None:
        from mlplat.training.launcher import launch

        raise typer.Exit(launch(config, overrides, nproc_per_node))
    from mlplat.training.runner import run_training

    raise typer.Exit(run_training(config, overrides))


def promote_command(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    from_alias: Annotated[str, typer.Option("--from", help="Alias whose version is promoted.")] = "staging",
    to_alias: Annotated[str, typer.Option("--to", help="Alias to point at that version.")] = "champion",
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="MLflow URI (default: MLFLOW_TRACKING_URI).")
    ] = None,
) -> None:
    """Point alias --to at the version alias --from points at (e.g. staging -> champion)."""
    from mlplat.training.registry import RegistryError, promote

    try:
        version, previous = promote(name, from_alias, to_alias, tracking_uri)
    except RegistryError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    moved = f" (was version {previous})" if previous and previous != version else ""
    typer.echo(f"{name}@{to_alias} -> version {version}{moved}")


def register(app: typer.Typer) -> None:
    """Add the training commands to the `mlplat` CLI (keep imports here light: torch loads lazily)."""
    app.command("train")(train_command)
    app.command("promote")(promote_command)
