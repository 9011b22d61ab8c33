"""GitHubAccess: GitHub Actions reaches AWS through OIDC, with a deploy role and a read-only preview role."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mlplat.components.iam import policy_document, statement

GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
ADMINISTRATOR = "arn:aws:iam::aws:policy/AdministratorAccess"
READ_ONLY = "arn:aws:iam::aws:policy/ReadOnlyAccess"


@dataclass(frozen=True)
class GitHubAccessArgs:
    """Arguments of :class:`GitHubAccess`.

    Attributes:
        repository: ``owner/name`` of the repository whose workflows may assume the roles.
        deploy_branch: The branch whose workflows deploy (``pulumi up``).
        state_bucket_arn: The Pulumi state bucket (previews need its objects and lock files).
        state_key_arn: The KMS key of the state bucket.
        secrets_key_arn: The KMS key of the ``awskms://`` secrets provider.
        oidc_provider_arn: An existing GitHub OIDC provider in the account; default: create one (an account
            has at most one per URL).
    """

    repository: str
    deploy_branch: str = "main"
    state_bucket_arn: pulumi.Input[str] | None = None
    state_key_arn: pulumi.Input[str] | None = None
    secrets_key_arn: pulumi.Input[str] | None = None
    oidc_provider_arn: pulumi.Input[str] | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", self.repository):
            raise ValueError(f"GitHubAccessArgs.repository={self.repository!r}: expected owner/name")


def github_trust_policy(provider_arn: str, subjects: list[str]) -> str:
    """A trust policy admitting GitHub's OIDC tokens for exactly these ``sub`` patterns, audience STS."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {
                "StringEquals": {f"{GITHUB_OIDC_HOST}:aud": "sts.amazonaws.com"},
                "StringLike": {f"{GITHUB_OIDC_HOST}:sub": subjects},
            },
        }],
    }, sort_keys=True)


class GitHubAccess(pulumi.ComponentResource):
    """OIDC trust between GitHub Actions and the account: no long-lived AWS keys in CI.

    The deploy role can do what ``pulumi up`` of the platform needs (it creates IAM roles, VPCs and
    clusters, so it is an administrator); its guard is the trust policy: only workflows on the deploy
    branch, or jobs bound to a GitHub deployment environment (where approvals apply), of this one
    repository. The preview role is read-only plus the state bucket's lock files and decryption of the
    state and secrets, and only pull requests of the repository can assume it.

    Outputs: ``deploy_role``, ``preview_role``, ``oidc_provider_arn``.
    """

    def __init__(self, name: str, args: GitHubAccessArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplat:bootstrap:GitHubAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        provider_arn: pulumi.Input[str]
        if args.oidc_provider_arn is None:
            # AWS validates GitHub's certificate itself; no thumbprint list is needed.
            provider_arn = aws.iam.OpenIdConnectProvider(
                f"{name}-oidc", url=f"https://{GITHUB_OIDC_HOST}", client_id_lists=["sts.amazonaws.com"],
                tags={"Name": f"{name}-oidc"}, opts=child,
            ).arn
        else:
            provider_arn = args.oidc_provider_arn
        repo = args.repository
        self.oidc_provider_arn = pulumi.Output.from_input(provider_arn)
        self.deploy_role = aws.iam.Role(
            f"{name}-deploy",
            description=f"pulumi up from {repo}'s {args.deploy_branch} branch and deployment environments",
            assume_role_policy=self.oidc_provider_arn.apply(lambda arn: github_trust_policy(
                arn, [f"repo:{repo}:ref:refs/heads/{args.deploy_branch}", f"repo:{repo}:environment:*"])),
            max_session_duration=3600 * 2,
            tags={"Name": f"{name}-deploy"},
            opts=child,
        )
        aws.iam.RolePolicyAttachment(f"{name}-deploy-admin", role=self.deploy_role.name, policy_arn=ADMINISTRATOR,
                                     opts=child)
        self.preview_role = aws.iam.Role(
            f"{name}-preview",
            description=f"Read-only pulumi preview for {repo}'s pull requests",
            assume_role_policy=self.oidc_provider_arn.apply(
                lambda arn: github_trust_policy(arn, [f"repo:{repo}:pull_request"])),
            tags={"Name": f"{name}-preview"},
            opts=child,
        )
        aws.iam.RolePolicyAttachment(f"{name}-preview-read-only", role=self.preview_role.name, policy_arn=READ_ONLY,
                                     opts=child)
        statements = []
        if args.state_bucket_arn is not None:
            # Previews take and release a lock object; they never write the checkpoint itself.
            statements.append(statement(["s3:PutObject", "s3:DeleteObject"],
                                        [pulumi.Output.concat(args.state_bucket_arn, "/.pulumi/locks/*")],
                                        sid="StateLocks"))
        keys = [k for k in (args.state_key_arn, args.secrets_key_arn) if k is not None]
        if keys:
            statements.append(statement(["kms:Decrypt", "kms:GenerateDataKey"], keys, sid="StateAndSecrets"))
        if statements:
            aws.iam.RolePolicy(f"{name}-preview-state", role=self.preview_role.id,
                               policy=policy_document(statements), opts=child)
        self.register_outputs({"deploy_role_arn": self.deploy_role.arn, "preview_role_arn": self.preview_role.arn})
