"""The products meet only through mlplat.contracts: every import in the source folders is checked (issue 21).

- the stack program, its components and its rules (components/, infra/, policy/) import neither the trainer nor
  the server (the CLI entry point, cli/app.py, registers their commands and is the one exception);
- the trainer does not import the server, nor the server the trainer; neither imports the IaC side;
- mlplat.contracts imports nothing of mlplat but itself, and of the rest only the standard library and the base
  install (pydantic, PyYAML).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("contracts", "components", "infra", "policy", "review", "demo", "cli", "serving", "training")
_COMMANDS = ("mlplat.cli", "mlplat.demo", "mlplat.review")  # the tools built on the stack program
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "contracts": (
        "mlplat.training",
        "mlplat.serving",
        "mlplat.components",
        "mlplat.infra",
        "mlplat.policy",
        *_COMMANDS,
    ),
    "components": ("mlplat.training", "mlplat.serving", "mlplat.infra", "mlplat.policy", *_COMMANDS),
    "infra": ("mlplat.training", "mlplat.serving", "mlplat.policy", *_COMMANDS),
    "policy": ("mlplat.training", "mlplat.serving", *_COMMANDS),
    "review": ("mlplat.training", "mlplat.serving", "mlplat.cli", "mlplat.demo"),
    "demo": ("mlplat.training", "mlplat.serving", "mlplat.cli"),  # it runs the trainer and the server as processes
    "cli": (),  # the entry point: it registers every product's commands
    "training": ("mlplat.serving", "mlplat.components", "mlplat.infra", "mlplat.policy", *_COMMANDS),
    "serving": ("mlplat.training", "mlplat.components", "mlplat.infra", "mlplat.policy", *_COMMANDS),
}
CONTRACTS_MAY_IMPORT = {"pydantic", "yaml", "mlplat"}


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_each_product_imports_the_others_only_through_the_contracts(folder: str) -> None:
    wrong = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for module in imports(path):
            if FORBIDDEN[folder] and module.startswith(FORBIDDEN[folder]):
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_contracts_need_only_the_base_install() -> None:
    outside = []
    for path in sorted((ROOT / "contracts").rglob("*.py")):
        for module in imports(path):
            top = module.split(".")[0]
            if top not in sys.stdlib_module_names and top not in CONTRACTS_MAY_IMPORT:
                outside.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not outside, "\n".join(outside)


def test_the_check_sees_an_import_where_it_is(tmp_path: Path) -> None:
    # The walk finds imports inside functions too (where the lazy ones live).
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from mlplat.serving.drift import DriftMonitor\n    import torch.nn\n")
    assert imports(source) == {"mlplat.serving.drift", "torch.nn"}
