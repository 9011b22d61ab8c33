"""The account bootstrap program renders offline: a locked-down state bucket, a secrets key, and GitHub
roles that only the named protected environments (deploy), pull requests (preview) or the ML pipeline's jobs
(pipeline: push serving images, describe the cluster) can assume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlplat.components.bootstrap import GitHubAccessArgs
from mlplat.infra.checks import check_render
from mlplat.infra.engine import Render
from mlplat.infra.synth import render_stack

BOOTSTRAP = Path(__file__).resolve().parents[2] / "bootstrap"
ROLE = "aws:iam/role:Role"


@pytest.fixture(scope="module")
def account() -> Render:
    return render_stack("account", BOOTSTRAP)


def trust(stack: Render, name: str) -> dict:
    (stmt,) = json.loads(stack.one(ROLE, name).inputs["assumeRolePolicy"])["Statement"]
    return stmt


def test_state_bucket_is_protected_versioned_encrypted_and_tls_only(account: Render) -> None:
    bucket = account.one("aws:s3/bucket:Bucket")
    assert bucket.options["protect"] and bucket.options["retain_on_delete"]
    assert account.one("aws:s3/bucketVersioning:BucketVersioning").inputs["versioningConfiguration"] == {
        "status": "Enabled"}
    assert account.one("aws:s3/bucketPolicy:BucketPolicy")
    assert account.outputs["pulumiLogin"] == f"s3://{bucket.id}"
    assert account.outputs["secretsProvider"] == "awskms://alias/mlplat-pulumi-secrets?region=us-east-1"


SUB = "token.actions.githubusercontent.com:sub"


def test_deploy_role_trusts_only_the_named_protected_environments(account: Render) -> None:
    stmt = trust(account, "github-deploy")
    assert stmt["Action"] == "sts:AssumeRoleWithWebIdentity"
    # Exact subjects only: no StringLike, so no wildcard (`environment:*`) and no branch can reach the admin role.
    assert set(stmt["Condition"]) == {"StringEquals"}
    assert stmt["Condition"]["StringEquals"] == {
        "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
        SUB: ["repo:example-org/mlplat:environment:dev", "repo:example-org/mlplat:environment:production"]}
    oidc = account.one("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert oidc.inputs["url"] == "https://token.actions.githubusercontent.com"
    assert oidc.id in stmt["Principal"]["Federated"]


@pytest.mark.parametrize("subject", [
    "repo:example-org/mlplat:environment:not-protected",   # created on the fly by a PR's workflow
    "repo:example-org/mlplat:pull_request",
    "repo:example-org/mlplat:ref:refs/heads/main",
    "repo:other-org/mlplat:environment:production",
])
def test_no_other_subject_can_assume_the_deploy_role(account: Render, subject: str) -> None:
    stmt = trust(account, "github-deploy")
    assert subject not in stmt["Condition"]["StringEquals"][SUB]
    assert not any("*" in s or "?" in s for s in stmt["Condition"]["StringEquals"][SUB])


def test_pipeline_role_pushes_serving_images_and_describes_clusters_only(account: Render) -> None:
    stmt = trust(account, "github-pipeline")
    assert set(stmt["Condition"]) == {"StringEquals"}
    assert stmt["Condition"]["StringEquals"][SUB] == [
        "repo:example-org/mlplat:ref:refs/heads/main", "repo:example-org/mlplat:environment:dev",
        "repo:example-org/mlplat:environment:production"]
    role = account.one(ROLE, "github-pipeline")
    assert not [a for a in account.by_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                if a.inputs["role"] == role.id]  # no managed policies
    policy = json.loads(account.one("aws:iam/rolePolicy:RolePolicy", "github-pipeline").inputs["policy"])
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert set(by_sid) == {"RegistryLogin", "PushServingImages", "Kubeconfig"}
    assert by_sid["RegistryLogin"]["Action"] == ["ecr:GetAuthorizationToken"]
    assert by_sid["PushServingImages"]["Resource"] == [
        "arn:aws:ecr:us-east-1:123456789012:repository/mlplat-dev/serving",
        "arn:aws:ecr:us-east-1:123456789012:repository/mlplat-production/serving"]
    assert not any(a.startswith("ecr:Delete") or a == "ecr:*" for a in by_sid["PushServingImages"]["Action"])
    assert by_sid["Kubeconfig"] == {**by_sid["Kubeconfig"], "Action": ["eks:DescribeCluster"], "Resource": [
        "arn:aws:eks:us-east-1:123456789012:cluster/mlplat-dev",
        "arn:aws:eks:us-east-1:123456789012:cluster/mlplat-production"]}
    assert "pipeline" in account.outputs["pipelineRoleArn"]


@pytest.mark.parametrize("environments", [("*",), ("prod*",), ()])
def test_deploy_environments_are_exact_names(environments: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="deploy_environments"):
        GitHubAccessArgs(repository="example-org/mlplat", deploy_environments=environments)


def test_preview_role_is_read_only_for_pull_requests(account: Render) -> None:
    stmt = trust(account, "github-preview")
    assert stmt["Condition"]["StringEquals"][SUB] == ["repo:example-org/mlplat:pull_request"]
    attached = {a.inputs["policyArn"] for a in account.by_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                if a.inputs["role"] == account.one(ROLE, "github-preview").id}
    assert attached == {"arn:aws:iam::aws:policy/ReadOnlyAccess"}
    inline = json.loads(account.one("aws:iam/rolePolicy:RolePolicy", "github-preview-state").inputs["policy"])
    locks = next(s for s in inline["Statement"] if s["Sid"] == "StateLocks")
    assert locks["Resource"][0].endswith("/.pulumi/locks/*")


def test_bootstrap_passes_the_mandatory_policy_rules(account: Render) -> None:
    document = account.to_json()
    mandatory = [f for f in check_render(document, "production") if f.enforcement == "mandatory"]
    assert mandatory == [], [(f.rule, f.resource, f.problem) for f in mandatory]


def test_repository_must_be_owner_slash_name() -> None:
    with pytest.raises(ValueError, match="expected owner/name"):
        GitHubAccessArgs(repository="mlplat")
