"""The artifact store: one S3 bucket for models, checkpoints and MLflow artifacts, locked down."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from mlplat.components.iam import policy_document, rotated_key, statement
from mlplat.components.options import component_args

READ_ACTIONS = ("s3:GetObject", "s3:GetObjectVersion")
WRITE_ACTIONS = ("s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts")


@dataclass(frozen=True)
class ArtifactStoreArgs:
    """Arguments of :class:`ArtifactStore`.

    Attributes:
        bucket_name: A fixed bucket name; default: Pulumi's auto-name from the component name.
        create_kms_key: Encrypt with a customer-managed KMS key (rotated yearly); else the AWS-managed
            ``aws/s3`` key. Either way SSE-KMS with an S3 bucket key, which cuts KMS request costs.
        kms_key_arn: Use this existing KMS key instead (overrides ``create_kms_key``).
        force_destroy: Let ``pulumi destroy`` delete a non-empty bucket (dev only).
        protect: Protect the bucket from deletion and retain it if removed from the program (production).
        noncurrent_to_glacier_days: Move noncurrent object versions to Glacier after this many days.
        noncurrent_expire_days: Delete noncurrent object versions after this many days.
        abort_multipart_days: Abort incomplete multipart uploads after this many days.
    """

    bucket_name: str | None = None
    create_kms_key: bool = True
    kms_key_arn: pulumi.Input[str] | None = None
    force_destroy: bool = False
    protect: bool = True
    noncurrent_to_glacier_days: int = 30
    noncurrent_expire_days: int = 365
    abort_multipart_days: int = 7

    def __post_init__(self) -> None:
        if self.force_destroy and self.protect:
            raise ValueError("ArtifactStoreArgs: force_destroy=True contradicts protect=True")
        if self.noncurrent_expire_days <= self.noncurrent_to_glacier_days:
            raise ValueError(
                f"ArtifactStoreArgs.noncurrent_expire_days ({self.noncurrent_expire_days}) must exceed "
                f"noncurrent_to_glacier_days ({self.noncurrent_to_glacier_days})"
            )


def _prefix_pattern(prefix: str) -> str:
    return prefix.strip("/") + "/" if prefix.strip("/") else ""


def bucket_access_statements(
    bucket_arn: pulumi.Input[str], prefix: str, *, write: bool, kms_key_arn: pulumi.Input[str] | None
) -> list[dict[str, Any]]:
    """Least-privilege statements for one prefix of a bucket: objects under it, listing limited to it."""
    pattern = _prefix_pattern(prefix)
    objects = pulumi.Output.concat(bucket_arn, "/", pattern, "*")
    actions = [*READ_ACTIONS, *(WRITE_ACTIONS if write else ())]
    statements = [
        statement(actions, [objects], sid="Objects"),
        statement(
            ["s3:ListBucket"],
            [bucket_arn],
            sid="ListPrefix",
            condition={"StringLike": {"s3:prefix": [f"{pattern}*"]}} if pattern else None,
        ),
    ]
    if kms_key_arn is not None:
        kms_actions = ["kms:Decrypt", *(["kms:GenerateDataKey", "kms:Encrypt"] if write else [])]
        statements.append(statement(kms_actions, [kms_key_arn], sid="Kms"))
    return statements


class ArtifactStore(pulumi.ComponentResource):
    """An S3 bucket for ML artifacts with the controls a production account needs.

    Versioning, SSE-KMS with a bucket key, all public access blocked, ACLs off (BucketOwnerEnforced), a
    bucket policy denying any request not over TLS, and a lifecycle that tiers and then expires noncurrent
    versions and aborts stale multipart uploads. ``grant_read``/``grant_write`` give a role access to one
    prefix only.

    Outputs: ``bucket_name``, ``bucket_arn``, ``kms_key_arn`` (None when the AWS-managed key is used).
    """

    def __init__(
        self, name: str, args: ArtifactStoreArgs | None = None, opts: pulumi.ResourceOptions | None = None,
        **kwargs: Any,
    ) -> None:
        args = component_args("ArtifactStore", ArtifactStoreArgs, args, kwargs)
        super().__init__("mlplat:storage:ArtifactStore", name, None, opts)
        self._prefix = name
        child = pulumi.ResourceOptions(parent=self)
        stateful = pulumi.ResourceOptions(parent=self, protect=args.protect, retain_on_delete=args.protect)

        self.kms_key_arn: pulumi.Input[str] | None = args.kms_key_arn
        if args.kms_key_arn is None and args.create_kms_key:
            key = rotated_key(f"{name}-key", f"Encrypts the {name} artifact bucket", stateful)
            aws.kms.Alias(f"{name}-key", name_prefix=f"alias/{name}-", target_key_id=key.key_id, opts=child)
            self.kms_key_arn = key.arn

        self.bucket = aws.s3.Bucket(
            name,
            bucket=args.bucket_name,
            force_destroy=args.force_destroy,
            tags={"Name": name},
            opts=stateful,
        )
        bucket_id = self.bucket.id
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=bucket_id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child,
        )
        public_access = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket_id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        versioning = aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=bucket_id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket_id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="aws:kms",
                        kms_master_key_id=self.kms_key_arn,
                    ),
                    bucket_key_enabled=True,
                )
            ],
            opts=child,
        )
        aws.s3.BucketPolicy(
            f"{name}-tls-only",
            bucket=bucket_id,
            policy=policy_document(
                [
                    {
                        "Sid": "DenyInsecureTransport",
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:*",
                        "Resource": [self.bucket.arn, pulumi.Output.concat(self.bucket.arn, "/*")],
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    }
                ]
            ),
            # A policy written before the public access block can race it and be refused.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_access]),
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket_id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="noncurrent-versions",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    noncurrent_version_transitions=[
                        aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionTransitionArgs(
                            noncurrent_days=args.noncurrent_to_glacier_days, storage_class="GLACIER"
                        )
                    ],
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=args.noncurrent_expire_days
                    ),
                ),
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="abort-incomplete-uploads",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=args.abort_multipart_days
                    ),
                ),
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
        )

        self.bucket_name: pulumi.Output[str] = self.bucket.bucket
        self.bucket_arn: pulumi.Output[str] = self.bucket.arn
        self.register_outputs({"bucket_name": self.bucket_name, "bucket_arn": self.bucket_arn})

    def uri(self, prefix: str = "") -> pulumi.Output[str]:
        """``s3://<bucket>/<prefix>``."""
        return pulumi.Output.concat("s3://", self.bucket_name, "/", prefix.strip("/"))

    def _grant(self, role_name: pulumi.Input[str], prefix: str, write: bool, name: str) -> aws.iam.RolePolicy:
        kind = "write" if write else "read"
        return aws.iam.RolePolicy(
            f"{self._prefix}-{kind}-{name}",
            role=role_name,
            policy=policy_document(
                bucket_access_statements(self.bucket_arn, prefix, write=write, kms_key_arn=self.kms_key_arn)
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def grant_read(self, role_name: pulumi.Input[str], *, prefix: str = "", name: str) -> aws.iam.RolePolicy:
        """Let the role named ``role_name`` read objects under ``prefix`` (and list that prefix only).

        ``name`` distinguishes this grant's policy resource from others on the same store.
        """
        return self._grant(role_name, prefix, False, name)

    def grant_write(self, role_name: pulumi.Input[str], *, prefix: str = "", name: str) -> aws.iam.RolePolicy:
        """Let the role named ``role_name`` read and write objects under ``prefix``."""
        return self._grant(role_name, prefix, True, name)
