"""The example team stack renders with the offline engine, exactly as `mlplat synth dev -C examples/team-stack`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlplat.infra.engine import MASK, Render
from mlplat.infra.synth import render_stack

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "team-stack"


@pytest.fixture(scope="module")
def team_stack() -> Render:
    return render_stack("dev", EXAMPLE)


def test_the_example_deploys_a_model_service_on_the_teams_cluster(team_stack: Render) -> None:
    provider = team_stack.one("pulumi:providers:kubernetes")
    assert provider.inputs["kubeconfig"] == MASK
    deployment = team_stack.one("kubernetes:apps/v1:Deployment")
    assert deployment.options["provider"] == provider.urn
    container = deployment.inputs["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLPLAT_SERVING_MODEL_URI"] == "models:/fraud-scorer@champion"
    assert deployment.inputs["metadata"]["namespace"] == "fraud"
    assert team_stack.by_type("kubernetes:networking.k8s.io/v1:Ingress") == []


def test_the_example_bucket_is_protected_and_grants_only_the_models_prefix(team_stack: Render) -> None:
    bucket = team_stack.one("aws:s3/bucket:Bucket")
    assert bucket.options["protect"]
    grant = json.loads(team_stack.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    assert grant["Statement"][0]["Resource"] == [f"arn:aws:s3:::{bucket.id}/models/*"]
    assert team_stack.one("pulumi:providers:aws").inputs["region"] == "eu-west-1"
    assert team_stack.outputs["services"] == {"stable": "fraud-scorer-stable"}


def test_check_judges_the_example_by_the_teams_own_policy() -> None:
    from typer.testing import CliRunner

    from mlplat.cli.app import app

    result = CliRunner().invoke(app, ["check", "dev", "-C", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "rules pass" in result.output  # its tags are team and project, as its mlplat:policy requires
