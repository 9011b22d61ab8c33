"""ArtifactStore: bucket controls in the shipped stacks, and least-privilege grants."""

from __future__ import annotations

import json
from collections.abc import Callable

import pulumi_aws as aws
import pytest

from mlplat.components.storage import ArtifactStore, ArtifactStoreArgs
from mlplat.infra.engine import Render


def test_bucket_blocks_all_public_access_and_acls(production_stack: Render) -> None:
    block = production_stack.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
        assert block.inputs[flag] is True, flag
    ownership = production_stack.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls")
    assert ownership.inputs["rule"]["objectOwnership"] == "BucketOwnerEnforced"


def test_bucket_policy_denies_requests_without_tls(production_stack: Render) -> None:
    bucket = production_stack.one("aws:s3/bucket:Bucket")
    policy = production_stack.one("aws:s3/bucketPolicy:BucketPolicy")
    (stmt,) = json.loads(policy.inputs["policy"])["Statement"]
    assert stmt["Effect"] == "Deny" and stmt["Principal"] == "*" and stmt["Action"] == "s3:*"
    assert stmt["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert set(stmt["Resource"]) == {f"arn:aws:s3:::{bucket.id}", f"arn:aws:s3:::{bucket.id}/*"}
    block = production_stack.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert block.urn in policy.options["depends_on"]


def test_bucket_is_versioned_and_kms_encrypted_with_a_bucket_key(production_stack: Render) -> None:
    versioning = production_stack.one("aws:s3/bucketVersioning:BucketVersioning")
    assert versioning.inputs["versioningConfiguration"]["status"] == "Enabled"
    (rule,) = production_stack.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    ).inputs["rules"]
    key = production_stack.one("aws:kms/key:Key", "mlplat-production-artifacts-key")
    assert rule["bucketKeyEnabled"] is True
    assert rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms"
    assert rule["applyServerSideEncryptionByDefault"]["kmsMasterKeyId"].endswith(key.id)
    assert key.inputs["enableKeyRotation"] is True


def test_lifecycle_tiers_and_expires_noncurrent_versions(production_stack: Render) -> None:
    rules = {
        r["id"]: r
        for r in production_stack.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs[
            "rules"
        ]
    }
    noncurrent = rules["noncurrent-versions"]
    assert noncurrent["noncurrentVersionTransitions"] == [{"noncurrentDays": 30, "storageClass": "GLACIER"}]
    assert noncurrent["noncurrentVersionExpiration"] == {"noncurrentDays": 365}
    assert rules["abort-incomplete-uploads"]["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 7}


def test_production_bucket_is_protected_and_dev_bucket_is_disposable(
    production_stack: Render, dev_stack: Render
) -> None:
    prod = production_stack.one("aws:s3/bucket:Bucket")
    assert prod.options["protect"] and prod.options["retain_on_delete"]
    assert prod.inputs["forceDestroy"] is False
    dev = dev_stack.one("aws:s3/bucket:Bucket")
    assert not dev.options["protect"]
    assert dev.inputs["forceDestroy"] is True


def _grant_policy(render_program: Callable[..., Render], write: bool, prefix: str) -> tuple[dict, Render]:
    def program() -> None:
        store = ArtifactStore("art", ArtifactStoreArgs(protect=False))
        role = aws.iam.Role("reader", assume_role_policy="{}")
        (store.grant_write if write else store.grant_read)(role.name, prefix=prefix, name="svc")

    stack = render_program(program)
    grant = stack.one("aws:iam/rolePolicy:RolePolicy", f"art-{'write' if write else 'read'}-svc")
    return json.loads(grant.inputs["policy"]), stack


def test_grant_read_is_scoped_to_the_prefix_and_cannot_write(render_program: Callable[..., Render]) -> None:
    policy, stack = _grant_policy(render_program, write=False, prefix="models/")
    bucket = stack.one("aws:s3/bucket:Bucket").id
    statements = {s["Sid"]: s for s in policy["Statement"]}
    assert statements["Objects"]["Resource"] == [f"arn:aws:s3:::{bucket}/models/*"]
    assert "s3:PutObject" not in statements["Objects"]["Action"]
    assert statements["ListPrefix"]["Condition"] == {"StringLike": {"s3:prefix": ["models/*"]}}
    assert statements["Kms"]["Action"] == ["kms:Decrypt"]


def test_grant_write_adds_put_and_kms_data_keys(render_program: Callable[..., Render]) -> None:
    policy, _ = _grant_policy(render_program, write=True, prefix="/checkpoints")
    statements = {s["Sid"]: s for s in policy["Statement"]}
    assert {"s3:PutObject", "s3:DeleteObject", "s3:GetObject"} <= set(statements["Objects"]["Action"])
    assert statements["Objects"]["Resource"][0].endswith("/checkpoints/*")
    assert "kms:GenerateDataKey" in statements["Kms"]["Action"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"force_destroy": True, "protect": True}, "contradicts"),
        ({"noncurrent_to_glacier_days": 90, "noncurrent_expire_days": 30}, "must be greater than"),
    ],
)
def test_artifact_store_args_reject_contradictions(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ArtifactStoreArgs(**kwargs)
