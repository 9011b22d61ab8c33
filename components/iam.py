"""IAM policy documents built in Python (``pulumi.Output.json_dumps``), not by an invoke per policy.

Building the JSON locally keeps previews fast and lets the offline engine see the exact documents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi_aws as aws


def statement(
    actions: Sequence[str],
    resources: Sequence[pulumi.Input[str]] | pulumi.Input[str],
    *,
    effect: str = "Allow",
    sid: str | None = None,
    condition: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One IAM policy statement."""
    stmt: dict[str, Any] = {"Effect": effect, "Action": list(actions), "Resource": resources}
    if sid:
        stmt["Sid"] = sid
    if condition:
        stmt["Condition"] = dict(condition)
    return stmt


def policy_document(statements: Sequence[Mapping[str, Any]]) -> pulumi.Output[str]:
    """A policy document as a JSON string Output (statements may hold Outputs)."""
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": list(statements)})


def service_trust_policy(service: str) -> str:
    """A trust policy letting an AWS service (e.g. ``vpc-flow-logs.amazonaws.com``) assume the role."""
    import json

    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
        }
    )


def rotated_key(name: str, description: str, opts: pulumi.ResourceOptions) -> aws.kms.Key:
    """A customer-managed KMS key with yearly rotation and the longest deletion window (30 days)."""
    return aws.kms.Key(
        name,
        description=description,
        enable_key_rotation=True,
        deletion_window_in_days=30,
        tags={"Name": name},
        opts=opts,
    )
