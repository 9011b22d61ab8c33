"""The artifact store: one S3 bucket for models, checkpoints and MLflow artifacts, locked down."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Self

import pulumi
import pulumi_aws as aws
from pydantic import AliasChoices, Field, InstanceOf, field_validator, model_validator

from mlplat.components.iam import policy_document, rotated_key, statement
from mlplat.components.options import checked_when_known, component_args
from mlplat.components.spec import Spec, StrInput

__all__ = ["ArtifactStore", "ArtifactStoreArgs", "ArtifactStoreSpec", "BucketGrant", "bucket_access_statements"]

READ_ACTIONS = ("s3:GetObject", "s3:GetObjectVersion")
WRITE_ACTIONS = ("s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts")
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def check_bucket_name(value: str) -> None:
    """Refuse what S3 refuses as a bucket name (``ValueError`` repeating the value)."""
    if not _BUCKET_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid S3 bucket name: 3-63 characters of a-z, 0-9, '.' and "
            "'-', starting and ending with a letter or digit"
        )


@dataclass(frozen=True)
class BucketGrant:
    """Access for one IAM role to one prefix of the bucket, declared with the store (``ArtifactStoreArgs.grants``).

    Attributes:
        name: Names the grant's policy resource, ``<store>-read-<name>`` or ``<store>-write-<name>``.
        role_name: The IAM role's name (e.g. ``role.name``).
        prefix: Objects under this prefix only, and listing it; ``""``: the whole bucket.
        write: Read and write (put, delete) rather than read only.
    """

    name: str
    role_name: pulumi.Input[str]
    prefix: str = ""
    write: bool = False

    @property
    def resource_name_suffix(self) -> str:
        """``read-<name>`` or ``write-<name>``."""
        return f"{'write' if self.write else 'read'}-{self.name}"


class ArtifactStoreSpec(Spec):
    """The artifact bucket's settings (``mlplat:artifacts``); :class:`ArtifactStoreArgs` adds the grants."""

    bucket_name: StrInput | None = None
    """A fixed bucket name (a string or another resource's output); default: Pulumi's auto-name from the component
    name."""
    create_kms_key: bool = Field(
        default=True, validation_alias=AliasChoices("kmsKey", "create_kms_key"), serialization_alias="kmsKey"
    )
    """Encrypt with a customer-managed KMS key (rotated yearly); else the AWS-managed ``aws/s3`` key. Either way
    SSE-KMS with an S3 bucket key, which cuts KMS request costs."""
    kms_key_arn: StrInput | None = None
    """Use this existing KMS key instead (overrides ``create_kms_key``)."""
    force_destroy: bool = False
    """Let ``pulumi destroy`` delete a non-empty bucket (dev only)."""
    protect: bool = True
    """Protect the bucket from deletion and retain it if removed from the program (production)."""
    noncurrent_to_glacier_days: int = Field(default=30, ge=1)
    """Move noncurrent object versions to Glacier after this many days."""
    noncurrent_expire_days: int = Field(default=365, ge=1)
    """Delete noncurrent object versions after this many days (more than ``noncurrent_to_glacier_days``)."""
    abort_multipart_days: int = Field(default=7, ge=1)
    """Abort incomplete multipart uploads after this many days."""

    @field_validator("bucket_name")
    @classmethod
    def _bucket_name(cls, value: Any) -> Any:
        if isinstance(value, str):  # an Output is checked when it resolves (ArtifactStore)
            check_bucket_name(value)
        return value

    @model_validator(mode="after")
    def _order(self) -> Self:
        if self.noncurrent_expire_days <= self.noncurrent_to_glacier_days:
            raise ValueError(
                f"noncurrentExpireDays ({self.noncurrent_expire_days}) must be greater than "
                f"noncurrentToGlacierDays ({self.noncurrent_to_glacier_days})"
            )
        if self.force_destroy and self.protect:
            raise ValueError("forceDestroy=true contradicts protect=true; a protected bucket is never emptied")
        return self


