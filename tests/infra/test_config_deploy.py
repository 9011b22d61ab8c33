"""mlplat:deploy and the API endpoint: the runner that deploys a stack must be able to reach its Kubernetes API."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pulumi
import pytest
from support.config import config

from mlplat.infra.config import ConfigError, load
from mlplat.infra.engine import Render
from mlplat.infra.program import build


def problems(values: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(values)
    return caught.value.problems


def test_default_runner_is_the_stacks_own_self_hosted_runner() -> None:
    cfg = load(config("production"))
    assert cfg.deploy.labels(cfg.environment) == ["self-hosted", "linux", "mlplat-production"]


def test_a_github_hosted_runner_cannot_deploy_a_private_or_restricted_api() -> None:
    (problem,) = problems(config("production", deploy={"runner": ["ubuntu-latest"]}))
    assert problem == (
        "mlplat:deploy.runner: ['ubuntu-latest'] is a GitHub-hosted runner, which cannot reach this stack's Kubernetes "
        "API (private); use a self-hosted runner inside the VPC, e.g. [self-hosted, linux, mlplat-production]"
    )
    restricted = config(
        "dev",
        deploy={"runner": ["ubuntu-24.04"]},
        cluster={"endpointPublicAccess": True, "publicAccessCidrs": ["52.94.0.0/22"]},
    )
    (problem,) = problems(restricted)
    assert "(open only to ['52.94.0.0/22'])" in problem
    world = config(
        "dev",
        deploy={"runner": ["ubuntu-latest"]},
        cluster={"endpointPublicAccess": True, "publicAccessCidrs": ["0.0.0.0/0"]},
    )
    assert load(world).deploy.runner == ["ubuntu-latest"]


def test_an_empty_runner_list_is_refused() -> None:
    (problem,) = problems(config("dev", deploy={"runner": []}))
    assert problem.startswith("mlplat:deploy.runner: an empty list names no runner")


def test_the_cli_prints_the_runner_labels_the_workflow_reads(repo_root: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mlplat.cli.app", "runner", "production", "-C", str(repo_root)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out) == ["self-hosted", "linux", "mlplat-production"]
    workflow = (repo_root / ".github/workflows/deploy-stack.yml").read_text()
    assert 'mlplat runner "${{ inputs.stack }}"' in workflow
    assert "runs-on: ${{ fromJSON(needs.runner.outputs.labels) }}" in workflow


def test_monitoring_must_page_someone() -> None:
    (problem,) = problems(config("dev", alarms={"enabled": False}))
    assert problem.startswith("mlplat:monitoring: alerts would page no one (mlplat:alarms is disabled")
    slack = {"name": "team", "slack_configs": [{"api_url_file": "/etc/am/slack", "channel": "#ml"}]}
    assert load(config("dev", alarms={"enabled": False}, monitoring={"receiver": slack})).monitoring.receiver == slack
    assert load(config("dev", alarms={"enabled": False}, monitoring={"alertsReceiverOptional": True}))


PIPELINE_ROLE = "arn:aws:iam::123456789012:role/mlplat-pipeline"


def test_the_pipeline_role_gets_its_cluster_access_only_when_the_stack_names_it(
    render_program: Callable[..., Render],
) -> None:
    def rendered(values: dict[str, str]) -> Render:
        def program() -> None:
            for key, value in build(load(values)).items():
                pulumi.export(key, value)

        return render_program(program, config=values, stack="dev")

    named = rendered(config("dev", deploy={"pipelineRoleArn": PIPELINE_ROLE}))
    (entry,) = [
        r
        for r in named.resources
        if r.type == "aws:eks/accessEntry:AccessEntry" and r.inputs.get("principalArn") == PIPELINE_ROLE
    ]
    assert entry.inputs["kubernetesGroups"], "the role maps to the pipeline's RBAC group, not to an access policy"
    assert not [
        r
        for r in named.resources
        if r.type == "aws:eks/accessPolicyAssociation:AccessPolicyAssociation"
        and r.inputs.get("principalArn") == PIPELINE_ROLE
    ]
    unnamed = rendered(config("dev"))
    assert not [r for r in unnamed.resources if r.inputs.get("principalArn") == PIPELINE_ROLE]


def test_a_pipeline_role_that_is_not_a_role_arn_is_refused_verbatim() -> None:
    (problem,) = problems(config("dev", deploy={"pipelineRoleArn": "arn:aws:iam::123:user/ci_bot!"}))
    assert problem.startswith("mlplat:deploy.pipelineRoleArn: 'arn:aws:iam::123:user/ci_bot!' is not an IAM role ARN")
