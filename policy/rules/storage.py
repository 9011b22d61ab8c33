"""S3: buckets block public access, encrypt by default (with KMS) and deny requests without TLS."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from mlplat.policy.framework import (
    MANDATORY,
    STRICTER_IN_PRODUCTION,
    UNKNOWN,
    Resource,
    ResourceRule,
    Rule,
    StackRule,
    Violation,
    as_list,
    get,
    is_true,
    linked,
    policy_document,
)

BUCKET_TYPES = frozenset({"aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"})
PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
SSE_TYPES = frozenset(
    {
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
    }
)
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
BUCKET_ACL_TYPES = frozenset({"aws:s3/bucketAcl:BucketAcl", "aws:s3/bucketAclV2:BucketAclV2"})
PUBLIC_ACLS = frozenset({"public-read", "public-read-write", "authenticated-read"})
PUBLIC_ACCESS_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")


def s3_public_access_block_complete(res: Resource) -> Iterator[Violation]:
    """All four public-access-block flags on."""
    off = [flag for flag in PUBLIC_ACCESS_FLAGS if not is_true(res.inputs.get(flag))]
    if off:
        yield Violation(
            f"public access block leaves {', '.join(off)} off",
            "set blockPublicAcls, blockPublicPolicy, ignorePublicAcls and restrictPublicBuckets to true",
        )


def s3_no_public_acl(res: Resource) -> Iterator[Violation]:
    """No canned ACL that grants access to everyone."""
    acl = res.inputs.get("acl")
    if acl in PUBLIC_ACLS:
        yield Violation(
            f"canned ACL {acl!r} makes objects readable outside the account",
            "remove the ACL (use BucketOwnershipControls BucketOwnerEnforced) or set it to 'private'",
        )


def s3_buckets_block_public_access(stack: Sequence[Resource]) -> Iterator[tuple[Resource, Violation]]:
    """Every bucket has a public access block."""
    covered = {b.urn for pab in stack if pab.type == PUBLIC_ACCESS_BLOCK for b in linked(stack, pab, BUCKET_TYPES)}
    for bucket in stack:
        if bucket.type in BUCKET_TYPES and bucket.urn not in covered:
            yield (
                bucket,
                Violation(
                    "bucket has no public access block",
                    "add an aws.s3.BucketPublicAccessBlock for it with all four flags true",
                ),
            )


def _inline_sse(bucket: Resource) -> bool:
    return bool(
        get(bucket.inputs, "serverSideEncryptionConfiguration", "rule", "applyServerSideEncryptionByDefault")
        or get(bucket.inputs, "serverSideEncryptionConfiguration", "rules")
    )


def s3_buckets_encrypted(stack: Sequence[Resource]) -> Iterator[tuple[Resource, Violation]]:
    """Every bucket has an explicit default-encryption configuration."""
    covered = {b.urn for sse in stack if sse.type in SSE_TYPES for b in linked(stack, sse, BUCKET_TYPES)}
    for bucket in stack:
        if bucket.type in BUCKET_TYPES and bucket.urn not in covered and not _inline_sse(bucket):
            yield (
                bucket,
                Violation(
                    "bucket has no server-side encryption configuration",
                    "add an aws.s3.BucketServerSideEncryptionConfiguration with sseAlgorithm 'aws:kms' and a bucket "
                    "key",
                ),
            )


def s3_encryption_uses_kms(res: Resource) -> Iterator[Violation]:
    """Default encryption by KMS (auditable key use, revocable), not the S3-managed key."""
    for rule in as_list(res.inputs.get("rules")):
        algorithm = get(rule, "applyServerSideEncryptionByDefault", "sseAlgorithm")
        if algorithm not in ("aws:kms", "aws:kms:dsse"):
            yield Violation(
                f"default encryption uses {algorithm!r}, not KMS",
                "set applyServerSideEncryptionByDefault.sseAlgorithm to 'aws:kms' with a KMS key",
            )


def _denies_insecure_transport(policy: Mapping[str, Any]) -> bool:
    for stmt in as_list(policy.get("Statement")):
        if not isinstance(stmt, Mapping) or stmt.get("Effect") != "Deny":
            continue
        secure = get(stmt, "Condition", "Bool", "aws:SecureTransport")
        actions = as_list(stmt.get("Action"))
        if str(secure).lower() == "false" and ("s3:*" in actions or "*" in actions):
            return True
    return False


def s3_buckets_tls_only(stack: Sequence[Resource]) -> Iterator[tuple[Resource, Violation]]:
    """Every bucket's policy denies requests without TLS."""
    covered = {
        b.urn
        for pol in stack
        if pol.type == BUCKET_POLICY
        and (
            pol.inputs.get("policy") == UNKNOWN or _denies_insecure_transport(policy_document(pol.inputs.get("policy")))
        )
        for b in linked(stack, pol, BUCKET_TYPES)
    }
    for bucket in stack:
        if bucket.type in BUCKET_TYPES and bucket.urn not in covered:
            yield (
                bucket,
                Violation(
                    "no bucket policy denies requests without TLS",
                    "add a BucketPolicy statement: Deny s3:* on the bucket and its objects when aws:SecureTransport is "
                    "false",
                ),
            )


RULES: tuple[Rule, ...] = (
    ResourceRule(
        "s3-public-access-block-complete",
        "S3 public access blocks turn on all four flags",
        MANDATORY,
        frozenset({PUBLIC_ACCESS_BLOCK}),
        s3_public_access_block_complete,
    ),
    ResourceRule(
        "s3-no-public-acl",
        "S3 buckets grant no public canned ACL",
        MANDATORY,
        BUCKET_TYPES | BUCKET_ACL_TYPES,
        s3_no_public_acl,
    ),
    StackRule(
        "s3-public-access-blocked",
        "every S3 bucket has a public access block",
        MANDATORY,
        s3_buckets_block_public_access,
    ),
    StackRule("s3-encrypted", "every S3 bucket has default encryption configured", MANDATORY, s3_buckets_encrypted),
    ResourceRule(
        "s3-encryption-kms", "S3 default encryption uses KMS", STRICTER_IN_PRODUCTION, SSE_TYPES, s3_encryption_uses_kms
    ),
    StackRule("s3-tls-only", "every S3 bucket denies requests without TLS", MANDATORY, s3_buckets_tls_only),
)
"""The S3 rules, in the order ``mlplat check`` and the pack list them."""
