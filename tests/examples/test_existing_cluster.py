"""examples/existing-cluster: a team's workloads on a cluster it does not own, read through a StackReference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlplat.cli.app import app
from mlplat.infra.engine import Render
from mlplat.infra.synth import render_stack

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "existing-cluster"
ISSUER = "oidc.eks.us-east-1.amazonaws.com/id/5E1C7F0D2B3A4C59A1B2C3D4E5F60718"


@pytest.fixture(scope="module")
def team() -> Render:
    return render_stack("dev", EXAMPLE)


def test_workloads_land_on_the_platforms_cluster_in_the_teams_namespace(team: Render) -> None:
    provider = team.one("pulumi:providers:kubernetes")
    for record in team.resources:
        if record.type.startswith("kubernetes:") and record.custom:
            assert record.options["provider"] == provider.urn, record.name
            if record.type != "kubernetes:core/v1:Namespace":
                assert record.inputs["metadata"]["namespace"] == "search", record.name
    cron = team.one("kubernetes:batch/v1:CronJob").inputs
    trainer = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert trainer["image"].endswith(":1.4.0-cuda")  # a GPU job runs a CUDA build
    env = {e["name"]: e.get("value") for e in trainer["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.mlflow.svc.cluster.local:5000"


def test_irsa_roles_trust_the_platforms_oidc_provider_and_reach_only_the_teams_prefixes(team: Render) -> None:
    roles = {r.inputs["tags"]["mlplat.io/service-account"]: r for r in team.by_type("aws:iam/role:Role")}
    assert set(roles) == {"search.search-ranker", "search.search-ranker-train"}
    for account, role in roles.items():
        (stmt,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
        assert stmt["Principal"]["Federated"].endswith(f":oidc-provider/{ISSUER}")
        subject = "system:serviceaccount:" + account.replace(".", ":")
        assert stmt["Condition"]["StringEquals"][f"{ISSUER}:sub"] == subject
    policies = {json.dumps(json.loads(p.inputs["policy"])) for p in team.by_type("aws:iam/rolePolicy:RolePolicy")}
    assert any("mlplat-production-artifacts-1a2b3c4/mlflow/*" in p for p in policies)
    assert any("mlplat-production-artifacts-1a2b3c4/checkpoints/search-ranker/*" in p for p in policies)


def test_check_and_cost_pass_on_the_example() -> None:
    runner = CliRunner()
    checked = runner.invoke(app, ["check", "dev", "-C", str(EXAMPLE)])
    assert checked.exit_code == 0, checked.output
    assert checked.output.startswith("dev (dev): all ") and "rules pass" in checked.output
    priced = runner.invoke(app, ["cost", "dev", "-C", str(EXAMPLE)])
    assert priced.exit_code == 0, priced.output
