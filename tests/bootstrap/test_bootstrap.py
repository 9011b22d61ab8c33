"""The account bootstrap program renders offline: a locked-down state bucket, a secrets key, and GitHub
roles that only the named protected environments (deploy), pull requests (preview) or the ML pipeline's jobs
(pipeline: describe the clusters; its kubectl access is the platform's PipelineAccess) can assume."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from mlplat.components.bootstrap import READ_ONLY, GitHubAccess, GitHubAccessArgs
from mlplat.components.platform import MlPlatformArgs
from mlplat.infra.engine import Render
from mlplat.infra.synth import render_stack
from mlplat.policy.check import check_render

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
        "status": "Enabled"
    }
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
        SUB: ["repo:example-org/mlplat:environment:dev", "repo:example-org/mlplat:environment:production"],
    }
    oidc = account.one("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert oidc.inputs["url"] == "https://token.actions.githubusercontent.com"
    assert oidc.id in stmt["Principal"]["Federated"]


@pytest.mark.parametrize(
    "subject",
    [
        "repo:example-org/mlplat:environment:not-protected",  # created on the fly by a PR's workflow
        "repo:example-org/mlplat:pull_request",
        "repo:example-org/mlplat:ref:refs/heads/main",
        "repo:other-org/mlplat:environment:production",
    ],
)
def test_no_other_subject_can_assume_the_deploy_role(account: Render, subject: str) -> None:
    stmt = trust(account, "github-deploy")
    assert subject not in stmt["Condition"]["StringEquals"][SUB]
    assert not any("*" in s or "?" in s for s in stmt["Condition"]["StringEquals"][SUB])


def test_pipeline_role_only_describes_the_stacks_clusters(account: Render) -> None:
    stmt = trust(account, "github-pipeline")
    assert set(stmt["Condition"]) == {"StringEquals"}
    assert stmt["Condition"]["StringEquals"][SUB] == [
        "repo:example-org/mlplat:ref:refs/heads/main",
        "repo:example-org/mlplat:environment:dev",
        "repo:example-org/mlplat:environment:production",
    ]
    role = account.one(ROLE, "github-pipeline")
    assert not [
        a for a in account.by_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment") if a.inputs["role"] == role.id
    ]  # no managed policies
    policy = json.loads(account.one("aws:iam/rolePolicy:RolePolicy", "github-pipeline").inputs["policy"])
    # ml-pipeline.yml pushes no image (deploy.yml does) and reaches MLflow over HTTP: no ECR, no S3
    assert policy["Statement"] == [
        {
            "Sid": "Kubeconfig",
            "Effect": "Allow",
            "Action": ["eks:DescribeCluster"],
            "Resource": [
                "arn:aws:eks:us-east-1:123456789012:cluster/mlplat-dev",
                "arn:aws:eks:us-east-1:123456789012:cluster/mlplat-production",
            ],
        }
    ]
    assert "pipeline" in account.outputs["pipelineRoleArn"]


WORKFLOWS = BOOTSTRAP.parent / ".github" / "workflows"


def test_pipeline_role_grants_what_the_ml_workflow_does_with_aws_and_trusts_each_job_that_assumes_it(
    account: Render,
) -> None:
    workflow = yaml.safe_load((WORKFLOWS / "ml-pipeline.yml").read_text())
    subjects = trust(account, "github-pipeline")["Condition"]["StringEquals"][SUB]
    environments = workflow["jobs"]["canary"]["environment"]
    assert environments == "${{ inputs.stack }}"
    stacks = workflow[True]["workflow_dispatch"]["inputs"]["stack"]["options"]  # YAML 1.1 reads `on` as True
    actions: set[str] = set()
    for job in workflow["jobs"].values():
        uses = [step.get("uses", "") for step in job["steps"]]
        if not any(
            step.get("with", {}).get("role-to-assume") == "${{ vars.AWS_PIPELINE_ROLE_ARN }}" for step in job["steps"]
        ):
            continue
        # a job with an environment presents environment:<stack>; one without, the branch it runs from
        wanted = (
            [f"repo:example-org/mlplat:environment:{stack}" for stack in stacks]
            if "environment" in job
            else ["repo:example-org/mlplat:ref:refs/heads/main"]
        )
        assert set(wanted) <= set(subjects)
        scripts = " ".join(step.get("run", "") for step in job["steps"])
        if "aws eks update-kubeconfig" in scripts:
            actions.add("eks:DescribeCluster")
        if any(u.startswith("aws-actions/amazon-ecr-login") for u in uses) or "docker push" in scripts:
            actions |= {"ecr:GetAuthorizationToken", "ecr:PutImage"}
        assert "aws s3" not in scripts  # the model registry is MLflow over HTTP; artifacts go through its server
    policy = json.loads(account.one("aws:iam/rolePolicy:RolePolicy", "github-pipeline").inputs["policy"])
    granted = {action for stmt in policy["Statement"] for action in stmt["Action"]}
    assert actions <= granted and (("ecr:PutImage" in granted) == ("ecr:PutImage" in actions))
    assert granted - actions <= {
        "ecr:BatchCheckLayerAvailability",
        "ecr:InitiateLayerUpload",
        "ecr:UploadLayerPart",
        "ecr:CompleteLayerUpload",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
    }


def test_pipeline_push_repositories_grant_push_to_exactly_those(render_program: Callable[..., Render]) -> None:
    def program() -> None:
        GitHubAccess(
            "gh",
            GitHubAccessArgs(
                repository="example-org/mlplat",
                pipeline_stacks=("dev",),
                pipeline_push_repositories=("serving",),
                oidc_provider_arn="arn:aws:iam::1:oidc-provider/x",
            ),
        )

    rendered = render_program(program, config={"aws:region": "us-east-1"})
    policy = json.loads(rendered.one("aws:iam/rolePolicy:RolePolicy", "gh-pipeline").inputs["policy"])
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert set(by_sid) == {"Kubeconfig", "RegistryLogin", "PushImages"}
    assert by_sid["RegistryLogin"]["Action"] == ["ecr:GetAuthorizationToken"]
    assert by_sid["PushImages"]["Resource"] == ["arn:aws:ecr:us-east-1:123456789012:repository/mlplat-dev/serving"]
    assert not any(a.startswith("ecr:Delete") or a == "ecr:*" for a in by_sid["PushImages"]["Action"])
    with pytest.raises(ValueError, match="pipeline_push_repositories"):
        GitHubAccessArgs(repository="example-org/mlplat", pipeline_push_repositories=("*",))


@pytest.mark.parametrize("environments", [("*",), ("prod*",), ()])
def test_deploy_environments_are_exact_names(environments: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="deploy_environments"):
        GitHubAccessArgs(repository="example-org/mlplat", deploy_environments=environments)


def test_preview_role_is_read_only_for_pull_requests(account: Render) -> None:
    stmt = trust(account, "github-preview")
    assert stmt["Condition"]["StringEquals"][SUB] == ["repo:example-org/mlplat:pull_request"]
    attached = {
        a.inputs["policyArn"]
        for a in account.by_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if a.inputs["role"] == account.one(ROLE, "github-preview").id
    }
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


def readme_bullet(role: str) -> str:
    text = (BOOTSTRAP.parent / "README.md").read_text()
    start = text.index(f"- **{role}** (`{role}RoleArn`")
    end = text.find("\n- **", start + 1)
    return " ".join(text[start : end if end != -1 else text.index("\n\n", start)].split())


def test_readme_states_each_roles_trust_and_permissions_as_the_bootstrap_renders_them(account: Render) -> None:
    defaults = GitHubAccessArgs(repository="example-org/mlplat")
    deploy, preview, pipeline = (readme_bullet(role) for role in ("deploy", "preview", "pipeline"))
    assert f"default {' and '.join(f'`{e}`' for e in defaults.deploy_environments)})" in deploy
    assert trust(account, "github-deploy")["Condition"]["StringEquals"][SUB] == [
        f"repo:example-org/mlplat:environment:{e}" for e in defaults.deploy_environments
    ]
    assert "no branch, pull request or other environment" in deploy
    assert "`ReadOnlyAccess`" in preview and "only pull requests" in preview
    assert READ_ONLY.endswith("/ReadOnlyAccess")
    assert trust(account, "github-preview")["Condition"]["StringEquals"][SUB] == [
        "repo:example-org/mlplat:pull_request"
    ]
    assert "only describe the `mlplat-<stack>` clusters" in pipeline and "no S3 or ECR access" in pipeline
    policy = json.loads(account.one("aws:iam/rolePolicy:RolePolicy", "github-pipeline").inputs["policy"])
    actions = {action for stmt in policy["Statement"] for action in stmt["Action"]}
    assert actions == {"eks:DescribeCluster"}
    assert "`mlplat:deploy.pipelineRoleArn`" in pipeline
    assert "pipeline_role_arn" in MlPlatformArgs.__dataclass_fields__
    workflow = (WORKFLOWS / "ml-pipeline.yml").read_text()
    assert (
        "vars.AWS_PIPELINE_ROLE_ARN" in workflow
        and "`AWS_PIPELINE_ROLE_ARN`" in (BOOTSTRAP.parent / "README.md").read_text()
    )
