"""GitHubAccess: GitHub Actions reaches AWS through OIDC: a deploy role only protected environments can assume, a
read-only preview role for pull requests, and a pipeline role with only what the ML workflow needs.

The pipeline role's Kubernetes access is the other half: :class:`mlplat.components.pipeline_access.PipelineAccess`
in the platform stack (``MlPlatformArgs.pipeline_role_arn``) gives it an EKS access entry with only the kubectl
verbs ``.github/workflows/ml-pipeline.yml`` uses."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from mlplat.components.iam import policy_document, statement
from mlplat.components.options import component_args

__all__ = ["GitHubAccess", "GitHubAccessArgs"]

GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
ADMINISTRATOR = "arn:aws:iam::aws:policy/AdministratorAccess"
READ_ONLY = "arn:aws:iam::aws:policy/ReadOnlyAccess"


@dataclass(frozen=True)
class GitHubAccessArgs:
    """Arguments of :class:`GitHubAccess`.

    Attributes:
        repository: ``owner/name`` of the repository whose workflows may assume the roles.
        deploy_branch: The branch the ML pipeline's build jobs run from (its jobs without an environment).
        deploy_environments: The GitHub deployment environments whose jobs may assume the deploy role, by exact
            name. Each must exist in the repository's settings with protection rules (required reviewers,
            deployment branches = the deploy branch): GitHub creates an environment a job names on the fly,
            *without* protection, so only names that already exist with rules are safe to trust, and a
            wildcard would admit any job that names any environment, a pull request's included.
        pipeline_stacks: Stacks whose ``mlplat-<stack>`` cluster the ML pipeline's role may describe (``aws eks
            update-kubeconfig``), and whose ECR repositories in ``pipeline_push_repositories`` it may push to.
        pipeline_push_repositories: ECR repositories (``mlplat-<stack>/<repository>``) the pipeline pushes images
            to. None by default: ``ml-pipeline.yml`` trains, registers and moves MLflow aliases, and pushes no
            image (deploy.yml builds and deploys the images); the model registry is MLflow over HTTP, whose
            server stores the artifacts (``--serve-artifacts``), so the role needs no S3 access either.
        state_bucket_arn: The Pulumi state bucket (previews need its objects and lock files).
        state_key_arn: The KMS key of the state bucket.
        secrets_key_arn: The KMS key of the ``awskms://`` secrets provider.
        oidc_provider_arn: An existing GitHub OIDC provider in the account; default: create one (an account
            has at most one per URL).
    """

    repository: str
    deploy_branch: str = "main"
    deploy_environments: tuple[str, ...] = ("dev", "production")
    pipeline_stacks: tuple[str, ...] = ("dev", "production")
    pipeline_push_repositories: tuple[str, ...] = ()
    state_bucket_arn: pulumi.Input[str] | None = None
    state_key_arn: pulumi.Input[str] | None = None
    secrets_key_arn: pulumi.Input[str] | None = None
    oidc_provider_arn: pulumi.Input[str] | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", self.repository):
            raise ValueError(f"GitHubAccessArgs.repository={self.repository!r}: expected owner/name")
        if not self.deploy_environments:
            raise ValueError("GitHubAccessArgs.deploy_environments: name at least one protected environment")
        for field_name in ("deploy_environments", "pipeline_stacks", "pipeline_push_repositories"):
            for value in getattr(self, field_name):
                if not re.fullmatch(r"[\w.-]+", value):
                    raise ValueError(
                        f"GitHubAccessArgs.{field_name}: {value!r} is not an exact name (no wildcards: "
                        "GitHub creates an unknown environment on the fly, without protection rules)"
                    )


def _github_trust_policy(provider_arn: str, subjects: list[str]) -> str:
    """A trust policy admitting GitHub's OIDC tokens for exactly these ``sub`` values (no wildcards), audience
    STS."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Federated": provider_arn},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {
                        "StringEquals": {
                            f"{GITHUB_OIDC_HOST}:aud": "sts.amazonaws.com",
                            f"{GITHUB_OIDC_HOST}:sub": subjects,
                        },
                    },
                }
            ],
        },
        sort_keys=True,
    )


