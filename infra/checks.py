"""mlplat's policy rules: plain functions over resources, run offline (`mlplat check`) and in CrossGuard.

A rule looks at one resource (a :class:`ResourceRule`) or, where AWS splits a concept over several
resources (an S3 bucket and its public access block, encryption and policy), at the whole stack (a
:class:`StackRule`). Either way it yields :class:`Violation` s (the problem and the fix); the rule's
:class:`Levels` say whether a violation is mandatory (blocks the deployment) or advisory in the stack's
environment, production being stricter.

Resources are seen through :class:`Resource`: type, name, inputs in the SDK's wire form (camelCase keys, as
both the offline render and CrossGuard's ``props`` have them), the URNs they depend on, and their
provider's default tags. The offline engine's records and CrossGuard's policy arguments both convert to it,
so one set of functions serves ``mlplat check`` and ``pulumi preview --policy-pack policy``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import inspect
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mlplat.components.k8s_versions import EKS_VERSIONS, UnknownVersion, support_status

Enforcement = Literal["mandatory", "advisory"]
PRODUCTION = "production"
REQUIRED_TAGS: tuple[str, ...] = ("project", "environment", "owner", "cost-center")
OPEN_IPV4 = "0.0.0.0/0"
OPEN_IPV6 = "::/0"
LOAD_BALANCER_PORTS = frozenset({80, 443})
EKS_REQUIRED_LOG_TYPES: tuple[str, ...] = ("api", "audit", "authenticator")
MIN_BACKUP_RETENTION_DAYS = 7
# Pulumi's wire sentinel for a value not known until the update runs (e.g. a new bucket's ARN in a policy
# document during preview). Rules never report a violation on a value they cannot see.
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


@dataclass(frozen=True)
class Resource:
    """What a rule sees of one resource, whichever engine produced it."""

    urn: str
    type: str
    name: str
    inputs: Mapping[str, Any]
    dependencies: frozenset[str] = frozenset()
    provider_default_tags: Mapping[str, str] = field(default_factory=dict)
    protect: bool = False

    @classmethod
    def from_record(cls, record: Mapping[str, Any], providers: Mapping[str, Mapping[str, Any]]) -> Resource:
        """From one resource of a render's JSON (``Render.to_json()["resources"][i]``)."""
        options = record.get("options") or {}
        provider = providers.get(options.get("provider") or "", {})
        return cls(
            urn=record["urn"],
            type=record["type"],
            name=record["name"],
            inputs=record.get("inputs") or {},
            dependencies=frozenset(options.get("depends_on") or ()),
            provider_default_tags=default_tags_of(provider),
            protect=bool(options.get("protect")),
        )


def default_tags_of(provider_inputs: Mapping[str, Any]) -> dict[str, str]:
    """The ``defaultTags.tags`` of an AWS provider's inputs (the engine may hand them JSON-encoded)."""
    default_tags: Any = provider_inputs.get("defaultTags") or {}
    if isinstance(default_tags, str):
        try:
            default_tags = json.loads(default_tags)
        except ValueError:
            return {}
    tags = default_tags.get("tags") if isinstance(default_tags, Mapping) else None
    return {str(k): str(v) for k, v in (tags or {}).items()}


def resources_from_render(document: Mapping[str, Any]) -> list[Resource]:
    """Every resource of a render's JSON form, with its provider's default tags resolved."""
    records = document.get("resources") or []
    providers = {r["urn"]: r.get("inputs") or {} for r in records if str(r["type"]).startswith("pulumi:providers:")}
    return [Resource.from_record(r, providers) for r in records]


def environment_of(document: Mapping[str, Any]) -> str:
    """The stack's environment: the AWS provider's ``environment`` default tag, else the stack name."""
    for record in document.get("resources") or []:
        if record["type"] == "pulumi:providers:aws":
            env = default_tags_of(record.get("inputs") or {}).get("environment")
            if env:
                return env
    return str(document.get("stack", ""))


@dataclass(frozen=True)
class Violation:
    """One problem a rule found: what is wrong and how to fix it."""

    problem: str
    fix: str


@dataclass(frozen=True)
class Levels:
    """A rule's enforcement outside production and in production."""

    default: Enforcement
    production: Enforcement

    def for_environment(self, environment: str) -> Enforcement:
        """The level that applies in ``environment`` (a strict one, by the policy in force, or not)."""
        return self.production if environment in current_policy().strict_environments else self.default


@dataclass(frozen=True)
class PolicyConfig:
    """An organisation's side of the rules: the tags every resource carries, and which environments are strict.

    mlplat's values are the defaults. ``mlplat check`` reads them from the stack config (``mlplat:policy``:
    ``requiredTags``, ``strictEnvironments``), the CrossGuard pack from its policy config (the same keys).
    """

    required_tags: tuple[str, ...] = REQUIRED_TAGS
    strict_environments: tuple[str, ...] = (PRODUCTION,)

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | None, where: str = "mlplat:policy") -> PolicyConfig:
        """Read ``{"requiredTags": [...], "strictEnvironments": [...]}``; a bad entry is a ValueError naming it."""
        values = dict(values or {})
        unknown = sorted(set(values) - {"requiredTags", "strictEnvironments"})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: requiredTags, strictEnvironments")
        fields: dict[str, tuple[str, ...]] = {}
        for key, field_name in (("requiredTags", "required_tags"), ("strictEnvironments", "strict_environments")):
            if key not in values:
                continue
            value = values[key]
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise ValueError(f"{where}.{key}: {value!r} is not a list of names")
            fields[field_name] = tuple(value)
        return cls(**fields)


