"""Read a Pulumi project and its stack files the way the Pulumi CLI hands config to a program.

Values reach the program as strings; objects and lists JSON-encoded; ``secure:`` values are secrets. We
cannot decrypt them offline, so a secret stands in as a placeholder and its key is marked secret, which is
what a program sees (``Config.get_secret`` returns a secret Output) apart from the value itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SECRET_PLACEHOLDER = "offline-secret-placeholder"


class StackNotFound(LookupError):
    """No ``Pulumi.<stack>.yaml`` beside the project file."""


@dataclass(frozen=True)
class StackFiles:
    """A project's name, program folder and one stack's config as the program receives it."""

    project: str
    stack: str
    main: Path
    config: dict[str, str]
    secret_keys: list[str]


def available_stacks(root: Path) -> list[str]:
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in root.glob("Pulumi.*.yaml"))


def _encode(value: Any) -> tuple[str, bool]:
    """(string form, is secret) of one config value."""
    if isinstance(value, dict) and set(value) == {"secure"}:
        return SECRET_PLACEHOLDER, True
    if isinstance(value, str):
        return value, False
    secret = False

    def scrub(v: Any) -> Any:
        nonlocal secret
        if isinstance(v, dict) and set(v) == {"secure"}:
            secret = True
            return SECRET_PLACEHOLDER
        if isinstance(v, dict):
            return {k: scrub(x) for k, x in v.items()}
        if isinstance(v, list):
            return [scrub(x) for x in v]
        return v

    cleaned = scrub(value)
    return json.dumps(cleaned), secret


def load_stack(root: Path, stack: str) -> StackFiles:
    """Read ``Pulumi.yaml`` and ``Pulumi.<stack>.yaml`` under ``root``."""
    project_file = root / "Pulumi.yaml"
    if not project_file.exists():
        raise FileNotFoundError(f"no Pulumi.yaml in {root}")
    project = yaml.safe_load(project_file.read_text()) or {}
    stack_file = root / f"Pulumi.{stack}.yaml"
    if not stack_file.exists():
        known = ", ".join(available_stacks(root)) or "none"
        raise StackNotFound(f"unknown stack {stack!r}: no {stack_file.name} in {root}; stacks here: {known}")
    document = yaml.safe_load(stack_file.read_text()) or {}
    config: dict[str, str] = {}
    secret_keys: list[str] = []
    name = str(project["name"])
    # Project-level defaults first (`config: {key: {default: v}}`), then the stack's own values.
    for key, spec in (project.get("config") or {}).items():
        if isinstance(spec, dict) and "default" in spec:
            full = key if ":" in key else f"{name}:{key}"
            config[full], _ = _encode(spec["default"])
    for key, value in (document.get("config") or {}).items():
        full = key if ":" in key else f"{name}:{key}"
        config[full], secret = _encode(value)
        if secret:
            secret_keys.append(full)
    return StackFiles(
        project=name,
        stack=stack,
        main=root / str(project.get("main", ".")),
        config=config,
        secret_keys=sorted(secret_keys),
    )
