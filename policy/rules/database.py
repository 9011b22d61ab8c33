"""RDS: instances and clusters encrypted, private, backed up for a week, multi-AZ and deletion-protected."""

from __future__ import annotations

from collections.abc import Iterator

from mlplat.policy.framework import MANDATORY, STRICTER_IN_PRODUCTION, Resource, ResourceRule, Rule, Violation, is_true

MIN_BACKUP_RETENTION_DAYS = 7

RDS_INSTANCE = "aws:rds/instance:Instance"
RDS_CLUSTER = "aws:rds/cluster:Cluster"
RDS_TYPES = frozenset({RDS_INSTANCE, RDS_CLUSTER})


def rds_encrypted(res: Resource) -> Iterator[Violation]:
    """Storage encryption on."""
    if not is_true(res.inputs.get("storageEncrypted")):
        yield Violation("storage is not encrypted", "set storageEncrypted=true (and kmsKeyId for a customer key)")


def rds_not_public(res: Resource) -> Iterator[Violation]:
    """No public endpoint."""
    if is_true(res.inputs.get("publiclyAccessible")):
        yield Violation(
            "the database has a public endpoint", "set publiclyAccessible=false and reach it from inside the VPC"
        )


def rds_backups_retained(res: Resource) -> Iterator[Violation]:
    """Automated backups kept for at least a week."""
    days = res.inputs.get("backupRetentionPeriod")
    # AWS defaults to 1 day for instances and clusters alike when unset.
    if not isinstance(days, int | float) or days < MIN_BACKUP_RETENTION_DAYS:
        shown = "unset (AWS default: 1 day)" if days is None else f"{days} day(s)"
        yield Violation(
            f"backup retention is {shown}", f"set backupRetentionPeriod to at least {MIN_BACKUP_RETENTION_DAYS}"
        )


def rds_multi_az(res: Resource) -> Iterator[Violation]:
    """A standby in another AZ."""
    if not is_true(res.inputs.get("multiAz")):
        yield Violation("the instance has no standby in a second availability zone", "set multiAz=true")


def rds_deletion_protection(res: Resource) -> Iterator[Violation]:
    """Deletion protection on."""
    if not is_true(res.inputs.get("deletionProtection")):
        yield Violation("deletion protection is off", "set deletionProtection=true")


RULES: tuple[Rule, ...] = (
    ResourceRule("rds-encrypted", "RDS storage is encrypted", MANDATORY, RDS_TYPES, rds_encrypted),
    ResourceRule("rds-not-public", "RDS has no public endpoint", MANDATORY, RDS_TYPES, rds_not_public),
    ResourceRule(
        "rds-backup-retention",
        f"RDS keeps backups >= {MIN_BACKUP_RETENTION_DAYS} days",
        MANDATORY,
        RDS_TYPES,
        rds_backups_retained,
    ),
    ResourceRule(
        "rds-multi-az",
        "RDS instances are multi-AZ (mandatory in production)",
        STRICTER_IN_PRODUCTION,
        frozenset({RDS_INSTANCE}),
        rds_multi_az,
    ),
    ResourceRule(
        "rds-deletion-protection",
        "RDS has deletion protection (mandatory in production)",
        STRICTER_IN_PRODUCTION,
        RDS_TYPES,
        rds_deletion_protection,
    ),
)
"""The RDS rules."""
