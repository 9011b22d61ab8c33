"""IAM roles for Kubernetes service accounts (IRSA): a trust policy that admits exactly one service account."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_aws as aws

STS_AUDIENCE = "sts.amazonaws.com"
IAM_ROLE_NAME_MAX = 64
AUTONAME_SUFFIX = 8  # Pulumi appends "-" and 7 random hex characters


def role_name(resource_name: str) -> str | None:
    """An explicit IAM role name when Pulumi's auto-name (``<name>-<7 hex>``) would pass IAM's 64 characters.

    Pulumi refuses such a name at deploy time, which no offline render would show; long names are cut and
    end in a hash of the full name, so they stay unique and stable.
    """
    if len(resource_name) + AUTONAME_SUFFIX <= IAM_ROLE_NAME_MAX:
        return None
    digest = hashlib.sha256(resource_name.encode()).hexdigest()[:8]
    return f"{resource_name[: IAM_ROLE_NAME_MAX - 9].rstrip('-')}-{digest}"


def service_account_subject(namespace: str, service_account: str) -> str:
    """The ``sub`` claim of a service account's projected token."""
    return f"system:serviceaccount:{namespace}:{service_account}"


def irsa_trust_policy(oidc_provider_arn: str, oidc_issuer: str, namespace: str, service_account: str) -> str:
    """A trust policy letting only ``namespace/service_account`` assume the role through the cluster's OIDC provider.

    ``oidc_issuer`` is the issuer without ``https://`` (``oidc.eks.<region>.amazonaws.com/id/<ID>``). Both
    ``sub`` and ``aud`` are matched with ``StringEquals``: a wildcard on ``sub`` would admit every service
    account of the cluster.
    """
    issuer = oidc_issuer.removeprefix("https://")
    doc: dict[str, Any] = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": oidc_provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{issuer}:sub": service_account_subject(namespace, service_account),
                        f"{issuer}:aud": STS_AUDIENCE,
                    }
                },
            }
        ],
    }
    return json.dumps(doc)


def create_service_account_role(
    resource_name: str,
    *,
    oidc_provider_arn: pulumi.Input[str],
    oidc_issuer: pulumi.Input[str],
    namespace: str,
    service_account: str,
    policy: pulumi.Input[str] | None = None,
    managed_policy_arns: Sequence[str] = (),
    opts: pulumi.ResourceOptions | None = None,
) -> aws.iam.Role:
    """An IAM role for one service account, with an inline ``policy`` and/or AWS-managed policies attached."""
    trust = pulumi.Output.all(oidc_provider_arn, oidc_issuer).apply(
        lambda v: irsa_trust_policy(str(v[0]), str(v[1]), namespace, service_account)
    )
    role = aws.iam.Role(
        resource_name,
        name=role_name(resource_name),
        assume_role_policy=trust,
        description=f"IRSA role of {namespace}/{service_account}",
        tags={"Name": resource_name, "mlplat.io/service-account": f"{namespace}.{service_account}"},
        opts=opts,
    )
    child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=role))
    # The role's aliases are its own: the engine derives its children's from them (they were the role's children).
    child.aliases = None
    if policy is not None:
        aws.iam.RolePolicy(resource_name, role=role.id, policy=policy, opts=child)
    for arn in managed_policy_arns:
        aws.iam.RolePolicyAttachment(
            f"{resource_name}-{arn.rsplit('/', 1)[-1]}", role=role.name, policy_arn=arn, opts=child
        )
    return role
