"""Render a stack offline and show it: a tree with counts by type, or the stable JSON."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from mlplat.infra.engine import Render, program_from_path, render
from mlplat.infra.stacks import load_stack

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def render_stack(
    stack: str, root: Path = PROJECT_ROOT, stack_references: Mapping[str, Mapping[str, Any]] | None = None
) -> Render:
    """Render ``Pulumi.<stack>.yaml`` of the project at ``root`` with its program (``main:``).

    ``stack_references`` (stack name -> outputs) answer the program's ``StackReference``s, over any given in
    the stack config (``offline:stackReferences``).
    """
    files = load_stack(root, stack)
    return render(
        program_from_path(files.main),
        project=files.project,
        stack=files.stack,
        config=files.config,
        secret_keys=files.secret_keys,
        stack_references=stack_references,
    )


def tree(result: Render) -> Tree:
    """The resources as a parent/child tree."""
    children: dict[str | None, list[str]] = {}
    for rec in result.resources:
        children.setdefault(rec.parent, []).append(rec.urn)
    by_urn = {r.urn: r for r in result.resources}

    def label(urn: str) -> str:
        rec = by_urn[urn]
        return f"[bold]{rec.name}[/bold] [dim]{rec.type}[/dim]"

    roots = children.get(None, [])
    top = Tree(f"stack [bold]{result.project}/{result.stack}[/bold]: {len(result.resources)} resources")

    def add(node: Tree, urn: str) -> None:
        for child in sorted(children.get(urn, []), key=lambda u: (by_urn[u].type, by_urn[u].name)):
            add(node.add(label(child)), child)

    for urn in roots:
        add(top, urn)
    return top


def counts_table(result: Render) -> Table:
    table = Table(title=f"{result.stack}: resources by type")
    table.add_column("type")
    table.add_column("count", justify="right")
    for type_, count in result.counts_by_type().items():
        table.add_row(type_, str(count))
    return table


def print_tree(result: Render, console: Console) -> None:
    console.print(tree(result))
    console.print(counts_table(result))
