"""The account bootstrap program renders offline: a locked-down state bucket, a secrets key, and GitHub
roles that only this repository's main branch (deploy) or its pull requests (preview) can assume."""

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


def test_deploy_role_trusts_only_the_main_branch_and_deployment_environments(account: Render) -> None:
    stmt = trust(account, "github-deploy")
    assert stmt["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert stmt["Condition"]["StringEquals"] == {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com"}
    assert stmt["Condition"]["StringLike"]["token.actions.githubusercontent.com:sub"] == [
        "repo:example-org/mlplat:ref:refs/heads/main", "repo:example-org/mlplat:environment:*"]
    oidc = account.one("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert oidc.inputs["url"] == "https://token.actions.githubusercontent.com"
    assert oidc.id in stmt["Principal"]["Federated"]


def test_preview_role_is_read_only_for_pull_requests(account: Render) -> None:
    stmt = trust(account, "github-preview")
    assert stmt["Condition"]["StringLike"]["token.actions.githubusercontent.com:sub"] == [
        "repo:example-org/mlplat:pull_request"]
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