class GitHubAccess(pulumi.ComponentResource):
    """OIDC trust between GitHub Actions and the account: no long-lived AWS keys in CI.

    The deploy role can do what ``pulumi up`` of the platform needs (it creates IAM roles, VPCs and
    clusters, so it is an administrator); its guard is the trust policy: only jobs bound to one of the named
    deployment environments of this one repository (``repo:<repo>:environment:production``...), exact
    names, never a wildcard nor a branch: a job that names an environment GitHub does not know gets one created
    on the fly without protection rules, so ``environment:*`` would let a pull request's workflow skip the
    production approval. The preview role is read-only plus the state bucket's lock files and decryption of
    the state and secrets, and only pull requests of the repository can assume it. The pipeline role (the ML
    workflow, ``.github/workflows/ml-pipeline.yml``) can describe the stacks' clusters (for ``aws eks
    update-kubeconfig``) and push to ``pipeline_push_repositories`` (none by default), from the deploy branch's
    jobs and the named environments' jobs only; what it may do inside the cluster is the platform's access entry
    for it (:class:`mlplat.components.pipeline_access.PipelineAccess`).

    ``deploy_role``, ``preview_role`` and ``pipeline_role`` are the IAM role resources.
    """

    deploy_role_arn: pulumi.Output[str]
    """The role ``pulumi up`` runs as in the deploy workflow."""
    preview_role_arn: pulumi.Output[str]
    """The read-only role of pull requests' previews."""
    pipeline_role_arn: pulumi.Output[str]
    """The ML pipeline's role (``MlPlatformArgs.pipeline_role_arn`` of the platform stack)."""
    oidc_provider_arn: pulumi.Output[str]
    """GitHub's OIDC provider in the account (created, or the one given)."""

    def __init__(
        self, name: str, args: GitHubAccessArgs | None = None, opts: pulumi.ResourceOptions | None = None, **kwargs: Any
    ) -> None:
        args = component_args("GitHubAccess", GitHubAccessArgs, args, kwargs)
        super().__init__("mlplat:bootstrap:GitHubAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        provider_arn: pulumi.Input[str]
        if args.oidc_provider_arn is None:
            # AWS validates GitHub's certificate itself; no thumbprint list is needed.
            provider_arn = aws.iam.OpenIdConnectProvider(
                f"{name}-oidc",
                url=f"https://{GITHUB_OIDC_HOST}",
                client_id_lists=["sts.amazonaws.com"],
                tags={"Name": f"{name}-oidc"},
                opts=child,
            ).arn
        else:
            provider_arn = args.oidc_provider_arn
        repo = args.repository
        self.oidc_provider_arn = pulumi.Output.from_input(provider_arn)
        self.deploy_role = aws.iam.Role(
            f"{name}-deploy",
            description=f"pulumi up from {repo}'s protected environments: {', '.join(args.deploy_environments)}",
            assume_role_policy=self.oidc_provider_arn.apply(
                lambda arn: _github_trust_policy(
                    arn, [f"repo:{repo}:environment:{env}" for env in args.deploy_environments]
                )
            ),
            max_session_duration=3600 * 2,
            tags={"Name": f"{name}-deploy"},
            opts=child,
        )
        aws.iam.RolePolicyAttachment(
            f"{name}-deploy-admin", role=self.deploy_role.name, policy_arn=ADMINISTRATOR, opts=child
        )
        self.preview_role = aws.iam.Role(
            f"{name}-preview",
            description=f"Read-only pulumi preview for {repo}'s pull requests",
            assume_role_policy=self.oidc_provider_arn.apply(
                lambda arn: _github_trust_policy(arn, [f"repo:{repo}:pull_request"])
            ),
            tags={"Name": f"{name}-preview"},
            opts=child,
        )
        aws.iam.RolePolicyAttachment(
            f"{name}-preview-read-only", role=self.preview_role.name, policy_arn=READ_ONLY, opts=child
        )
        statements = []
        if args.state_bucket_arn is not None:
            # Previews take and release a lock object; they never write the checkpoint itself.
            statements.append(
                statement(
                    ["s3:PutObject", "s3:DeleteObject"],
                    [pulumi.Output.concat(args.state_bucket_arn, "/.pulumi/locks/*")],
                    sid="StateLocks",
                )
            )
        keys = [k for k in (args.state_key_arn, args.secrets_key_arn) if k is not None]
        if keys:
            statements.append(statement(["kms:Decrypt", "kms:GenerateDataKey"], keys, sid="StateAndSecrets"))
        if statements:
            aws.iam.RolePolicy(
                f"{name}-preview-state", role=self.preview_role.id, policy=policy_document(statements), opts=child
            )
        self.pipeline_role = aws.iam.Role(
            f"{name}-pipeline",
            description=f"The ML pipeline of {repo}: describe the cluster (kubectl access: its EKS access entry)",
            assume_role_policy=self.oidc_provider_arn.apply(
                lambda arn: _github_trust_policy(
                    arn,
                    [
                        f"repo:{repo}:ref:refs/heads/{args.deploy_branch}",
                        *(f"repo:{repo}:environment:{env}" for env in args.deploy_environments),
                    ],
                )
            ),
            max_session_duration=3600 * 2,
            tags={"Name": f"{name}-pipeline"},
            opts=child,
        )
        invoke = pulumi.InvokeOutputOptions(parent=self)
        account = aws.get_caller_identity_output(opts=invoke).account_id
        region = aws.get_region_output(opts=invoke).region
        clusters = [
            pulumi.Output.concat("arn:aws:eks:", region, ":", account, f":cluster/mlplat-{stack}")
            for stack in args.pipeline_stacks
        ]
        pipeline = [statement(["eks:DescribeCluster"], clusters, sid="Kubeconfig")]
        if args.pipeline_push_repositories:
            repositories = [
                pulumi.Output.concat("arn:aws:ecr:", region, ":", account, f":repository/mlplat-{stack}/{repository}")
                for stack in args.pipeline_stacks
                for repository in args.pipeline_push_repositories
            ]
            pipeline += [
                # GetAuthorizationToken has no resource-level permissions (ECR's service authorization reference).
                statement(["ecr:GetAuthorizationToken"], ["*"], sid="RegistryLogin"),
                statement(
                    [
                        "ecr:BatchCheckLayerAvailability",
                        "ecr:InitiateLayerUpload",
                        "ecr:UploadLayerPart",
                        "ecr:CompleteLayerUpload",
                        "ecr:PutImage",
                        "ecr:BatchGetImage",
                        "ecr:GetDownloadUrlForLayer",
                    ],
                    repositories,
                    sid="PushImages",
                ),
            ]
        aws.iam.RolePolicy(f"{name}-pipeline", role=self.pipeline_role.id, policy=policy_document(pipeline), opts=child)
        self.deploy_role_arn = self.deploy_role.arn
        self.preview_role_arn = self.preview_role.arn
        self.pipeline_role_arn = self.pipeline_role.arn
        self.register_outputs(
            {
                "deploy_role_arn": self.deploy_role_arn,
                "preview_role_arn": self.preview_role_arn,
                "pipeline_role_arn": self.pipeline_role_arn,
                "oidc_provider_arn": self.oidc_provider_arn,
            }
        )