_POLICY: contextvars.ContextVar[PolicyConfig | None] = contextvars.ContextVar("mlplat_policy", default=None)
_MLPLAT_POLICY = PolicyConfig()


def current_policy() -> PolicyConfig:
    """The policy the rules judge by (set for a run by :func:`policy_in_force`; mlplat's by default)."""
    return _POLICY.get() or _MLPLAT_POLICY


@contextlib.contextmanager
def policy_in_force(policy: PolicyConfig | None) -> Iterator[None]:
    """Judge by ``policy`` (None: mlplat's defaults) inside the block."""
    token = _POLICY.set(policy)
    try:
        yield
    finally:
        _POLICY.reset(token)


MANDATORY = Levels("mandatory", "mandatory")
ADVISORY = Levels("advisory", "advisory")
STRICTER_IN_PRODUCTION = Levels("advisory", "mandatory")


@dataclass(frozen=True)
class Finding:
    """A violation of a rule by a resource, at the level that applies in the stack's environment."""

    rule: str
    enforcement: Enforcement
    urn: str
    resource: str
    type: str
    problem: str
    fix: str

    def to_json(self) -> dict[str, str]:
        """A plain dict for JSON output."""
        return {
            "rule": self.rule,
            "enforcement": self.enforcement,
            "urn": self.urn,
            "resource": self.resource,
            "type": self.type,
            "problem": self.problem,
            "fix": self.fix,
        }


ResourceCheck = Callable[[Resource], Iterable[Violation]]
StackCheck = Callable[[Sequence[Resource]], Iterable[tuple[Resource, Violation]]]


@dataclass(frozen=True)
class ResourceRule:
    """A rule over single resources of the listed types (every type when ``types`` is empty)."""

    id: str
    description: str
    levels: Levels
    types: frozenset[str]
    check: ResourceCheck

    def applies_to(self, type_: str) -> bool:
        """Whether the rule looks at resources of ``type_``."""
        return not self.types or type_ in self.types


@dataclass(frozen=True)
class StackRule:
    """A rule over the whole stack, for concepts AWS spreads over several resources."""

    id: str
    description: str
    levels: Levels
    check: StackCheck


Rule = ResourceRule | StackRule


# ----------------------------------------------------------------------------------------------------------
# helpers


def _get(value: Any, *path: str | int) -> Any:
    """``value[path[0]][path[1]]...``, or None where any step is missing."""
    for step in path:
        if isinstance(step, int):
            value = value[step] if isinstance(value, list) and step < len(value) else None
        else:
            value = value.get(step) if isinstance(value, Mapping) else None
        if value is None:
            return None
    return value


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _is_false(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.lower() == "false")


