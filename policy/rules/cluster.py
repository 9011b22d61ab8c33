"""EKS and its nodes: secrets encrypted, control-plane logs shipped, the API not open to the internet, the version
in standard support, and IMDSv2 on every node."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from mlplat.components.k8s_versions import EKS_VERSIONS, UnknownVersion, support_status
from mlplat.policy.framework import (
    ADVISORY,
    MANDATORY,
    STRICTER_IN_PRODUCTION,
    Resource,
    ResourceRule,
    Rule,
    Violation,
    as_list,
    get,
    is_false,
    is_true,
)
from mlplat.policy.rules.network import OPEN_IPV4

EKS_REQUIRED_LOG_TYPES: tuple[str, ...] = ("api", "audit", "authenticator")

EKS_AWS_CLUSTER = "aws:eks/cluster:Cluster"
EKS_COMPONENT_CLUSTER = "eks:index:Cluster"
EKS_CLUSTER_TYPES = frozenset({EKS_AWS_CLUSTER, EKS_COMPONENT_CLUSTER})


def eks_secrets_encrypted(res: Resource) -> Iterator[Violation]:
    """Kubernetes secrets envelope-encrypted with KMS."""
    if res.type == EKS_COMPONENT_CLUSTER:
        ok = bool(res.inputs.get("encryptionConfigKeyArn"))
    else:
        ok = any("secrets" in as_list(get(c, "resources")) for c in as_list(res.inputs.get("encryptionConfig")))
    if not ok:
        yield Violation(
            "Kubernetes secrets are not envelope-encrypted with a KMS key",
            "pass a KMS key: encryptionConfigKeyArn (pulumi-eks) or encryptionConfig "
            "{resources: ['secrets'], provider: {keyArn}}",
        )


def eks_control_plane_logs(res: Resource) -> Iterator[Violation]:
    """api, audit and authenticator logs shipped to CloudWatch."""
    enabled = set(as_list(res.inputs.get("enabledClusterLogTypes")))
    missing = [t for t in EKS_REQUIRED_LOG_TYPES if t not in enabled]
    if missing:
        yield Violation(
            f"control-plane log types {', '.join(missing)} are not enabled",
            "set enabledClusterLogTypes to include " + ", ".join(EKS_REQUIRED_LOG_TYPES),
        )


def eks_api_not_open(res: Resource) -> Iterator[Violation]:
    """The public API endpoint is off, or limited to known CIDRs."""
    source: Mapping[str, Any] = res.inputs if res.type == EKS_COMPONENT_CLUSTER else (res.inputs.get("vpcConfig") or {})
    public = source.get("endpointPublicAccess")
    if is_false(public):
        return
    cidrs = as_list(source.get("publicAccessCidrs")) or [OPEN_IPV4]  # EKS's default when unset
    if OPEN_IPV4 in cidrs:
        yield Violation(
            "the Kubernetes API endpoint is reachable from 0.0.0.0/0",
            "set endpointPublicAccess=false (with endpointPrivateAccess=true), or publicAccessCidrs "
            "to your office/VPN ranges",
        )


def eks_standard_support(res: Resource) -> Iterator[Violation]:
    """The control plane's Kubernetes version is in EKS standard support today."""
    version = str(res.inputs.get("version") or "")
    if not version:
        return
    try:
        status = support_status(version)
    except UnknownVersion:
        return  # newer than mlplat's calendar: not past standard support
    if status != "standard":
        newest = max(
            (v for v in EKS_VERSIONS if support_status(v) == "standard"),
            key=lambda v: int(v.split(".")[1]),
            default=None,
        )
        problem = (
            f"Kubernetes {version} is in EKS extended support (billed at about 6x the standard control-plane price)"
            if status == "extended"
            else f"Kubernetes {version} is past the end of EKS support (EKS upgrades such control planes itself)"
        )
        yield Violation(
            problem,
            "upgrade the control plane, then each node pool, one minor at a time"
            + (f" toward {newest}" if newest else ""),
        )


# ----------------------------------------------------------------------------------------------------------
# Nodes: launch templates, instances, node groups

LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
EC2_INSTANCE = "aws:ec2/instance:Instance"
EKS_NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
EKS_MANAGED_NODE_GROUP = "eks:index:ManagedNodeGroup"


def imdsv2_required(res: Resource) -> Iterator[Violation]:
    """Instance metadata only with session tokens (IMDSv2), which blocks SSRF credential theft."""
    fix = "set metadataOptions {httpTokens: 'required', httpPutResponseHopLimit: 2}"
    if res.type in (LAUNCH_TEMPLATE, EC2_INSTANCE):
        tokens = get(res.inputs, "metadataOptions", "httpTokens")
        if tokens != "required":
            yield Violation(f"instance metadata allows IMDSv1 (httpTokens={tokens or 'unset'})", fix)
    elif res.type == EKS_MANAGED_NODE_GROUP:
        if not is_true(res.inputs.get("enableIMDSv2")) and not res.inputs.get("launchTemplate"):
            yield Violation(
                "node group leaves IMDSv1 on", "set enableIMDSv2=true, or pass a launchTemplate that requires IMDSv2"
            )
    elif res.type == EKS_NODE_GROUP and not res.inputs.get("launchTemplate"):
        yield Violation(
            "node group has no launch template, so its nodes accept IMDSv1",
            "pass a launchTemplate whose metadataOptions.httpTokens is 'required'",
        )


RULES: tuple[Rule, ...] = (
    ResourceRule(
        "eks-secrets-encryption",
        "EKS encrypts Kubernetes secrets with KMS",
        MANDATORY,
        EKS_CLUSTER_TYPES,
        eks_secrets_encrypted,
    ),
    ResourceRule(
        "eks-control-plane-logs",
        "EKS ships api/audit/authenticator logs (mandatory in production)",
        STRICTER_IN_PRODUCTION,
        EKS_CLUSTER_TYPES,
        eks_control_plane_logs,
    ),
    ResourceRule(
        "eks-standard-support",
        "the EKS version is in standard support (not extended, ~6x the price)",
        ADVISORY,
        EKS_CLUSTER_TYPES,
        eks_standard_support,
    ),
    ResourceRule(
        "eks-api-not-open",
        "the EKS API is not open to 0.0.0.0/0 (mandatory in production)",
        STRICTER_IN_PRODUCTION,
        EKS_CLUSTER_TYPES,
        eks_api_not_open,
    ),
    ResourceRule(
        "imdsv2-required",
        "nodes require IMDSv2",
        MANDATORY,
        frozenset({LAUNCH_TEMPLATE, EC2_INSTANCE, EKS_NODE_GROUP, EKS_MANAGED_NODE_GROUP}),
        imdsv2_required,
    ),
)
"""The EKS and node rules."""
