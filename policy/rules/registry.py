"""ECR: images scanned on push, tags immutable."""

from __future__ import annotations

from collections.abc import Iterator

from mlplat.policy.framework import MANDATORY, Resource, ResourceRule, Rule, Violation, get, is_true

ECR_REPOSITORY = "aws:ecr/repository:Repository"


def ecr_scan_on_push(res: Resource) -> Iterator[Violation]:
    """Images scanned for CVEs when pushed."""
    if not is_true(get(res.inputs, "imageScanningConfiguration", "scanOnPush")):
        yield Violation("images are not scanned on push", "set imageScanningConfiguration.scanOnPush=true")


def ecr_immutable_tags(res: Resource) -> Iterator[Violation]:
    """A tag, once pushed, always names the same image."""
    if not str(res.inputs.get("imageTagMutability", "MUTABLE")).startswith("IMMUTABLE"):
        yield Violation("image tags can be overwritten", "set imageTagMutability='IMMUTABLE'")


RULES: tuple[Rule, ...] = (
    ResourceRule(
        "ecr-scan-on-push", "ECR scans images on push", MANDATORY, frozenset({ECR_REPOSITORY}), ecr_scan_on_push
    ),
    ResourceRule(
        "ecr-immutable-tags", "ECR tags are immutable", MANDATORY, frozenset({ECR_REPOSITORY}), ecr_immutable_tags
    ),
)
"""The ECR rules."""