def _policy_document(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _linked(stack: Sequence[Resource], resource: Resource, types: frozenset[str]) -> list[Resource]:
    """The resources of ``types`` that ``resource`` depends on (how a companion names its target)."""
    return [r for r in stack if r.urn in resource.dependencies and r.type in types]


# ----------------------------------------------------------------------------------------------------------
# S3

BUCKET_TYPES = frozenset({"aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"})
PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
SSE_TYPES = frozenset({
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
})
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
BUCKET_ACL_TYPES = frozenset({"aws:s3/bucketAcl:BucketAcl", "aws:s3/bucketAclV2:BucketAclV2"})
PUBLIC_ACLS = frozenset({"public-read", "public-read-write", "authenticated-read"})
PUBLIC_ACCESS_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")


def s3_public_access_block_complete(res: Resource) -> Iterator[Violation]:
    """All four public-access-block flags on."""
    off = [flag for flag in PUBLIC_ACCESS_FLAGS if not _is_true(res.inputs.get(flag))]
    if off:
        yield Violation(
            f"public access block leaves {', '.join(off)} off",
            "set blockPublicAcls, blockPublicPolicy, ignorePublicAcls and restrictPublicBuckets to true",
        )


def s3_no_public_acl(res: Resource) -> Iterator[Violation]:
    """No canned ACL that grants access to everyone."""
    acl = res.inputs.get("acl")
    if acl in PUBLIC_ACLS:
        yield Violation(f"canned ACL {acl!r} makes objects readable outside the account",
                        "remove the ACL (use BucketOwnershipControls BucketOwnerEnforced) or set it to 'private'")


def s3_buckets_block_public_access(stack: Sequence[Resource]) -> Iterator[tuple[Resource, Violation]]:
    """Every bucket has a public access block."""
    covered = {b.urn for pab in stack if pab.type == PUBLIC_ACCESS_BLOCK for b in _linked(stack, pab, BUCKET_TYPES)}
    for bucket in stack:
        if bucket.type in BUCKET_TYPES and bucket.urn not in covered:
            yield bucket, Violation("bucket has no public access block",
                                    "add an aws.s3.BucketPublicAccessBlock for it with all four flags true")


def _inline_sse(bucket: Resource) -> bool:
    return bool(_get(bucket.inputs, "serverSideEncryptionConfiguration", "rule", "applyServerSideEncryptionByDefault")
                or _get(bucket.inputs, "serverSideEncryptionConfiguration", "rules"))


def s3_buckets_encrypted(stack: Sequence[Resource]) -> Iterator[tuple[Resource, Violation]]:
    """Every bucket has an explicit default-encryption configuration."""
    covered = {b.urn for sse in stack if sse.type in SSE_TYPES for b in _linked(stack, sse, BUCKET_TYPES)}
    for bucket in stack:
        if bucket.type in BUCKET_TYPES and bucket.urn not in covered and not _inline_sse(bucket):
            yield bucket, Violation(
                "bucket has no server-side encryption configuration",
                "add an aws.s3.BucketServerSideEncryptionConfiguration with sseAlgorithm 'aws:kms' and a bucket key",
            )


def s3_encryption_uses_kms(res: Resource) -> Iterator[Violation]:
    """Default encryption by KMS (auditable key use, revocable), not the S3-managed key."""
    for rule in _as_list(res.inputs.get("rules")):
        algorithm = _get(rule, "applyServerSideEncryptionByDefault", "sseAlgorithm")
        if algorithm not in ("aws:kms", "aws:kms:dsse"):
            yield Violation(f"default encryption uses {algorithm!r}, not KMS",
                            "set applyServerSideEncryptionByDefault.sseAlgorithm to 'aws:kms' with a KMS key")


def _denies_insecure_transport(policy: Mapping[str, Any]) -> bool:
    for stmt in _as_list(policy.get("Statement")):
        if not isinstance(stmt, Mapping) or stmt.get("Effect") != "Deny":
            continue
        secure = _get(stmt, "Condition", "Bool", "aws:SecureTransport")
        actions = _as_list(stmt.get("Action"))
        if str(secure).lower() == "false" and ("s3:*" in actions or "*" in actions):
            return True
    return False


def s3_buckets_tls_only(stack: Sequence[Resource]) -> Iterator[tuple[Resource, Violation]]:
    """Every bucket's policy denies requests without TLS."""
    covered = {
        b.urn
        for pol in stack
        if pol.type == BUCKET_POLICY and (pol.inputs.get("policy") == UNKNOWN
                                          or _denies_insecure_transport(_policy_document(pol.inputs.get("policy"))))
        for b in _linked(stack, pol, BUCKET_TYPES)
    }
    for bucket in stack:
        if bucket.type in BUCKET_TYPES and bucket.urn not in covered:
            yield bucket, Violation(
                "no bucket policy denies requests without TLS",
                "add a BucketPolicy statement: Deny s3:* on the bucket and its objects when aws:SecureTransport is "
                "false",
            )


# ----------------------------------------------------------------------------------------------------------
# RDS

RDS_INSTANCE = "aws:rds/instance:Instance"
RDS_CLUSTER = "aws:rds/cluster:Cluster"
RDS_TYPES = frozenset({RDS_INSTANCE, RDS_CLUSTER})


def rds_encrypted(res: Resource) -> Iterator[Violation]:
    """Storage encryption on."""
    if not _is_true(res.inputs.get("storageEncrypted")):
        yield Violation("storage is not encrypted", "set storageEncrypted=true (and kmsKeyId for a customer key)")


def rds_not_public(res: Resource) -> Iterator[Violation]:
    """No public endpoint."""
    if _is_true(res.inputs.get("publiclyAccessible")):
        yield Violation("the database has a public endpoint",
                        "set publiclyAccessible=false and reach it from inside the VPC")


def rds_backups_retained(res: Resource) -> Iterator[Violation]:
    """Automated backups kept for at least a week."""
    days = res.inputs.get("backupRetentionPeriod")
    # AWS defaults to 1 day for instances and clusters alike when unset.
    if not isinstance(days, int | float) or days < MIN_BACKUP_RETENTION_DAYS:
        shown = "unset (AWS default: 1 day)" if days is None else f"{days} day(s)"
        yield Violation(f"backup retention is {shown}",
                        f"set backupRetentionPeriod to at least {MIN_BACKUP_RETENTION_DAYS}")


def rds_multi_az(res: Resource) -> Iterator[Violation]:
    """A standby in another AZ."""
    if not _is_true(res.inputs.get("multiAz")):
        yield Violation("the instance has no standby in a second availability zone", "set multiAz=true")


def rds_deletion_protection(res: Resource) -> Iterator[Violation]:
    """Deletion protection on."""
    if not _is_true(res.inputs.get("deletionProtection")):
        yield Violation("deletion protection is off", "set deletionProtection=true")


# ----------------------------------------------------------------------------------------------------------
# EKS

EKS_AWS_CLUSTER = "aws:eks/cluster:Cluster"
EKS_COMPONENT_CLUSTER = "eks:index:Cluster"
EKS_CLUSTER_TYPES = frozenset({EKS_AWS_CLUSTER, EKS_COMPONENT_CLUSTER})


def eks_secrets_encrypted(res: Resource) -> Iterator[Violation]:
    """Kubernetes secrets envelope-encrypted with KMS."""
    if res.type == EKS_COMPONENT_CLUSTER:
        ok = bool(res.inputs.get("encryptionConfigKeyArn"))
    else:
        ok = any("secrets" in _as_list(_get(c, "resources")) for c in _as_list(res.inputs.get("encryptionConfig")))
    if not ok:
        yield Violation("Kubernetes secrets are not envelope-encrypted with a KMS key",
                        "pass a KMS key: encryptionConfigKeyArn (pulumi-eks) or encryptionConfig "
                        "{resources: ['secrets'], provider: {keyArn}}")


def eks_control_plane_logs(res: Resource) -> Iterator[Violation]:
    """api, audit and authenticator logs shipped to CloudWatch."""
    enabled = set(_as_list(res.inputs.get("enabledClusterLogTypes")))
    missing = [t for t in EKS_REQUIRED_LOG_TYPES if t not in enabled]
    if missing:
        yield Violation(f"control-plane log types {', '.join(missing)} are not enabled",
                        "set enabledClusterLogTypes to include " + ", ".join(EKS_REQUIRED_LOG_TYPES))


def eks_api_not_open(res: Resource) -> Iterator[Violation]:
    """The public API endpoint is off, or limited to known CIDRs."""
    source: Mapping[str, Any] = res.inputs if res.type == EKS_COMPONENT_CLUSTER else (res.inputs.get("vpcConfig") or {})
    public = source.get("endpointPublicAccess")
    if _is_false(public):
        return
    cidrs = _as_list(source.get("publicAccessCidrs")) or [OPEN_IPV4]  # EKS's default when unset
    if OPEN_IPV4 in cidrs:
        yield Violation("the Kubernetes API endpoint is reachable from 0.0.0.0/0",
                        "set endpointPublicAccess=false (with endpointPrivateAccess=true), or publicAccessCidrs "
                        "to your office/VPN ranges")


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
        newest = max((v for v in EKS_VERSIONS if support_status(v) == "standard"), key=lambda v: int(v.split(".")[1]),
                     default=None)
        problem = (f"Kubernetes {version} is in EKS extended support (billed at about 6x the standard control-plane "
                   "price)" if status == "extended" else
                   f"Kubernetes {version} is past the end of EKS support (EKS upgrades such control planes itself)")
        yield Violation(problem, "upgrade the control plane, then each node pool, one minor at a time"
                        + (f" toward {newest}" if newest else ""))


# ----------------------------------------------------------------------------------------------------------
# EC2: launch templates, node groups, security groups

LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
EC2_INSTANCE = "aws:ec2/instance:Instance"
EKS_NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
EKS_MANAGED_NODE_GROUP = "eks:index:ManagedNodeGroup"


def imdsv2_required(res: Resource) -> Iterator[Violation]:
    """Instance metadata only with session tokens (IMDSv2), which blocks SSRF credential theft."""
    fix = "set metadataOptions {httpTokens: 'required', httpPutResponseHopLimit: 2}"
    if res.type in (LAUNCH_TEMPLATE, EC2_INSTANCE):
        tokens = _get(res.inputs, "metadataOptions", "httpTokens")
        if tokens != "required":
            yield Violation(f"instance metadata allows IMDSv1 (httpTokens={tokens or 'unset'})", fix)
    elif res.type == EKS_MANAGED_NODE_GROUP:
        if not _is_true(res.inputs.get("enableIMDSv2")) and not res.inputs.get("launchTemplate"):
            yield Violation("node group leaves IMDSv1 on", "set enableIMDSv2=true, or pass a launchTemplate that "
                            "requires IMDSv2")
    elif res.type == EKS_NODE_GROUP and not res.inputs.get("launchTemplate"):
        yield Violation("node group has no launch template, so its nodes accept IMDSv1",
                        "pass a launchTemplate whose metadataOptions.httpTokens is 'required'")


SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SECURITY_GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
LOAD_BALANCER_TYPES = frozenset({
    "aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer", "aws:elb/loadBalancer:LoadBalancer",
})


@dataclass(frozen=True)
class _Ingress:
    owner: Resource
    group_urn: str | None
    protocol: str
    from_port: int
    to_port: int
    open_cidrs: tuple[str, ...]


def _open_cidrs(v4: Iterable[Any], v6: Iterable[Any]) -> tuple[str, ...]:
    found = [c for c in v4 if c == OPEN_IPV4] + [c for c in v6 if c == OPEN_IPV6]
    return tuple(str(c) for c in found)


def _ingresses(stack: Sequence[Resource]) -> Iterator[_Ingress]:
    groups = frozenset({SECURITY_GROUP})
    for res in stack:
        if res.type == SECURITY_GROUP:
            for rule in _as_list(res.inputs.get("ingress")):
                yield _Ingress(res, res.urn, str(rule.get("protocol", "")), int(rule.get("fromPort", 0)),
                               int(rule.get("toPort", 0)),
                               _open_cidrs(_as_list(rule.get("cidrBlocks")), _as_list(rule.get("ipv6CidrBlocks"))))
        elif res.type == SECURITY_GROUP_RULE and res.inputs.get("type") == "ingress":
            group = next((g.urn for g in _linked(stack, res, groups)), None)
            yield _Ingress(res, group, str(res.inputs.get("protocol", "")), int(res.inputs.get("fromPort", 0)),
                           int(res.inputs.get("toPort", 0)),
                           _open_cidrs(_as_list(res.inputs.get("cidrBlocks")),
                                       _as_list(res.inputs.get("ipv6CidrBlocks"))))
        elif res.type == INGRESS_RULE:
            group = next((g.urn for g in _linked(stack, res, groups)), None)
            yield _Ingress(res, group, str(res.inputs.get("ipProtocol", "")),
                           int(res.inputs.get("fromPort", 0) or 0), int(res.inputs.get("toPort", 0) or 0),
                           _open_cidrs(_as_list(res.inputs.get("cidrIpv4")), _as_list(res.inputs.get("cidrIpv6"))))


def _web_ports_only(ingress: _Ingress) -> bool:
    if ingress.protocol in ("-1", "all"):
        return False
    return ingress.from_port == ingress.to_port and ingress.from_port in LOAD_BALANCER_PORTS


def no_open_ingress(stack: Sequence[Resource]) -> Iterator[tuple[Resource, Violation]]:
    """No ingress from the whole internet, except to a load balancer's group on 80/443."""
    lb_groups = {g.urn for lb in stack if lb.type in LOAD_BALANCER_TYPES
                 for g in _linked(stack, lb, frozenset({SECURITY_GROUP}))}
    for ingress in _ingresses(stack):
        if not ingress.open_cidrs:
            continue
        if _web_ports_only(ingress) and ingress.group_urn in lb_groups:
            continue
        ports = "all ports" if ingress.protocol in ("-1", "all") else f"ports {ingress.from_port}-{ingress.to_port}"
        yield ingress.owner, Violation(
            f"ingress from {', '.join(ingress.open_cidrs)} on {ports}",
            "allow only the VPC CIDR or named security groups; open ingress is allowed only on 80/443 to a "
            "load balancer's security group",
        )


# ----------------------------------------------------------------------------------------------------------
# ECR

ECR_REPOSITORY = "aws:ecr/repository:Repository"


def ecr_scan_on_push(res: Resource) -> Iterator[Violation]:
    """Images scanned for CVEs when pushed."""
    if not _is_true(_get(res.inputs, "imageScanningConfiguration", "scanOnPush")):
        yield Violation("images are not scanned on push", "set imageScanningConfiguration.scanOnPush=true")


def ecr_immutable_tags(res: Resource) -> Iterator[Violation]:
    """A tag, once pushed, always names the same image."""
    if not str(res.inputs.get("imageTagMutability", "MUTABLE")).startswith("IMMUTABLE"):
        yield Violation("image tags can be overwritten", "set imageTagMutability='IMMUTABLE'")


# ----------------------------------------------------------------------------------------------------------
# Kubernetes workloads

# Where each workload kind keeps its pod spec.
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "kubernetes:apps/v1:Deployment": ("spec", "template", "spec"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template", "spec"),
    "kubernetes:batch/v1:Job": ("spec", "template", "spec"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "kubernetes:core/v1:Pod": ("spec",),
}
K8S_WORKLOADS = frozenset(POD_SPEC_PATHS)
LONG_RUNNING = frozenset({
    "kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet", "kubernetes:apps/v1:DaemonSet",
    "kubernetes:apps/v1:ReplicaSet",
})


def _pod_spec(res: Resource) -> Mapping[str, Any]:
    spec = _get(res.inputs, *POD_SPEC_PATHS.get(res.type, ("spec",)))
    return spec if isinstance(spec, Mapping) else {}


def _containers(res: Resource, *, init: bool = True) -> list[Mapping[str, Any]]:
    spec = _pod_spec(res)
    kinds = ("initContainers", "containers") if init else ("containers",)
    return [c for kind in kinds for c in _as_list(spec.get(kind)) if isinstance(c, Mapping)]


def _container_name(container: Mapping[str, Any]) -> str:
    return str(container.get("name", "?"))


def k8s_non_root(res: Resource) -> Iterator[Violation]:
    """Containers run as a non-root user."""
    pod = _pod_spec(res).get("securityContext") or {}
    pod_non_root = _is_true(pod.get("runAsNonRoot")) or (isinstance(pod.get("runAsUser"), int) and pod["runAsUser"] > 0)
    for c in _containers(res):
        ctx = c.get("securityContext") or {}
        user = ctx.get("runAsUser")
        if _is_false(ctx.get("runAsNonRoot")) or user == 0:
            non_root = False
        else:
            non_root = pod_non_root or _is_true(ctx.get("runAsNonRoot")) or (isinstance(user, int) and user > 0)
        if not non_root:
            yield Violation(f"container {_container_name(c)!r} may run as root",
                            "set securityContext.runAsNonRoot=true (pod or container) and a non-zero runAsUser")


def k8s_no_privilege_escalation(res: Resource) -> Iterator[Violation]:
    """No privileged containers, no setuid escalation."""
    for c in _containers(res):
        ctx = c.get("securityContext") or {}
        if _is_true(ctx.get("privileged")):
            yield Violation(f"container {_container_name(c)!r} is privileged",
                            "remove securityContext.privileged; grant only the capabilities it needs")
        elif not _is_false(ctx.get("allowPrivilegeEscalation")):
            yield Violation(f"container {_container_name(c)!r} allows privilege escalation",
                            "set securityContext.allowPrivilegeEscalation=false")


def k8s_resources_set(res: Resource) -> Iterator[Violation]:
    """CPU and memory requests, and a memory limit, on every container."""
    for c in _containers(res):
        requests = _get(c, "resources", "requests") or {}
        limits = _get(c, "resources", "limits") or {}
        missing = [f"requests.{k}" for k in ("cpu", "memory") if k not in requests]
        missing += [] if "memory" in limits else ["limits.memory"]
        if missing:
            yield Violation(f"container {_container_name(c)!r} has no {', '.join(missing)}",
                            "set resources.requests.cpu, resources.requests.memory and resources.limits.memory")


def k8s_probes_set(res: Resource) -> Iterator[Violation]:
    """Readiness and liveness probes on long-running workloads (Jobs end by themselves)."""
    if res.type not in LONG_RUNNING:
        return
    for c in _containers(res, init=False):
        missing = [p for p in ("readinessProbe", "livenessProbe") if not c.get(p)]
        if missing:
            yield Violation(f"container {_container_name(c)!r} has no {' or '.join(missing)}",
                            "add a readinessProbe (traffic) and a livenessProbe (restart when hung)")


_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def image_is_pinned(image: str) -> bool:
    """An image reference names a tag other than ``latest``, or a digest."""
    if _DIGEST.search(image):
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False  # no tag means latest
    return last.rsplit(":", 1)[1] != "latest"


def k8s_image_pinned(res: Resource) -> Iterator[Violation]:
    """Images by version tag or digest, never ``:latest``."""
    for c in _containers(res):
        image = c.get("image")
        if isinstance(image, str) and not image_is_pinned(image):
            yield Violation(f"container {_container_name(c)!r} uses {image!r}, which floats (latest)",
                            "pin a version tag or a digest (image@sha256:...)")


# ----------------------------------------------------------------------------------------------------------
# Public endpoints

INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
_ALB = "alb.ingress.kubernetes.io/"
# Opt-outs recorded by mlplat.components.model_service (PUBLIC_WITHOUT_TLS, PUBLIC_WITHOUT_AUTH).
_PUBLIC_WITHOUT_TLS = "mlplat.io/public-without-tls"
_PUBLIC_WITHOUT_AUTH = "mlplat.io/public-without-auth"


def _alb_listeners(annotations: Mapping[str, Any]) -> list[tuple[str, int]] | None:
    """(protocol, port) of each ALB listener; the controller's default without ``listen-ports``: HTTPS 443 with a
    certificate, else HTTP 80 (aws-load-balancer-controller v2.13 annotations). None: not known offline."""
    raw = annotations.get(f"{_ALB}listen-ports")
    if raw is None:
        return [("HTTPS", 443)] if annotations.get(f"{_ALB}certificate-arn") else [("HTTP", 80)]
    try:
        entries = json.loads(str(raw))
        return [(str(proto).upper(), int(port)) for entry in entries for proto, port in entry.items()]
    except (ValueError, TypeError, AttributeError):
        return None


def public_endpoint_protected(res: Resource) -> Iterator[Violation]:
    """An internet-facing ALB serves HTTPS only (or redirects HTTP to it), and the model servers behind it require
    an API key; ModelService's explicit opt-outs (``allow_public_without_tls``/``_auth``) are flagged here."""
    annotations = _get(res.inputs, "metadata", "annotations")
    if not isinstance(annotations, Mapping) or annotations.get(f"{_ALB}scheme") != "internet-facing":
        return
    listeners = _alb_listeners(annotations)
    plain = sorted(port for proto, port in listeners or () if proto == "HTTP")
    if plain and not annotations.get(f"{_ALB}ssl-redirect"):
        waived = " (allow_public_without_tls)" if _is_true(annotations.get(_PUBLIC_WITHOUT_TLS)) else ""
        yield Violation(f"internet-facing ALB serves plain HTTP on port {', '.join(map(str, plain))}{waived}: "
                        "API keys and payloads cross the internet in clear text",
                        "give it an ACM certificate (ModelServiceArgs.certificate_arn, "
                        "mlplat:services.<name>.certificateArn): HTTPS 443 only")
    if _is_true(annotations.get(_PUBLIC_WITHOUT_AUTH)):
        yield Violation("internet-facing ALB in front of model servers that take requests without an API key "
                        "(allow_public_without_auth)",
                        "require a key: ModelServiceArgs.generate_api_key=True or api_key_secret")


# ----------------------------------------------------------------------------------------------------------
# Tags


@functools.cache
def is_taggable(type_: str) -> bool:
    """Whether an AWS resource type takes ``tags``, read from the installed pulumi-aws SDK's signature."""
    match = re.fullmatch(r"aws:([A-Za-z0-9]+)/[A-Za-z0-9]+:([A-Za-z0-9]+)", type_)
    if not match:
        return False
    module, cls_name = match.groups()
    try:
        mod = importlib.import_module("pulumi_aws" if module == "index" else f"pulumi_aws.{module}")
    except ImportError:
        return False
    cls = getattr(mod, cls_name, None)
    init = getattr(cls, "_internal_init", None)
    return init is not None and "tags" in inspect.signature(init).parameters


def required_tags(res: Resource) -> Iterator[Violation]:
    """The policy's required tags (mlplat's: project, environment, owner, cost-center) on every taggable AWS
    resource (own tags over defaults)."""
    if not res.type.startswith("aws:") or not is_taggable(res.type):
        return
    own = res.inputs.get("tags") or {}
    tags = {**res.provider_default_tags, **(own if isinstance(own, Mapping) else {})}
    missing = [t for t in current_policy().required_tags if not tags.get(t)]
    if missing:
        yield Violation(f"missing tag(s) {', '.join(missing)}",
                        "set them once as the AWS provider's defaultTags (or on the resource's tags)")


# ----------------------------------------------------------------------------------------------------------
# The rule set

POLICY_RULES: tuple[Rule, ...] = (
    ResourceRule("s3-public-access-block-complete", "S3 public access blocks turn on all four flags", MANDATORY,
                 frozenset({PUBLIC_ACCESS_BLOCK}), s3_public_access_block_complete),
    ResourceRule("s3-no-public-acl", "S3 buckets grant no public canned ACL", MANDATORY,
                 BUCKET_TYPES | BUCKET_ACL_TYPES, s3_no_public_acl),
    StackRule("s3-public-access-blocked", "every S3 bucket has a public access block", MANDATORY,
              s3_buckets_block_public_access),
    StackRule("s3-encrypted", "every S3 bucket has default encryption configured", MANDATORY, s3_buckets_encrypted),
    ResourceRule("s3-encryption-kms", "S3 default encryption uses KMS", STRICTER_IN_PRODUCTION, SSE_TYPES,
                 s3_encryption_uses_kms),
    StackRule("s3-tls-only", "every S3 bucket denies requests without TLS", MANDATORY, s3_buckets_tls_only),
    ResourceRule("rds-encrypted", "RDS storage is encrypted", MANDATORY, RDS_TYPES, rds_encrypted),
    ResourceRule("rds-not-public", "RDS has no public endpoint", MANDATORY, RDS_TYPES, rds_not_public),
    ResourceRule("rds-backup-retention", f"RDS keeps backups >= {MIN_BACKUP_RETENTION_DAYS} days", MANDATORY,
                 RDS_TYPES, rds_backups_retained),
    ResourceRule("rds-multi-az", "RDS instances are multi-AZ (mandatory in production)", STRICTER_IN_PRODUCTION,
                 frozenset({RDS_INSTANCE}), rds_multi_az),
    ResourceRule("rds-deletion-protection", "RDS has deletion protection (mandatory in production)",
                 STRICTER_IN_PRODUCTION, RDS_TYPES, rds_deletion_protection),
    ResourceRule("eks-secrets-encryption", "EKS encrypts Kubernetes secrets with KMS", MANDATORY, EKS_CLUSTER_TYPES,
                 eks_secrets_encrypted),
    ResourceRule("eks-control-plane-logs", "EKS ships api/audit/authenticator logs (mandatory in production)",
                 STRICTER_IN_PRODUCTION, EKS_CLUSTER_TYPES, eks_control_plane_logs),
    ResourceRule("eks-standard-support", "the EKS version is in standard support (not extended, ~6x the price)",
                 ADVISORY, EKS_CLUSTER_TYPES, eks_standard_support),
    ResourceRule("eks-api-not-open", "the EKS API is not open to 0.0.0.0/0 (mandatory in production)",
                 STRICTER_IN_PRODUCTION, EKS_CLUSTER_TYPES, eks_api_not_open),
    ResourceRule("imdsv2-required", "nodes require IMDSv2", MANDATORY,
                 frozenset({LAUNCH_TEMPLATE, EC2_INSTANCE, EKS_NODE_GROUP, EKS_MANAGED_NODE_GROUP}), imdsv2_required),
    StackRule("no-open-ingress", "no ingress from 0.0.0.0/0 except to load balancers on 80/443", MANDATORY,
              no_open_ingress),
    ResourceRule("ecr-scan-on-push", "ECR scans images on push", MANDATORY, frozenset({ECR_REPOSITORY}),
                 ecr_scan_on_push),
    ResourceRule("ecr-immutable-tags", "ECR tags are immutable", MANDATORY, frozenset({ECR_REPOSITORY}),
                 ecr_immutable_tags),
    ResourceRule("k8s-non-root", "Kubernetes containers run as non-root", MANDATORY, K8S_WORKLOADS, k8s_non_root),
    ResourceRule("k8s-no-privilege-escalation", "Kubernetes containers cannot escalate privileges", MANDATORY,
                 K8S_WORKLOADS, k8s_no_privilege_escalation),
    ResourceRule("k8s-resources", "Kubernetes containers set requests and a memory limit", MANDATORY, K8S_WORKLOADS,
                 k8s_resources_set),
    ResourceRule("k8s-probes", "long-running Kubernetes containers have probes (mandatory in production)",
                 STRICTER_IN_PRODUCTION, K8S_WORKLOADS, k8s_probes_set),
    ResourceRule("k8s-image-pinned", "Kubernetes images are pinned (no :latest)", MANDATORY, K8S_WORKLOADS,
                 k8s_image_pinned),
    ResourceRule("public-endpoint-protected", "internet-facing ALBs serve HTTPS only and model servers behind "
                 "them require an API key (mandatory in production)", STRICTER_IN_PRODUCTION, frozenset({INGRESS}),
                 public_endpoint_protected),
    ResourceRule("required-tags", "taggable AWS resources carry project/environment/owner/cost-center", MANDATORY,
                 frozenset(), required_tags),
)
"""The per-resource policy rules (and the S3/security-group stack rules that stand in for one resource)."""

# Contracts between resources (names, ports, selectors, capacity, ordering, runtime): mlplat.infra.contracts, which
# builds on this module's types (defined above), so it is imported here, after them.
from mlplat.infra.contracts.rules import CONTRACT_RULES  # noqa: E402

RULES: tuple[Rule, ...] = POLICY_RULES + CONTRACT_RULES
"""Every rule ``mlplat check`` and the CrossGuard pack run."""

RULES_BY_ID: dict[str, Rule] = {rule.id: rule for rule in RULES}


def _finding(rule: Rule, environment: str, res: Resource, violation: Violation) -> Finding:
    return Finding(rule.id, rule.levels.for_environment(environment), res.urn, res.name, res.type,
                   violation.problem, violation.fix)


def check_resources(resources: Sequence[Resource], environment: str,
                    rules: Iterable[Rule] = RULES, policy: PolicyConfig | None = None) -> list[Finding]:
    """Run ``rules`` over ``resources``; findings sorted mandatory first, then by rule and resource."""
    findings: list[Finding] = []
    with policy_in_force(policy):
        for rule in rules:
            if isinstance(rule, ResourceRule):
                for res in resources:
                    if rule.applies_to(res.type):
                        findings.extend(_finding(rule, environment, res, v) for v in rule.check(res))
            else:
                findings.extend(_finding(rule, environment, res, v) for res, v in rule.check(resources))
    return sorted(findings, key=lambda f: (f.enforcement != "mandatory", f.rule, f.urn, f.problem))


def check_render(document: Mapping[str, Any], environment: str | None = None,
                 policy: PolicyConfig | None = None) -> list[Finding]:
    """Run every rule over a render's JSON form (``Render.to_json()``)."""
    env = environment or environment_of(document)
    return check_resources(resources_from_render(document), env, policy=policy)


def has_mandatory(findings: Iterable[Finding]) -> bool:
    """Whether any finding blocks the deployment."""
    return any(f.enforcement == "mandatory" for f in findings)


# ----------------------------------------------------------------------------------------------------------
# Reports


def to_markdown(findings: Sequence[Finding], stack: str, environment: str) -> str:
    """A Markdown section for a PR comment."""
    mandatory = sum(f.enforcement == "mandatory" for f in findings)
    advisory = len(findings) - mandatory
    head = f"### Policy check: `{stack}` ({environment})\n\n"
    if not findings:
        return head + f"All {len(RULES)} rules pass.\n"
    lines = [head + f"**{mandatory} mandatory**, {advisory} advisory finding(s).\n",
             "| level | rule | resource | problem | fix |", "|---|---|---|---|---|"]
    for f in findings:
        level = "**mandatory**" if f.enforcement == "mandatory" else "advisory"
        lines.append(f"| {level} | `{f.rule}` | `{f.resource}` ({f.type}) | {_cell(f.problem)} | {_cell(f.fix)} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_text(findings: Sequence[Finding], stack: str, environment: str) -> str:
    """Plain text, one block per finding (what ``mlplat check`` prints)."""
    if not findings:
        return f"{stack} ({environment}): all {len(RULES)} rules pass\n"
    mandatory = sum(f.enforcement == "mandatory" for f in findings)
    out = [f"{stack} ({environment}): {mandatory} mandatory, {len(findings) - mandatory} advisory finding(s)"]
    for f in findings:
        out.append(f"[{f.enforcement}] {f.rule}: {f.resource} ({f.type})\n  problem: {f.problem}\n  fix: {f.fix}")
    return "\n".join(out) + "\n"


def _escape(text: str, *, property_: bool = False) -> str:
    """GitHub workflow-command escaping (actions/toolkit, command.ts: escapeData / escapeProperty)."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if property_ else text


def to_github(findings: Sequence[Finding], stack: str, environment: str, file: str | None = None) -> str:
    """GitHub Actions annotations: ``::error`` for mandatory findings, ``::warning`` for advisory ones."""
    lines = []
    where = f"file={_escape(file, property_=True)}," if file else ""
    for f in findings:
        level = "error" if f.enforcement == "mandatory" else "warning"
        title = _escape(f"mlplat check {stack} ({environment}): {f.rule}", property_=True)
        message = _escape(f"{f.resource} ({f.type}): {f.problem}. Fix: {f.fix}")
        lines.append(f"::{level} {where}title={title}::{message}")
    if not findings:
        lines.append(f"::notice title={_escape(f'mlplat check {stack}', property_=True)}::all {len(RULES)} rules pass")
    return "\n".join(lines) + "\n"
