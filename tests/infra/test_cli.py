"""`mlplat synth` end to end through the CLI, and the stack-file reader it uses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from mlplat.cli.app import app
from mlplat.infra.stacks import SECRET_PLACEHOLDER, load_stack

runner = CliRunner()


def test_synth_dev_prints_a_tree_with_counts() -> None:
    result = runner.invoke(app, ["synth", "dev"])
    assert result.exit_code == 0, result.output
    assert "stack mlplat/dev" in result.output
    assert "mlplat-dev-nat-0" in result.output and "mlplat-dev-nat-1" not in result.output


def test_synth_production_json_lists_the_platform() -> None:
    result = runner.invoke(app, ["synth", "production", "--format", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    types = [r["type"] for r in document["resources"]]
    assert types.count("aws:ec2/subnet:Subnet") == 9
    assert types.count("aws:ec2/natGateway:NatGateway") == 3
    assert types.count("aws:ecr/repository:Repository") == 3  # serving, training, tracking
    assert "aws:ec2/flowLog:FlowLog" in types and "aws:s3/bucketPolicy:BucketPolicy" in types


def test_unknown_stack_is_a_clear_error() -> None:
    result = runner.invoke(app, ["synth", "qa"])
    assert result.exit_code == 2
    assert "unknown stack 'qa'" in result.output and "dev, production" in result.output


def _project(tmp_path: Path, stack_yaml: str) -> Path:
    root = Path(__file__).resolve().parents[2]
    (tmp_path / "Pulumi.yaml").write_text(f"name: mlplat\nruntime: python\nmain: {root / 'infra'}\n")
    (tmp_path / "Pulumi.bad.yaml").write_text(stack_yaml)
    return tmp_path


def test_bad_config_is_reported_by_key(tmp_path: Path) -> None:
    project = _project(
        tmp_path, "config:\n  aws:region: us-east-1\n  mlplat:environment: dev\n  mlplat:network:\n    azCount: 1\n"
    )
    result = runner.invoke(app, ["synth", "bad", "-C", str(project)])
    assert result.exit_code == 2
    assert "mlplat:network.azCount" in result.output and "(got 1)" in result.output


def test_secure_values_become_secret_keys(tmp_path: Path) -> None:
    project = _project(
        tmp_path,
        "config:\n  aws:region: us-east-1\n  mlplat:environment: dev\n"
        "  mlplat:apiKey:\n    secure: v1:abcdef==\n  mlplat:owner: team-x\n",
    )
    files = load_stack(project, "bad")
    assert files.secret_keys == ["mlplat:apiKey"]
    assert files.config["mlplat:apiKey"] == SECRET_PLACEHOLDER
    assert files.config["mlplat:owner"] == "team-x"


def test_console_script_runs_in_a_fresh_process() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "mlplat.cli.app", "synth", "dev", "-f", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["stack"] == "dev"


def test_a_failing_team_program_points_at_its_line_and_debug_prints_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.yaml").write_text("name: team\nruntime: python\n")
    (tmp_path / "Pulumi.dev.yaml").write_text("config:\n  aws:region: us-east-1\n")
    program = (
        "import pulumi\n\nnetwork = pulumi.StackReference('acme/net/prod')\n"
        "pulumi.export('vpc', network.require_output('vpcId'))\n"
    )
    (tmp_path / "__main__.py").write_text(program)
    refs = tmp_path / "refs.yaml"
    refs.write_text("acme/net/prod:\n  vpcId: vpc-1\n")
    ok = runner.invoke(app, ["--stack-references", str(refs), "synth", "dev", "-C", str(tmp_path), "-f", "json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["outputs"] == {"vpc": "vpc-1"}
    missing = runner.invoke(app, ["synth", "dev", "-C", str(tmp_path)])
    assert missing.exit_code == 2 and "StackReference 'acme/net/prod': no outputs for it offline" in missing.output

    (tmp_path / "__main__.py").write_text(program + "raise RuntimeError('bad input')\n")
    plain = runner.invoke(app, ["--stack-references", str(refs), "synth", "dev", "-C", str(tmp_path)])
    assert plain.exit_code == 2
    assert "RuntimeError in the stack program: bad input" in plain.output and "__main__.py:5" in plain.output
    assert "mlplat --debug" in plain.output and "Traceback" not in plain.output
    debug = runner.invoke(app, ["--debug", "--stack-references", str(refs), "synth", "dev", "-C", str(tmp_path)])
    assert debug.exit_code == 2 and "Traceback (most recent call last)" in debug.output
