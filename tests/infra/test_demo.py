"""`mlplat demo` end to end: real MLflow server, training, gate, registration, serving, offline preview."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from rich.console import Console

from mlplat.demo.platform import run_demo

pytestmark = pytest.mark.integration


def test_the_demo_trains_serves_and_previews_then_reuses_its_model(tmp_path: Path, repo_root: Path) -> None:
    console = Console(record=True, width=120)
    first = run_demo(repo_root, state=tmp_path / "demo", requests=20, console=console)
    assert first.trained and first.model_version == "1"
    assert first.accuracy > 0.9
    assert first.p50_ms > 0 and first.p99_ms >= first.p50_ms
    assert first.stacks["production"]["policy"] == "pass" and first.stacks["dev"]["policy"] == "pass"
    assert first.stacks["production"]["idle_monthly_usd"] > first.stacks["dev"]["idle_monthly_usd"]
    output = console.export_text()
    assert "promoted digits@staging to digits@champion" in output and "rendered offline" in output

    second = run_demo(repo_root, state=tmp_path / "demo", requests=5, console=console)
    assert not second.trained and second.model_version == "1"  # reused, not retrained
    assert "reusing digits@champion (version 1)" in console.export_text()


def test_the_production_topology_demo_trains_and_serves_then_removes_its_database_and_bucket(
    tmp_path: Path, repo_root: Path
) -> None:
    def demo_roots() -> set[Path]:
        return set(Path(tempfile.gettempdir()).glob("mlplat-demo-*"))

    before = demo_roots()
    console = Console(record=True, width=120)
    result = run_demo(repo_root, state=tmp_path / "demo", production_topology=True, requests=5, console=console)
    assert result.trained and result.model_version == "1" and result.accuracy > 0.9
    assert "promoted digits@staging to digits@champion" in console.export_text()
    assert demo_roots() == before, "the run's PostgreSQL and S3 folders were left behind"