class ArtifactStoreArgs(ArtifactStoreSpec):
    """Arguments of :class:`ArtifactStore`: its settings (:class:`ArtifactStoreSpec`) and the grants."""

    grants: list[InstanceOf[BucketGrant]] = []
    """Roles given access to one prefix each (:class:`BucketGrant`); the store owns their policies.
    ``grant_read``/``grant_write`` do the same for a policy the caller owns."""

    @model_validator(mode="after")
    def _grants(self) -> Self:
        suffixes = [g.resource_name_suffix for g in self.grants]
        repeated = sorted({s for s in suffixes if suffixes.count(s) > 1})
        if repeated:
            raise ValueError(
                f"ArtifactStoreArgs.grants: {repeated} named more than once; each grant's name and "
                "kind (read/write) name its policy resource"
            )
        return self


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
    versions and aborts stale multipart uploads. ``ArtifactStoreArgs.grants`` (owned by the store) or
    ``grant_read``/``grant_write`` (owned by the caller) give a role access to one prefix only.
    """

    bucket_name: pulumi.Output[str]
    """The bucket's name."""
    bucket_arn: pulumi.Output[str]
    """The bucket's ARN."""
    kms_key_arn: pulumi.Output[str] | None
    """The KMS key that encrypts the bucket (the created or the given one); None with the AWS-managed ``aws/s3`` key."""

    def __init__(
        self,
        name: str,
        args: ArtifactStoreArgs | None = None,
        opts: pulumi.ResourceOptions | None = None,
        **kwargs: Any,
    ) -> None:
        args = component_args("ArtifactStore", ArtifactStoreArgs, args, kwargs)
        super().__init__("mlplat:storage:ArtifactStore", name, None, opts)
        self._prefix = name
        child = pulumi.ResourceOptions(parent=self)
        stateful = pulumi.ResourceOptions(parent=self, protect=args.protect, retain_on_delete=args.protect)

        self.kms_key_arn = None if args.kms_key_arn is None else pulumi.Output.from_input(args.kms_key_arn)
        if args.kms_key_arn is None and args.create_kms_key:
            key = rotated_key(f"{name}-key", f"Encrypts the {name} artifact bucket", stateful)
            aws.kms.Alias(f"{name}-key", name_prefix=f"alias/{name}-", target_key_id=key.key_id, opts=child)
            self.kms_key_arn = key.arn

        self.bucket = aws.s3.Bucket(
            name,
            bucket=None if args.bucket_name is None else checked_when_known(args.bucket_name, check_bucket_name),
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

        self.bucket_name = self.bucket.bucket
        self.bucket_arn = self.bucket.arn
        for grant in args.grants:
            self._grant(grant.role_name, grant.prefix, grant.write, grant.name, child)
        self.register_outputs(
            {"bucket_name": self.bucket_name, "bucket_arn": self.bucket_arn, "kms_key_arn": self.kms_key_arn}
        )

    def uri(self, prefix: str = "") -> pulumi.Output[str]:
        """``s3://<bucket>/<prefix>``."""
        return pulumi.Output.concat("s3://", self.bucket_name, "/", prefix.strip("/"))

    def _grant(
        self, role_name: pulumi.Input[str], prefix: str, write: bool, name: str, opts: pulumi.ResourceOptions
    ) -> aws.iam.RolePolicy:
        kind = "write" if write else "read"
        return aws.iam.RolePolicy(
            f"{self._prefix}-{kind}-{name}",
            role=role_name,
            policy=policy_document(
                bucket_access_statements(self.bucket_arn, prefix, write=write, kms_key_arn=self.kms_key_arn)
            ),
            opts=opts,
        )

    def _caller_owned(self, opts: pulumi.ResourceOptions | None) -> pulumi.ResourceOptions:
        """The caller's options, and an alias to the store as parent: these policies were the store's children
        before the caller owned them. Without a parent or provider in ``opts``, the store's AWS provider."""
        inherits = opts is not None and (opts.parent is not None or opts.provider is not None or opts.providers)
        own = pulumi.ResourceOptions(
            provider=None if inherits else self.get_provider("aws::"), aliases=[pulumi.Alias(parent=self)]
        )
        return pulumi.ResourceOptions.merge(own, opts)

    def grant_read(
        self, role_name: pulumi.Input[str], *, prefix: str = "", name: str, opts: pulumi.ResourceOptions | None = None
    ) -> aws.iam.RolePolicy:
        """Let the role named ``role_name`` read objects under ``prefix`` (and list that prefix only).

        The policy (``<store>-read-<name>``) belongs to the caller and is created with ``opts`` (give ``parent=``
        your component); ``ArtifactStoreArgs.grants`` declares the same grant owned by the store.
        """
        return self._grant(role_name, prefix, False, name, self._caller_owned(opts))

    def grant_write(
        self, role_name: pulumi.Input[str], *, prefix: str = "", name: str, opts: pulumi.ResourceOptions | None = None
    ) -> aws.iam.RolePolicy:
        """Let the role named ``role_name`` read and write objects under ``prefix``; as :meth:`grant_read`."""
        return self._grant(role_name, prefix, True, name, self._caller_owned(opts))
